"""Training end to end on synthetic data with planted sequential patterns (CPU, seconds)."""

import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import paddle
import pytest
from conftest import NUM_ITEMS, assert_resume_matches, mostpop_results, options, tiny_config, write_planted_sequences

from bert4rec.batches import epoch_batches
from bert4rec.checkpoint import load_checkpoint
from bert4rec.data import load_eval_set, load_train_instances
from bert4rec.errors import UserError
from bert4rec.models.bert4rec import BERT4Rec, BERT4RecConfig, collate_masked
from bert4rec.train import learning_rate, train

REPO = Path(__file__).resolve().parents[1]
def test_short_training_clearly_beats_popularity(planted):
    root, data_dir = planted
    results = train(options(root, data_dir, "beats_pop"))
    test = load_eval_set(data_dir / "test.txt")
    pop = mostpop_results(root, data_dir)
    assert results["num_eval_users"] == len(test) == 300
    assert results["test"]["full"]["NDCG@10"] > pop["test"]["full"]["NDCG@10"] + 0.3
    assert results["test"]["pop100"]["HR@10"] > 0.8  # 20 negatives: chance is 10/21
    written = json.loads((root / "beats_pop" / "results.json").read_text())
    assert written["test"] == results["test"] and written["valid"]["full"]["NDCG@10"] > 0
    assert {"model", "config", "data", "valid", "test", "num_eval_users", "steps", "best_step",
            "train_seconds"} <= set(written)
    events = [json.loads(x) for x in (root / "beats_pop" / "events.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "valid"] == [50, 100, 150]
    assert sum(e["event"] == "test" for e in events) == 1  # the test set is scored exactly once
    assert (root / "beats_pop" / "training.png").stat().st_size > 1000


def test_resume_reaches_the_same_result_as_an_uninterrupted_run(planted):
    root, data_dir = planted
    assert_resume_matches(root, data_dir, 11, num_train_steps=24, eval_every=8)


def test_paper_protocol_without_validation_tests_the_final_weights(planted):
    root, data_dir = planted
    results = train(options(root, data_dir, "no_valid", valid_path=None, num_train_steps=10, eval_every=5))
    assert results["valid"] is None and results["best_step"] == results["steps"] == 10
    assert not (root / "no_valid" / "best.pdparams").exists()


def test_vocab_size_mismatch_is_a_user_error(planted):
    root, data_dir = planted
    opts = options(root, data_dir, "mismatch")
    opts = replace(opts, config_path=tiny_config(root / "bad.json", vocab_size=99))
    with pytest.raises(UserError, match="vocab_size is 99 but .*vocab.txt has 64 tokens"):
        train(opts)


@pytest.mark.parametrize("bad, flag", [(dict(config_overrides={"mask_last_prob": 1.5}), r"mask_last_prob: .*\[0, 1\]"),
                                       (dict(config_overrides={"masked_lm_prob": 0.0}), r"masked_lm_prob: .*\(0, 1\]"),
                                       (dict(config_overrides={"masking": "once"}), "masking: must be one of"),
                                       (dict(batch_size=0), "--BATCH_SIZE")])
def test_bad_training_options_are_user_errors_naming_the_flag(planted, bad, flag):
    root, data_dir = planted
    with pytest.raises(UserError, match=flag):
        train(options(root, data_dir, "bad_option", **bad))


def test_learning_rate_warms_up_then_decays_to_zero(planted):
    root, data_dir = planted
    opts = options(root, data_dir, "lr", lr=1.0, warmup_steps=10)
    assert learning_rate(0, opts, 110) == pytest.approx(0.1)
    assert learning_rate(9, opts, 110) == pytest.approx(1.0)
    assert learning_rate(60, opts, 110) == pytest.approx(0.5)
    assert learning_rate(110, opts, 110) == 0.0
    constant = options(root, data_dir, "lr_constant", lr=1.0, warmup_steps=10, lr_schedule="constant")
    assert learning_rate(5, constant, 110) == pytest.approx(0.6) and learning_rate(109, constant, 110) == 1.0


def test_budget_schedule_decays_to_zero_at_the_time_budget_or_the_last_step(planted):
    root, data_dir = planted
    budget = options(root, data_dir, "lr_budget", lr=1.0, warmup_steps=10, lr_schedule="budget", max_minutes=1.0)
    assert learning_rate(5, budget, 110, seconds=3.0) == pytest.approx(0.6)  # the warmup counts steps only
    # warmup ended at 10 s: a quarter of the remaining 50 s left -> a quarter of the rate, long before step 110
    assert learning_rate(20, budget, 110, seconds=47.5, warmup_seconds=10.0) == pytest.approx(0.25)
    assert learning_rate(20, budget, 110, seconds=70.0, warmup_seconds=10.0) == 0.0
    assert learning_rate(100, budget, 110, seconds=11.0, warmup_seconds=10.0) == pytest.approx(0.1)  # steps first


def test_budget_schedule_ends_a_run_cut_short_by_its_time_budget_annealed(planted):
    root, data_dir = planted
    common = dict(num_train_steps=100_000, eval_every=100_000, warmup_steps=0, max_minutes=0.05)
    linear = train(options(root, data_dir, "cut_linear", **common))
    budget = train(options(root, data_dir, "cut_budget", lr_schedule="budget", **common))
    assert linear["stopped_by"] == budget["stopped_by"] == "max_minutes"
    assert linear["final_lr"] > 0.9 * linear["options"]["lr"]  # 100,000 steps were never close
    assert budget["final_lr"] < 0.05 * budget["options"]["lr"]
    events = [json.loads(x) for x in (root / "cut_budget" / "events.jsonl").read_text().splitlines()]
    rates = [e["lr"] for e in events if e["event"] == "train"]
    assert len(rates) >= 3 and rates == sorted(rates, reverse=True)


def test_budget_schedule_without_a_time_budget_is_a_user_error(planted):
    root, data_dir = planted
    with pytest.raises(UserError, match="--MAX_MINUTES"):
        train(options(root, data_dir, "budget_no_minutes", lr_schedule="budget"))


@pytest.mark.parametrize("kernels", ["plain", "auto"])
def test_bucketed_and_fully_padded_batches_give_the_same_loss(planted, kernels):
    _, data_dir = planted
    inst = load_train_instances(data_dir / "train.txt")
    cfg = BERT4RecConfig(vocab_size=NUM_ITEMS + 4, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=50)
    paddle.seed(0)
    model = BERT4Rec(cfg, kernels=kernels)
    model.eval()
    idx = np.arange(0, len(inst), 37)[:20]
    losses = []
    for pad_to in (None, 50):
        b = collate_masked(inst, idx, pad_to)
        with paddle.no_grad():
            losses.append(float(model.loss(*map(paddle.to_tensor, (b.input_ids, b.flat_positions, b.labels)))))
    assert b.input_ids.shape[1] == 50 and losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_epoch_batches_cover_every_instance_once_and_group_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 200, size=1000)
    batches = epoch_batches(lengths, 32, np.random.default_rng(1), bucket=True, pool_batches=8)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    plain = epoch_batches(lengths, 32, np.random.default_rng(1), bucket=False)
    assert spread < 0.5 * np.mean([lengths[b].max() - lengths[b].min() for b in plain])


def test_train_sh_local_smoke_run(tmp_path):
    raw = tmp_path / "seq.txt"
    write_planted_sequences(raw, n_users=400, num_items=150)  # gen_data_fin's default: 100 negatives
    cfg = tiny_config(tmp_path / "cfg.json", max_position_embeddings=200, vocab_size=154)
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(
        ["bash", str(REPO / "train.sh"), "-local", "y", f"--raw_path={raw}", "--data_name=tiny",
         "--data_root", str(tmp_path / "data"), f"--CONFIG_PATH={cfg}", "--NUM_TRAIN_STEPS", "6",
         "--EVAL_EVERY", "3", "--BATCH_SIZE", "32", "--CHECKPOINTS", str(tmp_path / "ck"), "--no-progress"],
        capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "ck" / "results.json").read_text())
    assert results["steps"] == 6 and results["num_eval_users"] == 400
    assert (tmp_path / "data" / "tiny" / "train.txt").exists() and "POP100" in proc.stdout
    usage = subprocess.run(["bash", str(REPO / "train.sh"), "--help"], capture_output=True, text=True)
    assert usage.returncode == 0 and "--raw_path PATH" in usage.stdout and "set -euo" not in usage.stdout


def test_ctrl_c_leaves_a_resumable_checkpoint(planted):
    root, data_dir = planted
    cfg = tiny_config(root / "sigint.json")
    ck = root / "sigint"
    cmd = [sys.executable, str(REPO / "trainrec.py"), f"--CONFIG_PATH={cfg}", "--DATA_DIR", str(data_dir),
           "--CHECKPOINTS", str(ck), "--NUM_TRAIN_STEPS", "100000", "--EVAL_EVERY", "3", "--BATCH_SIZE", "16",
           "--MAX_LEN", "50", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:  # wait until training is under way (first validation printed)
            if line.startswith("step 3:"):
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "resume with --INIT_CHECKPOINT" in out and "Traceback" not in err
    state = load_checkpoint(ck / "last.pdparams")["state"]
    assert state["step"] >= 3 and not state["finished"]
    same_flags = dict(config_path=cfg, init_checkpoint=ck / "last.pdparams", batch_size=16, num_train_steps=100000,
                      lr=2e-3, warmup_steps=100, seed=42, max_len=50)
    with pytest.raises(UserError, match="started with --BATCH_SIZE 16, not 64"):
        train(options(root, data_dir, "sigint", **{**same_flags, "batch_size": 64}))
    with pytest.raises(KeyboardInterrupt):
        train(options(root, data_dir, "sigint", stop_at_step=state["step"] + 2, eval_every=100, **same_flags))
    assert load_checkpoint(ck / "last.pdparams")["state"]["step"] == state["step"] + 2


def test_results_table_shows_the_paper_row_only_for_ml_1m():
    from bert4rec.reporting import results_table

    test = {"pop100": {"HR@10": 0.5, "NDCG@10": 0.25, "MRR": 0.2}, "full": {"HR@10": 0.1, "Recall@10": 0.1}}
    ml1m = results_table(test, 3416)
    assert "paper ML-1m" in ml1m and "0.6970" in ml1m and "0.5000" in ml1m
    other = results_table(test, 60)
    assert "paper" not in other and "0.6970" not in other and "0.1000" in other


def test_fixed_masking_trains_on_train_txt_and_dynamic_remasks_every_epoch(planted):
    from bert4rec.data.dataset import load_training_data
    from bert4rec.models.bert4rec import MaskedItemBatches

    root, data_dir = planted
    opts = options(root, data_dir, "masking")
    data = load_training_data(opts.vocab_path, opts.train_path, opts.valid_path, opts.test_path, opts.max_len)
    base = BERT4RecConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                          max_position_embeddings=50)
    fixed = MaskedItemBatches(data, opts, replace(base, masking="fixed"))
    on_disk = load_train_instances(data_dir / "train.txt")
    for epoch in (0, 1):  # the same instances every epoch: the file's
        assert np.array_equal(fixed.examples(epoch).tokens, on_disk.tokens)
        assert np.array_equal(fixed.examples(epoch).labels, on_disk.labels)
    dynamic = MaskedItemBatches(data, opts, replace(base, mask_last_prob=1.0))
    first, second = dynamic.examples(0), dynamic.examples(1)
    assert fixed.num_examples == len(on_disk) != dynamic.num_examples == len(data.windows)
    assert not np.array_equal(first.positions, second.positions)  # masked afresh each epoch
    lengths = np.diff(first.token_offsets)
    for w in range(len(lengths)):  # mask_last_prob 1: every window's last item is among its masked positions
        assert lengths[w] - 1 in first.positions[first.mask_offsets[w]:first.mask_offsets[w + 1]]
    results = train(options(root, data_dir, "fixed_masking", num_train_steps=20, eval_every=10,
                            config_overrides={"masking": "fixed"}))
    assert results["config"]["masking"] == "fixed" and "masking" not in results["options"]


def test_resume_refuses_another_masking_and_names_it(planted):
    root, data_dir = planted
    flags = dict(num_train_steps=20, eval_every=10)
    with pytest.raises(KeyboardInterrupt):
        train(options(root, data_dir, "resume_mask", stop_at_step=10, **flags))
    with pytest.raises(UserError, match="mask_last_prob 0.5, not 0.2"):
        train(options(root, data_dir, "resume_mask", init_checkpoint=root / "resume_mask" / "last.pdparams",
                      config_path=root / "resume_mask.json", config_overrides={"mask_last_prob": 0.2}, **flags))
