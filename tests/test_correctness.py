"""Numbers that must never lie: a scorer returning NaN ranks every target last, a diverging run stops with one
line (exit 3) keeping its last good checkpoint, and never produces results."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import options

from bert4rec.cli._common import exit_code
from bert4rec.data import load_eval_set
from bert4rec.errors import TrainingDiverged
from bert4rec.evaluate import _full_ranks, evaluate
from bert4rec.metrics import target_ranks


def test_nan_scores_rank_the_target_last_in_every_protocol(planted):
    _root, data_dir = planted
    test = load_eval_set(data_dir / "test.txt")
    num_items = int(test.negatives.max())

    def nan_scorer(histories):
        return np.full((len(histories), num_items + 1), np.nan, dtype=np.float32)

    result = evaluate(nan_scorer, test, num_items)
    assert result["full"]["NDCG@10"] == 0.0 and result["pop100"]["NDCG@10"] == 0.0
    assert result["full"]["HR@10"] == 0.0 and result["pop100"]["MRR"] < 0.05
    scores = np.array([[0.0, np.nan, 1.0, 2.0]], dtype=np.float32)
    assert _full_ranks(scores, np.array([1])).tolist() == [2]  # NaN target: behind both other items
    assert _full_ranks(scores, np.array([3])).tolist() == [1]  # a NaN competitor counts against the target
    assert target_ranks(np.array([[np.nan, np.nan]]), np.array([np.inf])).tolist() == [2]


def test_a_diverging_run_stops_with_exit_3_and_keeps_its_last_good_checkpoint(planted, monkeypatch):
    from bert4rec.checkpoint import load_checkpoint
    from bert4rec.models.bert4rec import BERT4Rec
    from bert4rec.train import train

    root, data_dir = planted
    calls = {"n": 0}
    original = BERT4Rec.forward

    def diverging(self, batch):
        calls["n"] += 1
        loss = original(self, batch)
        return loss * float("nan") if calls["n"] > 12 else loss

    monkeypatch.setattr(BERT4Rec, "forward", diverging)
    opts = options(root, data_dir, "diverged", num_train_steps=40, eval_every=10)
    with pytest.raises(TrainingDiverged, match="the training loss became nan at step 13") as err:
        train(opts)
    assert f"{opts.checkpoints / 'last.pdparams'} (step 10) is the last good checkpoint" in str(err.value)
    assert load_checkpoint(opts.checkpoints / "last.pdparams")["state"]["step"] == 10
    assert not (opts.checkpoints / "results.json").exists()
    calls["n"] = 0
    assert exit_code(lambda: train(options(root, data_dir, "diverged_cli", num_train_steps=40, eval_every=10))) == 3


def test_resume_carries_the_best_weights_and_refuses_other_data(planted, tmp_path):
    from conftest import write_planted_sequences

    from bert4rec.data import GenerateOptions, generate_dataset
    from bert4rec.errors import UserError
    from bert4rec.train import train

    root, data_dir = planted
    flags = dict(num_train_steps=40, eval_every=10)
    with pytest.raises(KeyboardInterrupt):
        train(options(root, data_dir, "resume_a", stop_at_step=25, **flags))
    first = root / "resume_a"
    whole = train(options(root, data_dir, "resume_whole", **flags))
    # resumed into another folder: the best weights come along, the result is the uninterrupted run's
    moved = train(options(root, data_dir, "resume_b", init_checkpoint=first / "last.pdparams",
                          config_path=first.parent / "resume_a.json", **flags))
    assert moved["best_step"] == whole["best_step"] and moved["test"] == whole["test"]
    assert (root / "resume_b" / "best.pdparams").is_file()
    # without them nowhere: refused instead of testing the last weights
    (first / "best.pdparams").unlink()
    with pytest.raises(UserError, match=r"the run's best weights \(step \d+\) are neither in"):
        train(options(root, data_dir, "resume_c", init_checkpoint=first / "last.pdparams",
                      config_path=first.parent / "resume_a.json", **flags))
    # other data: refused
    other = tmp_path / "seq.txt"
    write_planted_sequences(other, seed=1)
    generate_dataset(GenerateOptions(raw_path=other, format="seq", output_dir=tmp_path / "data", max_seq_length=50,
                                     dupe_factor=3, min_item_count=1, num_negatives=20), progress=False,
                     log=lambda *a: None)
    with pytest.raises(UserError, match="was trained on other data"):
        train(options(root, tmp_path / "data", "resume_a", init_checkpoint=first / "last.pdparams",
                      config_path=first.parent / "resume_a.json", **flags))


def test_results_say_why_a_run_stopped_and_where_the_learning_rate_was(planted):
    from bert4rec.train import train

    root, data_dir = planted
    whole = train(options(root, data_dir, "stop_steps", num_train_steps=20, eval_every=10, warmup_steps=2))
    assert whole["stopped_by"] == "steps" and whole["final_lr"] < 5e-3 / 10  # the linear decay's last step
    timed = train(options(root, data_dir, "stop_minutes", num_train_steps=1000, eval_every=10, warmup_steps=2,
                          max_minutes=1e-6))
    assert timed["stopped_by"] == "max_minutes" and timed["steps"] == 1
    assert timed["final_lr"] > 1e-3  # stopped long before the decay: results.json says so
