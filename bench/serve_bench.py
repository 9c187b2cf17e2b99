#!/usr/bin/env python
"""Serving speed of an exported model (Paddle Inference) next to the training-time (dygraph) model, one run.

    python export.py --CHECKPOINTS results/ml-1m_sasrec_ce_30min --output /tmp/exported --DATA_DIR data/ml-1m
    python bench/serve_bench.py --CHECKPOINTS results/ml-1m_sasrec_ce_30min --exported /tmp/exported

Single-request latency (one user's whole history in, top-k out; p50 and p99 over ``--requests`` users) and
batch throughput (users per second at ``--batch`` users per request, every test user once), both for the
predictor and for the dygraph model doing the same work (its ``predict`` plus the same top-k and exclusion).
Histories are the real test histories of the run's data; the CPU is named in the output.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bert4rec  # noqa: E402,F401  (CPU settings before Paddle loads)
from bert4rec.errors import run_cli  # noqa: E402


def timed(fn, items) -> list[float]:
    out = []
    for x in items:
        start = time.perf_counter()
        fn(x)
        out.append(time.perf_counter() - start)
    return out


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--CHECKPOINTS", dest="run", type=Path, required=True, help="the run that was exported")
    p.add_argument("--exported", type=Path, required=True, help="the export.py output folder")
    p.add_argument("--DATA_DIR", dest="data_dir", type=Path, help="the run's data, if it moved")
    p.add_argument("--requests", type=int, default=500, help="single requests timed (default 500)")
    p.add_argument("--batch", type=int, default=256, help="users per request in the throughput test")
    p.add_argument("--out", type=Path, help="also write the numbers to this JSON file")
    args = p.parse_args()
    from bert4rec.cpu import describe_machine, import_paddle

    paddle = import_paddle()
    from bert4rec.export import Predictor
    from bert4rec.trained import load_run, top_k

    run = load_run(args.run, args.data_dir)
    predictor = Predictor(args.exported, threads=describe_machine()["cores"])
    k = predictor.meta["k"]
    test = run.test_set()
    histories = [list(test.user_history(i)) for i in range(len(test))]
    rng = np.random.default_rng(0)
    singles = [histories[i] for i in rng.choice(len(histories), size=min(args.requests, len(histories)),
                                                replace=False)]
    batches = [histories[i: i + args.batch] for i in range(0, len(histories), args.batch)]

    def dygraph(hs):
        return top_k(run.model.predict(hs), hs, k)

    def served(hs):
        return predictor.recommend(hs)

    for fn in (dygraph, served):  # warm both (kernels, MKL, allocator)
        fn(singles[:1])
        fn(batches[0])
    result = {"machine": describe_machine(), "paddle": paddle.__version__, "model": run.results.get("model"),
              "k": k, "users": len(histories), "batch": args.batch, "requests": len(singles)}
    for name, fn in (("dygraph", dygraph), ("predictor", served)):
        single = timed(fn, [[h] for h in singles])
        whole = timed(fn, batches)
        result[name] = {"latency_ms_p50": round(percentile(single, 50), 2),
                        "latency_ms_p99": round(percentile(single, 99), 2),
                        "latency_ms_mean": round(statistics.mean(single) * 1000, 2),
                        "users_per_s": round(len(histories) / sum(whole), 1)}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    run_cli(main)
