"""Ranking metrics from the rank of each user's held-out item.

Everything is computed from one number per user: ``rank`` = how many competing candidates score at least as
high as the target (0 = the target is first). Counting ties against the target means a model that scores
everything equally gets the worst rank, not the best; a NaN score (a diverged model) counts against the target
too, so NaN ranks the target last. With one relevant item per user, HR@k = Recall@k and
Precision@k = HR@k / k (RecBole's definitions).
"""

from __future__ import annotations

import numpy as np

POP100_METRICS = ("HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR")
FULL_METRICS = POP100_METRICS + ("Recall@10", "Precision@10", "MRR@10")


def target_ranks(scores: np.ndarray, target_scores: np.ndarray, candidate_mask: np.ndarray | None = None
                 ) -> np.ndarray:
    """Per-row count of candidates (excluding the target itself) scoring >= the target.

    ``scores`` [U, C] holds the competitors only (never the target); ``candidate_mask`` [U, C] marks which
    entries compete (False = excluded, e.g. items already in the user's history).
    """
    # a NaN compares false with everything: counted as beating the target (a NaN target loses to every
    # competitor), so a scorer that returns NaN can never look good
    beats = (scores >= target_scores[:, None]) | np.isnan(scores) | np.isnan(target_scores)[:, None]
    if candidate_mask is not None:
        beats &= candidate_mask
    return beats.sum(axis=1)


def metric_values(ranks: np.ndarray, name: str) -> np.ndarray:
    """One user's value of the metric ``name`` (e.g. ``NDCG@10``) per 0-based rank: the average is the metric,
    and per-user values let two models be compared user by user (``bench/paired.py``)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    kind, _, k_text = name.partition("@")
    k = int(k_text) if k_text else 0
    if kind in ("HR", "Recall"):
        return (ranks < k).astype(np.float64)
    if kind == "Precision":
        return (ranks < k) / k
    if kind == "NDCG":
        return np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)
    if kind == "MRR":  # MRR@k: reciprocal rank within the top k, else 0 (RecBole's mrr@10)
        return 1.0 / (ranks + 1.0) if not k else np.where(ranks < k, 1.0 / (ranks + 1.0), 0.0)
    raise ValueError(f"unknown metric {name!r}")


def metrics_from_ranks(ranks: np.ndarray, names: tuple[str, ...] = FULL_METRICS) -> dict[str, float]:
    """Average the named metrics over users; ``ranks`` are 0-based (0 = hit at the top)."""
    if np.asarray(ranks).size == 0:
        raise ValueError("no users to evaluate")
    return {name: float(np.mean(metric_values(ranks, name))) for name in names}
