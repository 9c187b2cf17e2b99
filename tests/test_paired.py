"""bench/paired.py: two runs compared user by user on the same targets (mean difference, standard error)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import mostpop_results, options, write_planted_sequences

from bert4rec.data import GenerateOptions, generate_dataset
from bert4rec.metrics import metric_values
from bert4rec.train import train

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from paired import paired_difference  # noqa: E402


def paired(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "bench" / "paired.py"), *args], capture_output=True, text=True,
                          timeout=300)


def one_error_line(proc, needle):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], \
        proc.stderr[-2000:]


def test_paired_difference_of_a_hand_worked_example():
    d = paired_difference(np.array([1.0, 0.0, 0.5, 0.0]), np.array([0.5, 0.0, 1.0, 1.0]))
    # differences -0.5, 0, 0.5, 1: mean 0.25, sample variance 1.25 / 3
    se = math.sqrt(1.25 / 3) / 2
    assert d["users"] == 4 and d["mean_a"] == 0.375 and d["mean_b"] == 0.625
    assert d["difference"] == pytest.approx(0.25) and d["standard_error"] == pytest.approx(se)
    assert d["ci95"] == pytest.approx([0.25 - 1.96 * se, 0.25 + 1.96 * se])
    assert (d["b_better"], d["a_better"], d["equal"]) == (2, 1, 1)


def test_metric_values_per_user_from_ranks():
    ranks = np.array([0, 1, 9, 10])
    np.testing.assert_allclose(metric_values(ranks, "NDCG@10"), [1.0, 1 / math.log2(3), 1 / math.log2(11), 0.0])
    assert metric_values(ranks, "HR@10").tolist() == [1.0, 1.0, 1.0, 0.0]
    np.testing.assert_allclose(metric_values(ranks, "MRR@10"), [1.0, 0.5, 0.1, 0.0])
    np.testing.assert_allclose(metric_values(ranks, "MRR"), [1.0, 0.5, 0.1, 1 / 11])
    with pytest.raises(ValueError, match="unknown metric"):
        metric_values(ranks, "AUC")


@pytest.fixture(scope="module")
def runs(planted):
    """A SASRec and a MostPop run on the planted data, and a SASRec run on the same file made with --holdout test
    (trained on the validation items too, tested on the same targets)."""
    root, data_dir = planted
    config = root / "paired_sasrec.json"
    config.write_text(json.dumps({"model": "SASRec", "hidden_size": 32, "intermediate_size": 64,
                                  "max_position_embeddings": 50}))
    train(options(root, data_dir, "paired_sasrec", config_path=config, num_train_steps=60, eval_every=30))
    mostpop_results(root, data_dir)
    refit_dir = root / "data_refit"
    generate_dataset(GenerateOptions(raw_path=root / "seq.txt", format="seq", output_dir=refit_dir, max_seq_length=50,
                                     dupe_factor=0, min_item_count=1, num_negatives=20, holdout="test"),
                     progress=False, log=lambda *a: None)
    train(options(root, refit_dir, "paired_refit", config_path=config, num_train_steps=60, eval_every=30,
                  train_path=refit_dir / "train.txt", valid_path=None, test_path=refit_dir / "test.txt",
                  vocab_path=refit_dir / "vocab.txt"))
    return root


def test_the_per_user_means_are_each_runs_recorded_metrics_and_the_difference_is_theirs(runs, tmp_path):
    out = tmp_path / "paired.json"
    proc = paired(str(runs / "mostpop"), str(runs / "paired_sasrec"), "--metrics", "NDCG@10,HR@10", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())["metrics"]
    recorded = [json.loads((runs / name / "results.json").read_text())["test"]["full"]
                for name in ("mostpop", "paired_sasrec")]
    for metric in ("NDCG@10", "HR@10"):
        d = result[metric]
        assert d["mean_a"] == pytest.approx(recorded[0][metric], abs=1e-6)
        assert d["mean_b"] == pytest.approx(recorded[1][metric], abs=1e-6)
        assert d["difference"] == pytest.approx(recorded[1][metric] - recorded[0][metric], abs=1e-6)
        assert d["b_better"] + d["a_better"] + d["equal"] == d["users"] == 300
    # the planted walk is learnt by SASRec and not by popularity: far outside the interval's noise
    assert result["NDCG@10"]["ci95"][0] > 0.1
    assert "| test FULL NDCG@10 |" in proc.stdout


def test_a_refit_on_holdout_test_data_is_compared_on_the_same_test_targets(runs):
    proc = paired(str(runs / "paired_sasrec"), str(runs / "paired_refit"), "--metrics", "NDCG@10")
    assert proc.returncode == 0, proc.stderr[-2000:]
    one_error_line(paired(str(runs / "paired_sasrec"), str(runs / "paired_refit"), "--split", "valid"),
                   "no validation set")


def test_runs_on_other_items_targets_or_data_are_refused_in_one_line(planted, runs, tmp_path):
    other_raw = tmp_path / "other.txt"
    write_planted_sequences(other_raw, seed=5)
    other_dir = tmp_path / "other_data"
    generate_dataset(GenerateOptions(raw_path=other_raw, format="seq", output_dir=other_dir, max_seq_length=50,
                                     dupe_factor=0, min_item_count=1, num_negatives=20), progress=False,
                     log=lambda *a: None)
    one_error_line(paired(str(runs / "mostpop"), str(runs / "paired_sasrec"), "--data_b", str(other_dir)),
                   "their item vocabularies differ")
    moved_target = tmp_path / "moved_target"
    shutil.copytree(planted[1], moved_target)
    lines = (moved_target / "test.txt").read_text().splitlines()
    user, history, target, negatives = lines[0].split("\t")
    lines[0] = "\t".join((user, history, str(int(target) % 60 + 1), negatives))
    (moved_target / "test.txt").write_text("\n".join(lines) + "\n")
    one_error_line(paired(str(runs / "mostpop"), str(runs / "paired_sasrec"), "--data_b", str(moved_target)),
                   "their test sets differ in targets")
    tampered = tmp_path / "tampered"
    shutil.copytree(runs / "paired_sasrec", tampered)
    results = json.loads((tampered / "results.json").read_text())
    results["test"]["full"]["NDCG@10"] += 0.01
    (tampered / "results.json").write_text(json.dumps(results))
    one_error_line(paired(str(runs / "mostpop"), str(tampered)), "not the data it was trained on")
    one_error_line(paired(str(runs / "mostpop"), str(runs / "paired_sasrec"), "--metrics", "AUC"), "--metrics 'AUC'")
