#!/usr/bin/env python
"""Test metrics of finished runs on all users and on the users whose test item is among the least popular
items (where item features should help most): FULL NDCG@10 and HR@10, from each run's saved checkpoint.

    python bench/tail_items.py results/ml-1m_sasrec_ce_30min results/ml-1m_sasrecf_30min [--share 0.2]

"Least popular": the ``--share`` (20 %) of items with the fewest training interactions (the training part only:
the histories before each user's first held-out item), ties broken by item id; a user counts when their test
target is one of them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bert4rec  # noqa: E402,F401  (CPU settings before Paddle loads)
from bert4rec.errors import UserError, run_cli  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--share", type=float, default=0.2, help="the least popular share of items (default 0.2)")
    p.add_argument("--DATA_DIR", dest="data_dir", type=Path, help="the runs' data, if it moved")
    args = p.parse_args()
    if not 0 < args.share <= 1:
        raise UserError(f"--share must be in (0, 1], got {args.share}")
    from bert4rec.cpu import import_paddle

    import_paddle()
    from bert4rec.evaluate import rank_targets
    from bert4rec.metrics import metrics_from_ranks
    from bert4rec.trained import load_run

    for path in args.runs:
        run = load_run(path, args.data_dir)
        data = run.training_data()
        counts = data.training_item_counts()[1:]
        tail = np.zeros(len(counts) + 1, dtype=bool)
        tail[np.lexsort((np.arange(len(counts)), counts))[: int(round(args.share * len(counts)))] + 1] = True
        test = data.test
        histories = [test.user_history(i) for i in range(len(test))]
        ranks, _ = rank_targets(run.model.predict, histories, test.targets, None, data.num_items)
        in_tail = tail[test.targets]
        for name, mask in (("all users", np.ones(len(ranks), dtype=bool)), (f"tail {args.share:.0%}", in_tail)):
            m = metrics_from_ranks(ranks[mask], ("NDCG@10", "HR@10"))
            print(f"{path.name:<34} {run.results['model']:<8} {name:<10} users {int(mask.sum()):>5}  "
                  f"FULL NDCG@10 {m['NDCG@10']:.4f}  HR@10 {m['HR@10']:.4f}")
    return 0


if __name__ == "__main__":
    run_cli(main)
