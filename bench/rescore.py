#!/usr/bin/env python
"""Recompute a run's validation and test metrics from its saved checkpoint and compare them with its
results.json: every number of a results table can be checked without training again.

    python bench/rescore.py results/ml-1m_sasrec_ce_30min --DATA_DIR data/ml-1m
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bert4rec  # noqa: E402,F401  (CPU settings before Paddle loads)
from bert4rec.errors import UserError, run_cli  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a run folder with results.json and best.pdparams (or last.pdparams)")
    p.add_argument("--DATA_DIR", "--data_dir", dest="data_dir", type=Path, help="the data the run was trained on")
    args = p.parse_args()
    from bert4rec.cpu import import_paddle

    import_paddle()
    from bert4rec.data.dataset import protocol_metrics
    from bert4rec.trained import load_run

    run = load_run(args.run, args.data_dir)
    data = run.training_data()
    worst = 0.0
    for split in ("valid", "test") if data.has_validation else ("test",):
        recorded = run.results[split]
        metrics = protocol_metrics(data.evaluate(run.model, split, 256))
        for protocol, values in metrics.items():
            for name, value in values.items():
                if name in recorded.get(protocol, {}):
                    worst = max(worst, abs(value - recorded[protocol][name]))
        print(f"{split}: " + json.dumps(metrics))
    print(f"largest difference from {args.run / 'results.json'}: {worst:.2e} ({run.checkpoint.name})")
    if worst > 1e-4:
        raise UserError(f"{args.run}: the recomputed metrics differ from results.json by up to {worst:.4f}")
    return 0


if __name__ == "__main__":
    run_cli(main)
