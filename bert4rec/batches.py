"""Training batches for every model: length bucketing, data-parallel shards, right-padding.

ML-1M training windows average ~109 items but are capped at 200, so padding every batch to 200 wastes about
half the encoder's work. Batches here are drawn from groups of similar length and padded only to their own
longest sequence. Shuffling stays honest: the epoch order is a fresh permutation, only *within* a pool of
``pool_batches`` consecutive batches are sequences sorted by length, and the batches are shuffled again.
Padding never changes the loss (tests check that bucketed and fully padded batches agree).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def epoch_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator, bucket: bool = True,
                  pool_batches: int = 64, min_size: int = 1) -> list[np.ndarray]:
    """Example indices for each batch of one epoch: every example once, except that a last batch smaller than
    ``min_size`` (the number of data-parallel processes, so that none gets an empty shard) is dropped."""
    order = rng.permutation(len(lengths))
    if bucket:
        pool = batch_size * pool_batches
        for start in range(0, len(order), pool):
            chunk = order[start:start + pool]
            order[start:start + pool] = chunk[np.argsort(lengths[chunk], kind="stable")]
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    batches = [b for b in batches if len(b) >= min_size]
    if bucket:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def pad_rows(rows: Sequence[np.ndarray], width: int | None = None, min_width: int = 1) -> np.ndarray:
    """[B, width] int64, row i = ``rows[i]`` right-padded with 0 (width: the longest row, at least ``min_width``)."""
    width = width if width is not None else max(min_width, max((len(r) for r in rows), default=0))
    out = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


SCORE_CELLS = 1 << 25  # scores held at once while ranking: 32 M float32 = 128 MB, whatever the catalogue


def scoring_rows(batch_size: int, num_items: int) -> int:
    """Histories scored per batch: ``batch_size``, fewer when a [rows, items] score block would pass
    ``SCORE_CELLS`` (33 rows of a 1 M-item catalogue), so memory stays flat as the catalogue grows."""
    return max(1, min(batch_size, SCORE_CELLS // max(num_items + 1, 1)))
