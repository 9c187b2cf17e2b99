"""bench/bench.py: its pure helpers, the batch sample, and its user errors (no Paddle, no training)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH = REPO_ROOT / "bench" / "bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_under_test", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def samples(bench):
    import samples  # bench/samples.py (bench.py puts bench/ on sys.path)

    return samples


def test_stratified_spreads_evenly(samples):
    assert samples.stratified(10, 5).tolist() == [1, 3, 5, 7, 9]
    assert samples.stratified(7, 7).tolist() == list(range(7))
    assert samples.stratified(441, 1).tolist() == [220]
    picks = samples.stratified(441, 40)
    assert len(set(picks.tolist())) == 40 and picks.min() >= 0 and picks.max() < 441
    with pytest.raises(ValueError):
        samples.stratified(3, 4)


def test_worker_env_naive_gets_paddle_defaults(bench):
    base = {"PATH": "/bin", "OMP_NUM_THREADS": "2", "MKL_DEBUG_CPU_TYPE": "5", "BERT4REC_FUSED": "0"}
    naive = bench.worker_env("naive", base)
    assert "OMP_NUM_THREADS" not in naive and "MKL_DEBUG_CPU_TYPE" not in naive and "BERT4REC_FUSED" not in naive
    assert naive["BERT4REC_CPU_TUNING"] == "0" and naive["PATH"] == "/bin"
    ours = bench.worker_env("ours", base)
    assert ours["BERT4REC_CPU_TUNING"] == "1" and ours["BERT4REC_FUSED"] == "1"
    assert ours["OMP_NUM_THREADS"] == "2"  # a value the user set is kept, as the trainer keeps it
    assert base["OMP_NUM_THREADS"] == "2"  # not modified in place
    with pytest.raises(ValueError):
        bench.worker_env("other", base)


def test_jobs_round_trip(bench):
    jobs = {"ours_64": {"steps": 4, "warmup": 1, "batch": 256}, "eval": {"repeats": 3}}
    text = bench.format_jobs(jobs)
    assert text == "ours_64:steps=4:warmup=1:batch=256,eval:repeats=3"
    assert bench.parse_jobs(text) == jobs
    with pytest.raises(ValueError):
        bench.parse_jobs("ours_64:steps")


def test_parse_worker_output_skips_other_lines(bench):
    out = "\n".join(["Compiling user custom op", "{not json", '{"other": 1}',
                     json.dumps({bench.RESULT_KEY: "ours_64", "seq_per_s": 1.0}),
                     json.dumps({bench.RESULT_KEY: "eval", "full_seconds": 2.0}), ""])
    parsed = bench.parse_worker_output(out)
    assert set(parsed) == {"ours_64", "eval"} and parsed["eval"]["full_seconds"] == 2.0


def test_other_cores(bench):
    assert bench.other_cores((0.0, 10.0, 4.0), (2.0, 14.0, 5.0)) == 1.5  # 4 busy s, 1 ours, over 2 s
    assert bench.other_cores((0.0, 10.0, 4.0), (2.0, 11.0, 6.0)) == 0.0  # never negative
    assert bench.other_cores(None, (2.0, 11.0, 6.0)) is None
    snap = bench.cpu_snapshot()
    if snap is not None:  # Linux
        assert snap[1] >= 0 and snap[2] > 0


def test_parse_lscpu(bench):
    text = "Architecture:   x86_64\nModel name:     AMD EPYC 7B13\nFlags:   fpu avx avx2 avx512f\n"
    fields = bench.parse_lscpu(text)
    assert fields["Model name"] == "AMD EPYC 7B13" and "avx2" in fields["Flags"].split()


def _fake_result(bench, error: bool = False) -> dict:
    env_ours = {"OMP_NUM_THREADS": "2", "MKL_DEBUG_CPU_TYPE": "5"}
    jobs = {
        "ours_64": {"seq_per_s": 400.0, "masked_items_per_s": 10000.0, "steps": 40, "batch": 256, "fused": True,
                    "env": {}, "env_after_paddle_import": env_ours, "cpu_settings_applied": env_ours},
        "naive_64": {"seq_per_s": 20.0, "masked_items_per_s": 500.0, "steps": 8, "batch": 256,
                     "env": {}, "env_after_paddle_import": {"OMP_NUM_THREADS": "1"}},
        "ours_256": {"error": "child exited with status 1"} if error else
                    {"seq_per_s": 100.0, "masked_items_per_s": 2500.0, "steps": 20, "batch": 256, "fused": None,
                     "env": {"OMP_NUM_THREADS": "2"}, "env_after_paddle_import": env_ours,
                     "cpu_settings_applied": {"MKL_DEBUG_CPU_TYPE": "5"}},
        "naive_256": {"seq_per_s": 5.0, "masked_items_per_s": 120.0, "steps": 4, "batch": 256,
                      "env": {}, "env_after_paddle_import": {"OMP_NUM_THREADS": "1"}},
        "ours_sasrec": {"seq_per_s": 300.0, "masked_items_per_s": 30000.0, "steps": 30, "batch": 256,
                        "fused": True, "env": {}, "env_after_paddle_import": env_ours,
                        "cpu_settings_applied": env_ours},
        "naive_sasrec": {"seq_per_s": 7.5, "masked_items_per_s": 750.0, "steps": 4, "batch": 256,
                         "env": {}, "env_after_paddle_import": {"OMP_NUM_THREADS": "1"}},
        "ours_gru4rec": {"seq_per_s": 9000.0, "masked_items_per_s": 9000.0, "steps": 300, "batch": 256,
                         "fused": True, "env": {}, "env_after_paddle_import": env_ours,
                         "cpu_settings_applied": env_ours},
        "naive_gru4rec": {"seq_per_s": 3000.0, "masked_items_per_s": 3000.0, "steps": 300, "batch": 256,
                          "env": {}, "env_after_paddle_import": {"OMP_NUM_THREADS": "1"}},
        "eval": {"num_users": 6040, "repeats": 3, "full_seconds": 5.0, "pop100_seconds": 4.0},
    }
    seq = {k: jobs[k].get("seq_per_s") for k in bench.TRAIN_KEYS}
    return {
        "mode": "full", "date": "2026-01-01T00:00:00+00:00", "paddle_version": "3.3.1",
        "cpu": {"model_name": "AMD EPYC", "family": "25", "model": "1", "avx2": True, "avx512": [],
                "usable_cores": 2},
        "load_average": {"start": [0.1, 0.2, 0.3], "end": [1.0, 1.0, 1.0]},
        "gen_data_seconds": 3.5, "gen_data": {"seconds": 3.5},
        "train_seq_per_s": seq,
        "masked_items_per_s": {k: jobs[k].get("masked_items_per_s") for k in bench.TRAIN_KEYS},
        **{f"speedup_{m}": bench.ratio(seq[f"ours_{m}"], seq[f"naive_{m}"]) for m in bench.MODELS},
        "eval_full_seconds": 5.0, "eval_pop100_seconds": 4.0, "jobs": jobs,
    }


def test_results_table(bench):
    table = bench.results_table(_fake_result(bench))
    assert "speedup BERT4Rec 64" in table and "20.00x" in table and "AMD EPYC" in table
    assert "speedup SASRec ce" in table and "40.00x" in table
    assert "speedup GRU4Rec s-par" in table and "3.00x" in table
    assert "fused=on" in table and "fused=?" in table and "OMP_NUM_THREADS=1 (Paddle's default)" in table
    assert "OMP_NUM_THREADS=2 (bert4rec) MKL_DEBUG_CPU_TYPE=5 (bert4rec)" in table
    assert "OMP_NUM_THREADS=2 (user) MKL_DEBUG_CPU_TYPE=5 (bert4rec)" in table
    assert "MKL_DEBUG_CPU_TYPE=unset" in table
    assert "WARNING" not in table
    loaded = _fake_result(bench)
    loaded["other_processes_cores"], loaded["cpu"]["cpus"] = 1.2, 2
    assert "WARNING: the machine was shared (other processes used 1.20 of 2 cores)" in bench.results_table(loaded)
    failed = bench.results_table(_fake_result(bench, error=True))
    assert "FAILED: child exited with status 1" in failed
    assert bench.ratio(None, 3.0) is None and bench.ratio(4.0, 2.0) == 2.0


def _write_train(path: Path, n: int, rng: np.random.Generator) -> list[tuple[list[int], list[int], list[int]]]:
    rows = []
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            length = int(rng.integers(3, 200))
            ids = rng.integers(1, 50, size=length).tolist()
            pos = sorted(rng.choice(length, size=max(1, length // 5), replace=False).tolist())
            labels = rng.integers(1, 50, size=len(pos)).tolist()
            rows.append((ids, pos, labels))
            f.write(f"{i + 1}\t{' '.join(map(str, ids))}\t{' '.join(map(str, pos))}\t{' '.join(map(str, labels))}\n")
    return rows


def test_sample_matches_train_file_and_is_shared(samples, tmp_path):
    from bert4rec.batches import epoch_batches
    from bert4rec.data import load_train_instances
    from bert4rec.models.bert4rec import collate_masked

    rows = _write_train(tmp_path / "train.txt", 256 * 6 + 17, np.random.default_rng(0))
    info = samples.write_sample(tmp_path, tmp_path / "sample.npz", timed_batches=4, warmup=1)
    assert info["train_instances"] == len(rows) and info["epoch_batches"] == 7 and info["sample_batches"] == 4
    sample = samples.load_sample(tmp_path / "sample.npz")
    assert sample["timed"].shape == (4, 256) and sample["warmup"].shape == (1, 256)

    # the timed batches are batches of the trainer's epoch, and collate to the same arrays
    inst = load_train_instances(tmp_path / "train.txt")
    epoch = epoch_batches(inst.lengths, 256, np.random.default_rng([samples.SEED, 0]), bucket=True)
    epoch_sets = {frozenset(b.tolist()) for b in epoch}
    ids = sample["instance_ids"]
    for batch in [*sample["warmup"], *samples.sample_batches(sample, 4, naive=False)]:
        assert frozenset(ids[batch].tolist()) in epoch_sets
        mine = samples.masked_batch(sample, batch, None)
        theirs = collate_masked(inst, ids[batch])
        for field in ("input_ids", "flat_positions", "labels"):
            assert np.array_equal(getattr(mine, field), getattr(theirs, field))
    assert set(ids[sample["warmup"]].reshape(-1).tolist()).isdisjoint(ids[sample["timed"]].reshape(-1).tolist())

    # fewer steps: a subset of the same batches; naive: the same instances, reshuffled, padded to 200
    ours2 = samples.sample_batches(sample, 2, naive=False)
    naive2 = samples.sample_batches(sample, 2, naive=True)
    assert sorted(np.concatenate(ours2).tolist()) == sorted(np.concatenate(naive2).tolist())
    assert {frozenset(b.tolist()) for b in ours2} <= {frozenset(b.tolist()) for b in sample["timed"]}
    naive_batch = samples.masked_batch(sample, naive2[0], 200)
    assert naive_batch.input_ids.shape == (256, 200)
    ours_masked = sum(len(samples.masked_batch(sample, b, None).labels) for b in ours2)
    assert ours_masked == sum(len(samples.masked_batch(sample, b, 200).labels) for b in naive2)


def test_window_sample_is_the_sasrec_trainers_batches(samples, tmp_path):
    from bert4rec.batches import epoch_batches
    from bert4rec.data import load_windows

    rng = np.random.default_rng(1)
    lines = [f"{i + 1}\t{' '.join(map(str, rng.integers(1, 50, size=int(rng.integers(1, 200)))))}"
             for i in range(256 * 5 + 9)]
    (tmp_path / "train_windows.txt").write_text("\n".join(lines) + "\n")
    info = samples.write_window_sample(tmp_path, tmp_path / "windows.npz", timed_batches=3, warmup=1)
    windows = load_windows(tmp_path / "train_windows.txt")
    keep = np.flatnonzero(windows.lengths >= 2)  # one item: nothing to predict, the trainer skips it
    assert info["train_windows"] == len(keep) < len(windows)
    sample = samples.load_sample(tmp_path / "windows.npz")
    epoch = epoch_batches(windows.lengths[keep], 256, np.random.default_rng([samples.SEED, 0]), bucket=True)
    epoch_sets = {frozenset(keep[b].tolist()) for b in epoch}
    for batch in samples.sample_batches(sample, 3, naive=False):
        assert frozenset(sample["window_ids"][batch].tolist()) in epoch_sets
        made = samples.next_item_batch(sample, batch, None)
        first = windows.window(sample["window_ids"][batch[0]])
        assert made.input_ids[0, : len(first) - 1].tolist() == first[:-1].tolist()
        assert len(made.labels) == sum(len(windows.window(w)) - 1 for w in sample["window_ids"][batch])
    padded = samples.next_item_batch(sample, samples.sample_batches(sample, 3, naive=True)[0], 200)
    assert padded.input_ids.shape == (256, 200)


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=120,
                          cwd=REPO_ROOT)


def test_user_errors_are_one_line_exit_2(tmp_path):
    missing = _run(["--raw_path", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "b.json")])
    assert missing.returncode == 2 and missing.stderr.strip().splitlines()[-1].startswith("error: --raw_path")
    assert "Traceback" not in missing.stderr
    bad = _run(["--steps", "3"])
    assert bad.returncode == 2 and "unrecognized arguments" in bad.stderr and "Traceback" not in bad.stderr
    empty = _run(["--data_dir", str(tmp_path), "--out", str(tmp_path / "b.json")])
    assert empty.returncode == 2 and "train.txt not found" in empty.stderr
    assert not (tmp_path / "b.json").exists()
