"""bench/seeds.py: one recipe over several seeds, finished seeds reused, mean ± sd computed from the runs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from conftest import tiny_config

REPO = Path(__file__).resolve().parents[1]


def seeds_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "bench" / "seeds.py"), *args], capture_output=True, text=True,
                          timeout=600)


def one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert all(n in lines[0] for n in needles), lines[0]


def test_seeds_are_trained_once_each_and_summarised_from_their_results(planted, tmp_path):
    root, data_dir = planted
    config = tiny_config(tmp_path / "sasrec.json", model="SASRec", loss="ce")
    flags = ["--DATA_DIR", str(data_dir), "--CONFIG_PATH", str(config), "--NUM_TRAIN_STEPS", "20", "--EVAL_EVERY",
             "10", "--BATCH_SIZE", "64", "--MAX_LEN", "50", "--no-progress"]
    out = tmp_path / "recipe"
    proc = seeds_cli("--out", str(out), "--seeds", "1,2", "--", *flags)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {s: json.loads((out / f"seed-{s}" / "results.json").read_text()) for s in (1, 2)}
    assert [results[s]["options"]["seed"] for s in (1, 2)] == [1, 2]
    a, b = (results[s]["test"]["full"]["NDCG@10"] for s in (1, 2))
    assert a != b, "two seeds gave the same run"
    summary = json.loads((out / "summary.json").read_text())["summary"]
    stat = summary["test_full"]["NDCG@10"]
    assert math.isclose(stat["mean"], (a + b) / 2) and math.isclose(stat["sd"], abs(a - b) / math.sqrt(2))
    minutes = [results[s]["train_seconds"] / 60 for s in (1, 2)]
    assert math.isclose(summary["train_minutes"]["mean"], sum(minutes) / 2)
    assert "| test FULL NDCG@10 |" in (out / "summary.md").read_text()
    command = json.loads((out / "summary.json").read_text())["command"]
    assert command[:5] == ["bench/seeds.py", "--out", str(out), "--seeds", "1,2"] and command[6:] == flags

    stamp = (out / "seed-1" / "results.json").stat().st_mtime_ns
    again = seeds_cli("--out", str(out), "--seeds", "1,2,3", "--no-train", "--", *flags)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (out / "seed-1" / "results.json").stat().st_mtime_ns == stamp and not (out / "seed-3").exists()
    assert json.loads((out / "summary.json").read_text())["summary"]["seeds"] == [1, 2]

    other = [*flags[:-1], "--LR_RATE", "0.01", "--no-progress"]
    one_error_line(seeds_cli("--out", str(out), "--seeds", "1", "--", *other), "seed-1", "lr")


def test_flags_the_script_owns_or_trainrec_lacks_are_refused_before_training(tmp_path):
    one_error_line(seeds_cli("--out", str(tmp_path / "x"), "--", "--SEED", "4"), "--SEED", "--seeds")
    one_error_line(seeds_cli("--out", str(tmp_path / "x"), "--", "--NO_SUCH_FLAG", "1"), "NO_SUCH_FLAG")
    one_error_line(seeds_cli("--out", str(tmp_path / "x"), "--seeds", "1,1", "--", "--EPOCHS", "1"), "--seeds")
    one_error_line(seeds_cli("--out", str(tmp_path / "x")), "--")
    assert not (tmp_path / "x").exists()
