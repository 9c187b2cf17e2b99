"""Metric functions against hand-computed rankings, including ties and k boundaries."""

import math

import numpy as np
import pytest

from bert4rec.metrics import FULL_METRICS, POP100_METRICS, metrics_from_ranks, target_ranks


def test_target_rank_counts_strictly_better_and_ties_against_the_target():
    scores = np.array([[0.1, 0.5, 0.3], [0.4, 0.2, 0.4], [0.9, 0.9, 0.9]], dtype=np.float32)
    target = np.array([0.4, 0.4, 0.1], dtype=np.float32)
    assert target_ranks(scores, target).tolist() == [1, 2, 3]


def test_target_rank_ignores_excluded_candidates():
    scores = np.array([[0.9, 0.8, 0.1]])
    mask = np.array([[False, True, True]])
    assert target_ranks(scores, np.array([0.5]), mask).tolist() == [1]


def test_metrics_from_hand_computed_ranks():
    ranks = np.array([0, 1, 4, 5, 9, 10])
    m = metrics_from_ranks(ranks, FULL_METRICS)
    assert m["HR@1"] == pytest.approx(1 / 6)
    assert m["HR@5"] == pytest.approx(3 / 6)  # rank 4 is the 5th place: inside, rank 5 is outside
    assert m["HR@10"] == pytest.approx(5 / 6)  # rank 9 inside, rank 10 outside
    assert m["Recall@10"] == pytest.approx(m["HR@10"])
    assert m["Precision@10"] == pytest.approx(5 / 60)
    ndcg5 = (1 + 1 / math.log2(3) + 1 / math.log2(6)) / 6
    assert m["NDCG@5"] == pytest.approx(ndcg5)
    assert m["NDCG@10"] == pytest.approx(ndcg5 + (1 / math.log2(7) + 1 / math.log2(11)) / 6)
    assert m["MRR"] == pytest.approx(np.mean([1, 1 / 2, 1 / 5, 1 / 6, 1 / 10, 1 / 11]))
    assert m["MRR@10"] == pytest.approx(np.mean([1, 1 / 2, 1 / 5, 1 / 6, 1 / 10, 0]))  # rank 10 is 11th: out


def test_perfect_and_hopeless_rankings():
    assert all(v == pytest.approx(1.0) for k, v in metrics_from_ranks(np.zeros(5), POP100_METRICS).items())
    worst = metrics_from_ranks(np.full(5, 100), POP100_METRICS)
    assert worst["HR@10"] == 0 and worst["NDCG@10"] == 0 and worst["MRR"] == pytest.approx(1 / 101)


def test_unknown_metric_and_empty_input_raise():
    with pytest.raises(ValueError):
        metrics_from_ranks(np.zeros(3), ("AUC",))
    with pytest.raises(ValueError):
        metrics_from_ranks(np.zeros(0))
