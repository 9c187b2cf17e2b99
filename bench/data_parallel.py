#!/usr/bin/env python
"""One training run in one process and the same run data-parallel in N processes (``paddle.distributed.launch``,
what ``./train.sh -local n`` starts): their loss curves, test metrics and per-process peak memory side by side.

    python bench/data_parallel.py --DATA_DIR /tmp/bert4rec-scale/ml20m/data --steps 120 --out results/bench/dp.json

Both runs use the same flags (SASRec ``sampled_ce`` by default, no validation set, ``--steps`` steps, then the one
test over every user); the global batch is the same, split across the processes. Peak RSS is read from
``/proc/<pid>/status`` (VmHWM) of every training process while it runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rss_peaks(proc: subprocess.Popen, script: str) -> dict[int, float]:
    """Peak RSS (MB) of every process running ``script`` until ``proc`` ends (polled every second)."""
    peaks: dict[int, float] = {}
    while proc.poll() is None:
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                cmdline = status.with_name("cmdline").read_bytes().decode(errors="replace")
                if script not in cmdline or "paddle.distributed.launch" in cmdline:
                    continue
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peaks[int(status.parent.name)] = max(peaks.get(int(status.parent.name), 0.0),
                                                             int(line.split()[1]) / 1024)
            except OSError:
                continue
        time.sleep(1.0)
    return peaks


def run(processes: int, args, out_dir: Path) -> dict:
    flags = ["--DATA_DIR", str(args.data_dir), "--VALIDATION_DATA_DIR", "none", "--CONFIG_PATH",
             str(REPO / "bert_train" / "sasrec_config_ml-1m.json"), "--SET", f"loss={args.loss}",
             "--NUM_TRAIN_STEPS", str(args.steps), "--EVAL_EVERY", str(args.steps), "--CHECKPOINTS", str(out_dir),
             "--no-progress"]
    command = [sys.executable, str(REPO / "trainrec.py"), *flags]
    if processes > 1:
        command = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(processes),
                   "--log_dir", str(out_dir.with_name(out_dir.name + "_log")), str(REPO / "trainrec.py"), *flags]
    shutil.rmtree(out_dir, ignore_errors=True)  # this script's own work folder
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peaks = rss_peaks(proc, "trainrec.py")
    if proc.wait() != 0:
        raise SystemExit(f"error: the {processes}-process run failed:\n{proc.stderr.read()[-3000:]}")
    results = json.loads((out_dir / "results.json").read_text())
    losses = [e["loss"] for e in map(json.loads, (out_dir / "events.jsonl").read_text().splitlines())
              if e["event"] == "train"]
    return {"processes": processes, "wall_seconds": round(time.perf_counter() - started, 1),
            "train_seconds": results["train_seconds"], "sequences_seen": results["sequences_seen"],
            "loss_every_10_steps": [round(x, 4) for x in losses], "test": results["test"],
            "peak_rss_mb_per_process": sorted(round(v, 1) for v in peaks.values())}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--DATA_DIR", dest="data_dir", type=Path, required=True)
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--loss", default="sampled_ce")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--work", type=Path, default=Path("/tmp/bert4rec-dp"))
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    sys.path.insert(0, str(REPO))
    from bert4rec.cpu import describe_machine

    args.work.mkdir(parents=True, exist_ok=True)
    rows = [run(n, args, args.work / f"run_{n}") for n in (1, args.processes)]
    report = {"machine": describe_machine(), "data": str(args.data_dir), "steps": args.steps, "loss": args.loss,
              "runs": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
