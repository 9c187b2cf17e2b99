#!/usr/bin/env python
"""Your own interaction log in, recommendations out, from Python.

    python examples/own_data.py mylog.csv                 # any CSV / TSV / Parquet / RecBole file
    python examples/own_data.py --demo                    # a made-up click log with string ids

Columns are detected from the usual names (user_id / item_id / timestamp ...); pass --user/--item/--time to name
them. The data is written to <out>/data, the run to <out>/run (out: --out, default own_data_run/).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without `pip install .`

import bert4rec as br  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "bert_train" / "sasrec_config_ml-1m.json"


def demo_log(path: Path, users: int = 600, items: int = 300, seed: int = 0) -> Path:
    """Users walking a hidden chain of SKUs (with random jumps): a pattern SASRec learns in a few hundred steps."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    chain = rng.permutation(items)
    rows = []
    for user in range(users):
        item, t = int(rng.integers(items)), 1_700_000_000 + int(rng.integers(10**6))
        for _ in range(int(rng.integers(8, 30))):
            rows.append((f"customer-{user:05d}", f"SKU-{item:04d}", t))
            item = int(chain[item]) if rng.random() < 0.85 else int(rng.integers(items))
            t += int(rng.integers(60, 86400))
    pd.DataFrame(rows, columns=["customer_id", "sku", "event_time"]).to_csv(path, index=False)
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("log", nargs="?", type=Path, help="the interaction file")
    p.add_argument("--demo", action="store_true", help="make and use a demo log instead")
    p.add_argument("--user", help="user id column")
    p.add_argument("--item", help="item id column")
    p.add_argument("--time", help="time column")
    p.add_argument("--steps", type=int, default=1000, help="training steps (default: %(default)s)")
    p.add_argument("--out", type=Path, default=Path("own_data_run"), help="output folder")
    args = p.parse_args()
    if (args.log is None) == (not args.demo):
        p.error("give a log file or --demo")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.demo:
        args.log = demo_log(args.out / "demo_log.csv")
        args.user, args.item, args.time = "customer_id", "sku", "event_time"
    try:
        data = br.Dataset.from_file(args.log, user=args.user, item=args.item, time=args.time,
                                    max_seq_length=50, min_item_count=2).save(args.out / "data", progress=False)
        run = br.fit(data, config=CONFIG, checkpoints=args.out / "run", num_train_steps=args.steps,
                     eval_every=max(1, args.steps // 4), max_len=50, progress=False)
    except br.UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    test = run.results["test"]["full"]
    print(f"test FULL NDCG@10 {test['NDCG@10']:.4f}, HR@10 {test['HR@10']:.4f} "
          f"({run.results['num_eval_users']:,} users, all items ranked)")
    users = run.trained.catalogue().user_original[1:3]  # the first two users of the data
    print(run.recommend(users=users, k=3).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
