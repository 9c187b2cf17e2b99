"""Runs and checkpoints: one run per folder, resume that refuses other flags and logs each step once, time
budgets across resumes, no duplicate validation, data-parallel shards, full disks, bad flags and bad data."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import options

from bert4rec.checkpoint import load_checkpoint
from bert4rec.errors import EnvironmentFailure, UserError
from bert4rec.rundir import claim_run_dir
from bert4rec.train import train

REPO = Path(__file__).resolve().parents[1]


def events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


def test_a_second_run_into_a_busy_folder_is_refused(planted):
    root, data_dir = planted
    busy = root / "busy"
    with claim_run_dir(busy):
        with pytest.raises(UserError, match=f"another training run is using this folder \\(process {os.getpid()}\\)"):
            train(options(root, data_dir, "busy", num_train_steps=2, eval_every=2))
    assert not (busy / "events.jsonl").exists()


def test_a_stale_lock_of_a_killed_run_does_not_block(planted):
    root, data_dir = planted
    stale = root / "stale"
    stale.mkdir()
    (stale / ".lock").write_text("999999")  # left by a run killed with -9: nobody holds it any more
    results = train(options(root, data_dir, "stale", num_train_steps=2, eval_every=2))
    assert results["steps"] == 2


def test_a_run_that_fails_early_leaves_no_folder(planted):
    root, data_dir = planted
    config = root / "too_short.json"
    config.write_text(json.dumps({"model": "SASRec", "max_position_embeddings": 20}))  # < --MAX_LEN 50
    with pytest.raises(UserError, match="--MAX_LEN 50 exceeds max_position_embeddings 20"):
        train(options(root, data_dir, "early_failure", config_path=config))
    assert not (root / "early_failure").exists()


def test_resume_after_a_hard_kill_logs_every_step_once(planted):
    root, data_dir = planted
    kw = dict(num_train_steps=30, eval_every=10)
    with pytest.raises(KeyboardInterrupt):
        train(options(root, data_dir, "killed", stop_at_step=20, **kw))
    run = root / "killed"
    with open(run / "events.jsonl", "a") as f:  # what a run killed with -9 after step 26 had logged beyond it
        for step in (21, 22, 23, 24, 25, 26):
            f.write(json.dumps({"event": "train", "step": step, "loss": 9.9}) + "\n")
    train(options(root, data_dir, "killed", init_checkpoint=run / "last.pdparams", **kw))
    logged = events(run)
    steps = [e["step"] for e in logged if e["event"] == "train"]
    assert steps == sorted(set(steps)) and 9.9 not in [e.get("loss") for e in logged]
    assert [e["step"] for e in logged if e["event"] == "valid"] == [10, 20, 30]
    assert sum(e["event"] == "test" for e in logged) == 1


def test_max_minutes_counts_from_the_checkpoints_training_time(planted):
    root, data_dir = planted
    kw = dict(num_train_steps=500, eval_every=100)
    with pytest.raises(KeyboardInterrupt):
        train(options(root, data_dir, "budget", stop_at_step=6, **kw))
    spent = load_checkpoint(root / "budget" / "last.pdparams")["state"]["train_seconds"]
    budget = spent / 60  # exactly what the first part used: the resumed run may only take one more step
    results = train(options(root, data_dir, "budget", init_checkpoint=root / "budget" / "last.pdparams",
                            max_minutes=budget, **kw))
    assert results["steps"] == 7


def test_one_validation_at_a_last_step_off_the_grid(planted):
    root, data_dir = planted
    train(options(root, data_dir, "off_grid", num_train_steps=10, eval_every=4))
    assert [e["step"] for e in events(root / "off_grid") if e["event"] == "valid"] == [4, 8, 10]


def test_the_test_set_never_influences_training_or_selection(planted, tmp_path):
    root, data_dir = planted
    perturbed = tmp_path / "data"
    shutil.copytree(data_dir, perturbed)
    lines = (perturbed / "test.txt").read_text().splitlines()
    rng = np.random.default_rng(0)
    shuffled = []
    for line in lines:  # every test target replaced by another item
        user, history, target, negatives = line.split("\t")
        shuffled.append("\t".join([user, history, str(int(rng.integers(1, 61))), negatives]))
    (perturbed / "test.txt").write_text("\n".join(shuffled) + "\n")
    kw = dict(num_train_steps=40, eval_every=10)
    a = train(options(root, data_dir, "test_original", **kw))
    b = train(options(tmp_path, perturbed, "test_perturbed", **kw))
    curve = lambda run: [(e["step"], e["full"], e["pop100"]) for e in events(run) if e["event"] == "valid"]  # noqa: E731
    assert curve(root / "test_original") == curve(tmp_path / "test_perturbed")
    assert a["best_step"] == b["best_step"] and a["valid"] == b["valid"]
    assert a["test"] != b["test"]  # the perturbation did reach the (once-only) test scoring


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(planted, monkeypatch):
    import paddle

    root, data_dir = planted
    kw = dict(num_train_steps=20, eval_every=5)
    with pytest.raises(KeyboardInterrupt):
        train(options(root, data_dir, "full_disk", stop_at_step=5, **kw))
    last = root / "full_disk" / "last.pdparams"
    before = last.read_bytes()
    real_save = paddle.save

    def no_space(obj, path, *args, **kwargs):
        if "last.pdparams" in str(path):
            with open(path, "wb") as f:
                f.write(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(paddle, "save", no_space)
    with pytest.raises(EnvironmentFailure, match="No space left on device.*the previous last.pdparams is intact"):
        train(options(root, data_dir, "full_disk", init_checkpoint=last, **kw))
    assert last.read_bytes() == before
    assert sorted(p.name for p in last.parent.iterdir() if p.name.startswith(".last")) == []


@pytest.mark.parametrize("where", ["train_windows.txt", "valid.txt"])
def test_an_item_outside_the_vocabulary_is_one_line_before_training(planted, tmp_path, where):
    root, data_dir = planted
    bad = tmp_path / "data"
    shutil.copytree(data_dir, bad)
    lines = (bad / where).read_text().splitlines()
    fields = lines[6].split("\t")
    fields[1] = fields[1] + " 999"  # an item id the vocabulary (60 items) does not have
    lines[6] = "\t".join(fields)
    (bad / where).write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=f"{where}:7: .*999 is not an item of the vocabulary \\(1..60\\)"):
        train(options(tmp_path, bad, "bad_ids"))
    assert not (tmp_path / "bad_ids").exists()


def run_trainrec(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "trainrec.py"), *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


def one_error_line(proc: subprocess.CompletedProcess, needle: str, code: int = 2) -> None:
    assert proc.returncode == code, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr[-2000:]


@pytest.mark.parametrize("flags,needle", [
    (["--EVAL_BATCH_SIZE", "0"], "--EVAL_BATCH_SIZE must be >= 1"),
    (["--SEED", "-1"], "--SEED must be in [0, 2^32)"),
    (["--EPOCHS", "inf"], "--EPOCHS must be a finite number > 0"),
])
def test_bad_flags_are_refused_before_any_work(planted, tmp_path, flags, needle):
    _, data_dir = planted
    one_error_line(run_trainrec("--DATA_DIR", str(data_dir), "--CHECKPOINTS", str(tmp_path / "run"), *flags), needle)
    assert not (tmp_path / "run").exists()


def test_checkpoints_path_problems_are_one_line(planted, tmp_path):
    _, data_dir = planted
    (tmp_path / "a_file").write_text("x")
    one_error_line(run_trainrec("--DATA_DIR", str(data_dir), "--CHECKPOINTS", str(tmp_path / "a_file")),
                   "is a file, not a folder")
    one_error_line(run_trainrec("--DATA_DIR", str(data_dir), "--CHECKPOINTS", str(tmp_path / "a_file" / "run")),
                   "is a file, not a folder")
    assert (tmp_path / "a_file").read_text() == "x"


def test_required_fused_kernels_that_cannot_load_are_one_line(planted, tmp_path):
    root, data_dir = planted
    config = root / "kernels.json"
    config.write_text(json.dumps({"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                  "intermediate_size": 32, "max_position_embeddings": 50}))
    proc = run_trainrec("--CONFIG_PATH", str(config), "--DATA_DIR", str(data_dir), "--MAX_LEN", "50",
                        "--KERNELS", "fused", "--CHECKPOINTS", str(tmp_path / "run"), env={"BERT4REC_FUSED": "0"})
    one_error_line(proc, "--KERNELS fused: the fused CPU kernels are unavailable here")
    assert not (tmp_path / "run").exists()


def test_start_up_shows_only_the_projects_own_lines(planted, tmp_path):
    _, data_dir = planted
    proc = run_trainrec("--CONFIG_PATH", str(REPO / "bert_train" / "mostpop_config.json"), "--DATA_DIR",
                        str(data_dir), "--CHECKPOINTS", str(tmp_path / "run"), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    for noise in ("WISELY", "ccache", "INFO", "Warning", "WARNING"):
        assert noise not in proc.stderr and noise not in proc.stdout


def launch_two_processes(root: Path, data_dir: Path, tmp_path: Path, *flags: str) -> dict:
    """A tiny SASRec trained by two data-parallel processes; its results.json (the workers' logs on failure)."""
    config = root / "ddp.json"
    config.write_text(json.dumps({"model": "SASRec", "hidden_size": 16, "intermediate_size": 32,
                                  "max_position_embeddings": 50}))
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir",
           str(tmp_path / "log"), str(REPO / "trainrec.py"), "--CONFIG_PATH", str(config), "--DATA_DIR",
           str(data_dir), "--CHECKPOINTS", str(tmp_path / "run"), "--MAX_LEN", "50", "--no-progress", *flags]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    logs = "".join(p.read_text() for p in (tmp_path / "log").glob("workerlog.*"))
    assert proc.returncode == 0, logs[-3000:]
    return json.loads((tmp_path / "run" / "results.json").read_text())


def test_data_parallel_never_hands_a_process_an_empty_shard(planted, tmp_path):
    """300 windows in batches of 299: the epoch's last batch has one window for two processes; it is dropped,
    so both processes step together through several epochs."""
    root, data_dir = planted
    batch = len((data_dir / "train_windows.txt").read_text().splitlines()) - 1
    results = launch_two_processes(root, data_dir, tmp_path, "--BATCH_SIZE", str(batch), "--NUM_TRAIN_STEPS", "3",
                                   "--EVAL_EVERY", "3")
    assert results["steps"] == 3 and results["sequences_seen"] == 3 * batch  # 3 epochs, each one full batch


def test_data_parallel_processes_end_a_time_budget_at_the_same_step(planted, tmp_path):
    """Each process times its own steps; were each to stop on its own clock, one would wait forever for the
    other's gradients. With rank 0's clock on both, the budget schedule anneals and the run ends together."""
    root, data_dir = planted
    results = launch_two_processes(root, data_dir, tmp_path, "--BATCH_SIZE", "32", "--NUM_TRAIN_STEPS", "100000",
                                   "--EVAL_EVERY", "100000", "--WARMUP_STEPS", "0", "--MAX_MINUTES", "0.05",
                                   "--LR_SCHEDULE", "budget")
    assert results["stopped_by"] == "max_minutes" and results["steps"] > 3
    assert results["final_lr"] < 0.05 * results["options"]["lr"]
