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
