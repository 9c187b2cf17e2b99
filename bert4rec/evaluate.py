"""The one evaluation loop: every model, every run, every user, the same candidates.

Two protocols over the leave-one-out validation/test sets written by ``gen_data_fin.py``:
- POP100 (the BERT4Rec paper's): the target against its 100 popularity-sampled negatives from the file.
- FULL: the target against every item, the user's history excluded (the stricter, now-standard protocol).

A model plugs in through a *scorer*: a function from a batch of user histories to [B, num_items + 1] scores
indexed by item id (column 0, padding, is ignored) -- every model's ``predict`` (``bert4rec.models.base``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from bert4rec.batches import scoring_rows
from bert4rec.metrics import FULL_METRICS, POP100_METRICS, metrics_from_ranks, target_ranks

Scorer = Callable[[Sequence[np.ndarray]], np.ndarray]


def rank_targets(scorer: Scorer, histories: Sequence[np.ndarray], targets: np.ndarray,
                 negatives: np.ndarray | None, num_items: int, batch_size: int = 256, full_ranking: bool = True
                 ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """0-based ranks of each target under FULL (unless ``full_ranking`` is False) and POP100 (when
    ``negatives`` is given); ties are counted against the target.

    Users are processed in order of history length so each batch is padded only to its own longest input.
    """
    n = len(histories)
    batch_size = scoring_rows(batch_size, num_items)
    full = np.empty(n, dtype=np.int64) if full_ranking else None
    pop = np.empty(n, dtype=np.int64) if negatives is not None else None
    order = np.argsort([len(h) for h in histories], kind="stable")
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        scores = np.asarray(scorer([histories[i] for i in idx]), dtype=np.float32)[:, 1: num_items + 1]
        rows = np.arange(len(idx))
        tgt = targets[idx] - 1
        target_scores = scores[rows, tgt].copy()
        if pop is not None:
            pop[idx] = target_ranks(scores[rows[:, None], negatives[idx] - 1], target_scores)
        if full is None:
            continue
        hist_rows = np.repeat(rows, [len(histories[i]) for i in idx])
        hist_items = np.concatenate([histories[i] for i in idx]).astype(np.int64) - 1
        full[idx] = full_ranks(scores, target_scores, hist_rows, hist_items, tgt)
    return full, pop


def full_ranks(scores: np.ndarray, target_scores: np.ndarray, hist_rows: np.ndarray, hist_items: np.ndarray,
               targets: np.ndarray) -> np.ndarray:
    """FULL ranks of a batch: how many items outside the history (and not the target) score >= the target.
    The common case in two passes over a copy whose excluded items score -inf; rows with a NaN anywhere or a
    -inf target take ``target_ranks``' exact rule (NaN against the target)."""
    rows = np.arange(len(targets))
    competing = np.array(scores, dtype=np.float32, copy=True)
    competing[hist_rows, hist_items] = -np.inf
    competing[rows, targets] = -np.inf
    ranks = np.count_nonzero(competing >= target_scores[:, None], axis=1)
    odd = np.flatnonzero(np.isnan(competing.max(axis=1)) | ~(target_scores > -np.inf))
    if len(odd):
        mask = np.ones((len(odd), scores.shape[1]), dtype=bool)
        where = np.isin(hist_rows, odd)
        mask[np.searchsorted(odd, hist_rows[where]), hist_items[where]] = False
        mask[np.arange(len(odd)), targets[odd]] = False
        ranks[odd] = target_ranks(scores[odd], target_scores[odd], mask)
    return ranks


def evaluate(scorer: Scorer, eval_set, num_items: int, batch_size: int = 256,
             protocols: tuple[str, ...] = ("pop100", "full")) -> dict:
    """POP100 and/or FULL metrics over every user of ``eval_set`` (a ``bert4rec.data.EvalSet``)."""
    started = time.perf_counter()
    histories = [eval_set.history[a:b] for a, b in zip(eval_set.history_offsets[:-1],
                                                       eval_set.history_offsets[1:], strict=True)]
    negatives = np.asarray(eval_set.negatives) if "pop100" in protocols else None
    full, pop = rank_targets(scorer, histories, np.asarray(eval_set.targets), negatives, num_items, batch_size,
                             full_ranking="full" in protocols)
    result: dict = {"num_users": len(histories)}
    if pop is not None:
        result["pop100"] = metrics_from_ranks(pop, POP100_METRICS)
    if full is not None:
        result["full"] = metrics_from_ranks(full, FULL_METRICS)
    result["seconds"] = round(time.perf_counter() - started, 3)
    return result


SESSION_METRICS = ("Recall@20", "MRR@20", "HR@10", "NDCG@10")


def evaluate_sessions(model, sessions, num_items: int, batch_size: int = 256) -> dict:
    """The session protocol: the next item at every event of every session (``sessions``: a ``Windows``),
    predicted from the session's earlier events only and ranked against every item (ties against the target;
    earlier items of the session are not excluded: sessions repeat items). Recall@20, MRR@20, HR@10, NDCG@10
    averaged over all predictions, none dropped or padded."""
    started = time.perf_counter()
    ranks = []
    chunk: list[np.ndarray] = []
    predictions = 0
    for i in range(len(sessions)):
        chunk.append(np.asarray(sessions.window(i)))
        predictions += len(chunk[-1]) - 1
        if predictions >= batch_size * 16 or i == len(sessions) - 1:
            scores, targets = model.score_every_position(chunk)
            ranks.append(_full_ranks(np.asarray(scores, dtype=np.float32)[:, : num_items + 1], targets))
            chunk, predictions = [], 0
    all_ranks = np.concatenate(ranks)
    return {"session": {**metrics_from_ranks(all_ranks, SESSION_METRICS), "predictions": int(len(all_ranks))},
            "num_sessions": len(sessions), "seconds": round(time.perf_counter() - started, 3)}


def _full_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each target among items 1..N (column 0 is padding), ties counted against it."""
    rows = np.arange(len(targets))
    target_scores = scores[rows, targets].copy()
    competitors = np.ones_like(scores, dtype=bool)
    competitors[:, 0] = False
    competitors[rows, targets] = False
    return target_ranks(scores, target_scores, competitors)
