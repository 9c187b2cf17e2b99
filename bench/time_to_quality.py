#!/usr/bin/env python
"""Time to quality of a finished (or running) training run, read from its event log.

    python bench/time_to_quality.py checkpoints/bert_config_ml-1m_64 [--threshold 0.15]

Prints the training wall time at which validation FULL NDCG@10 first reached the threshold, the best
validation point, and the run's test metrics (scored once, with the checkpoint selected on validation).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bert4rec.errors import UserError, run_cli  # noqa: E402


def first_reaching(events: list[dict], threshold: float) -> dict | None:
    """The first validation event whose FULL NDCG@10 is at least ``threshold``."""
    for event in events:
        if event.get("event") == "valid" and "full" in event and event["full"]["NDCG@10"] >= threshold:
            return event
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="the --CHECKPOINTS directory of a run")
    parser.add_argument("--threshold", type=float, default=0.15, help="validation FULL NDCG@10 to reach")
    args = parser.parse_args()
    log = args.run_dir / "events.jsonl"
    if not log.is_file():
        raise UserError(f"{log}: no event log (is {args.run_dir} a --CHECKPOINTS directory?)")
    events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    valid = [e for e in events if e.get("event") == "valid" and "full" in e]
    if not valid:
        raise UserError(f"{log}: no validation events yet")
    hit = first_reaching(events, args.threshold)
    best = max(valid, key=lambda e: e["full"]["NDCG@10"])
    if hit:
        print(f"validation FULL NDCG@10 >= {args.threshold}: first at step {hit['step']}, "
              f"{hit['minutes']:.1f} min of training ({hit['full']['NDCG@10']:.4f})")
    else:
        print(f"validation FULL NDCG@10 never reached {args.threshold} "
              f"(last: step {valid[-1]['step']}, {valid[-1]['minutes']:.1f} min)")
    print(f"best validation: step {best['step']}, {best['minutes']:.1f} min, FULL NDCG@10 "
          f"{best['full']['NDCG@10']:.4f}, HR@10 {best['full']['HR@10']:.4f}; POP100 HR@10 "
          f"{best['pop100']['HR@10']:.4f}")
    results = args.run_dir / "results.json"
    if results.is_file():
        res = json.loads(results.read_text())
        test = res["test"]
        print(f"test (step {res['best_step']}): FULL NDCG@10 {test['full']['NDCG@10']:.4f} HR@10 "
              f"{test['full']['HR@10']:.4f} | POP100 HR@10 {test['pop100']['HR@10']:.4f} NDCG@10 "
              f"{test['pop100']['NDCG@10']:.4f} MRR {test['pop100']['MRR']:.4f}; training "
              f"{res['train_seconds'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    run_cli(main)
