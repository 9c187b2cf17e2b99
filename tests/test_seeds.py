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


def _fake_run(run_dir: Path, curve: dict[int, float], resumed_at: tuple[int, float] | None = None) -> None:
    """A finished seed as trainrec.py leaves it: results.json plus the validation events of its curve."""
    run_dir.mkdir(parents=True)
    test = {"full": {"NDCG@10": 0.1}, "pop100": {"NDCG@10": 0.4}}
    (run_dir / "results.json").write_text(json.dumps({"train_seconds": 60, "steps": max(curve), "best_step":
                                                      max(curve), "valid": test, "test": test, "options": {}}))
    events = [{"event": "train", "step": s, "loss": 5.0} for s in curve]
    events += [{"event": "valid", "step": s, "full": {"NDCG@10": v}} for s, v in curve.items()]
    if resumed_at:
        events.append({"event": "valid", "step": resumed_at[0], "full": {"NDCG@10": resumed_at[1]}})
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))


def test_validation_is_compared_at_the_steps_every_seed_reached(tmp_path):
    out = tmp_path / "recipe"
    _fake_run(out / "seed-1", {500: 0.10, 1000: 0.14, 1200: 0.15})
    _fake_run(out / "seed-2", {500: 0.12, 1000: 0.16, 1500: 0.17}, resumed_at=(1000, 0.18))
    proc = seeds_cli("--out", str(out), "--seeds", "1,2", "--no-train", "--", "--EPOCHS", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    by_step = json.loads((out / "summary.json").read_text())["summary"]["valid_full_ndcg10_by_step"]
    assert list(by_step) == ["500", "1000"]  # 1,200 and 1,500 were reached by one seed only
    assert math.isclose(by_step["500"]["mean"], 0.11) and math.isclose(by_step["1000"]["mean"], 0.16)
    assert math.isclose(by_step["1000"]["sd"], 0.04 / math.sqrt(2))  # seed 2's re-evaluation after resuming counts
    assert "| 1,000 | 0.1600 ± 0.0283 | 0.1400 | 0.1800 |" in (out / "summary.md").read_text()
