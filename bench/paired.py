#!/usr/bin/env python
"""Two finished runs compared user by user on the same evaluation targets: the mean difference of a metric and
its standard error.

    python bench/paired.py <run A> <run B> [--split test] [--metrics NDCG@10,HR@10]

Seeds tell how much a recipe moves with its random draws; they say nothing of how much a difference between two
models owes to which 6,040 users happen to be evaluated. Scoring both models on the same users and targets and
taking the per-user differences answers that: the mean difference (B - A), its standard error (sd of the
differences / sqrt(users)), a 95 % interval (± 1.96 standard errors) and how many users each model served better.

Both runs are re-scored from their checkpoints (``best.pdparams``, else ``last.pdparams``) through the one
evaluation module; each run's recomputed metric must equal its ``results.json`` (else the data folder is not the
one it was trained on, and the command stops). The two evaluation sets must hold the same users, targets and
histories (and, for POP100, the same negatives); they may come from different data folders (e.g. data generated
with ``--holdout test`` against ``--holdout valid_test`` from the same file), which ``--data_a``/``--data_b`` name
when the runs' recorded folders have moved.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import bert4rec  # noqa: E402,F401  (CPU settings before Paddle loads)
from bert4rec.errors import UserError, run_cli  # noqa: E402
from bert4rec.metrics import FULL_METRICS, POP100_METRICS, metric_values  # noqa: E402

RECORDED_TOLERANCE = 1e-4


def paired_difference(a: np.ndarray, b: np.ndarray) -> dict:
    """Mean of ``b - a`` over users with its standard error and 95 % interval, and the users each side won."""
    diff = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    n = len(diff)
    se = float(np.std(diff, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    mean = float(diff.mean())
    return {"users": n, "mean_a": float(np.mean(a)), "mean_b": float(np.mean(b)), "difference": mean,
            "standard_error": se, "ci95": [mean - 1.96 * se, mean + 1.96 * se],
            "b_better": int((diff > 0).sum()), "a_better": int((diff < 0).sum()), "equal": int((diff == 0).sum())}


def evaluation_set(run, split: str):
    data = run.training_data()
    if split == "valid" and not data.has_validation:
        raise UserError(f"{run.path}: its data has no validation set (made with --holdout test); use --split test")
    return data.valid if split == "valid" else data.test


def same_targets(a, b, protocol: str) -> str | None:
    """What differs between two evaluation sets, or None when they hold the same users, targets and histories."""
    for name in ("users", "targets", "history_offsets", "history") + (("negatives",) if protocol == "pop100" else ()):
        if not np.array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name))):
            return name
    return None


def user_ranks(run, eval_set, protocol: str) -> np.ndarray:
    from bert4rec.evaluate import rank_targets

    histories = [eval_set.history[s:e] for s, e in zip(eval_set.history_offsets[:-1], eval_set.history_offsets[1:],
                                                         strict=True)]
    negatives = np.asarray(eval_set.negatives) if protocol == "pop100" else None
    full, pop = rank_targets(run.model.predict, histories, np.asarray(eval_set.targets), negatives,
                             run.vocab.num_items, full_ranking=protocol == "full")
    return full if protocol == "full" else pop


def check_recorded(run, split: str, protocol: str, metric: str, value: float) -> None:
    recorded = ((run.results.get(split) or {}).get(protocol) or {}).get(metric)
    if recorded is not None and abs(recorded - value) > RECORDED_TOLERANCE:
        raise UserError(f"{run.path}: {split} {protocol.upper()} {metric} recomputes to {value:.4f}, results.json "
                        f"says {recorded:.4f}: not the data it was trained on (give its folder with --data_a/--data_b)")


def compare(run_a, run_b, split: str, protocol: str, metrics: list[str]) -> dict:
    if run_a.vocab.original_ids != run_b.vocab.original_ids:
        raise UserError(f"{run_a.path} and {run_b.path}: their item vocabularies differ; a paired comparison needs "
                        "the same items")
    sets = [evaluation_set(run, split) for run in (run_a, run_b)]
    differs = same_targets(*sets, protocol)
    if differs:
        raise UserError(f"{run_a.path} and {run_b.path}: their {split} sets differ in {differs}; a paired "
                        "comparison needs the same users and targets")
    ranks = [user_ranks(run, eval_set, protocol) for run, eval_set in zip((run_a, run_b), sets, strict=True)]
    out = {}
    for metric in metrics:
        values = [metric_values(r, metric) for r in ranks]
        for run, v in zip((run_a, run_b), values, strict=True):
            check_recorded(run, split, protocol, metric, float(v.mean()))
        out[metric] = paired_difference(*values)
    return out


def table(result: dict, names: tuple[str, str]) -> str:
    lines = [f"A = {names[0]}", f"B = {names[1]}", "",
             "| metric | A | B | B - A | standard error | 95 % interval | users B better / A better / equal |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for metric, d in result["metrics"].items():
        lines.append(f"| {result['split']} {result['protocol'].upper()} {metric} | {d['mean_a']:.4f} | "
                     f"{d['mean_b']:.4f} | {d['difference']:+.4f} | {d['standard_error']:.4f} | "
                     f"[{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}] | {d['b_better']:,} / {d['a_better']:,} / "
                     f"{d['equal']:,} |")
    return "\n".join(lines) + "\n"


def parse_metrics(text: str, protocol: str) -> list[str]:
    known = FULL_METRICS if protocol == "full" else POP100_METRICS
    metrics = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in metrics if m not in known]
    if not metrics or unknown:
        raise UserError(f"--metrics {text!r}: expected some of {', '.join(known)}")
    return metrics


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_a", type=Path)
    p.add_argument("run_b", type=Path)
    p.add_argument("--split", choices=("test", "valid"), default="test")
    p.add_argument("--protocol", choices=("full", "pop100"), default="full")
    p.add_argument("--metrics", default="NDCG@10,HR@10", help="comma-separated (default: NDCG@10,HR@10)")
    p.add_argument("--data_a", type=Path, help="run A's data folder, when not where it was trained")
    p.add_argument("--data_b", type=Path, help="run B's data folder, when not where it was trained")
    p.add_argument("--json", type=Path, help="also write the result here")
    args = p.parse_args(argv)
    metrics = parse_metrics(args.metrics, args.protocol)
    from bert4rec.cpu import import_paddle

    import_paddle()
    from bert4rec.trained import load_run

    runs = [load_run(args.run_a, args.data_a), load_run(args.run_b, args.data_b)]
    result = {"split": args.split, "protocol": args.protocol, "run_a": str(args.run_a), "run_b": str(args.run_b),
              "metrics": compare(*runs, args.split, args.protocol, metrics)}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result, (str(args.run_a), str(args.run_b))), end="")
    return 0


if __name__ == "__main__":
    run_cli(main)
