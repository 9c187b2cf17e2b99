"""Training batches: length bucketing and collation into padded arrays.

ML-1M training windows average ~109 items but are capped at 200, so padding every batch to 200 wastes about
half the encoder's work. Batches here are drawn from groups of similar length and padded only to their own
longest sequence. Shuffling stays honest: the epoch order is a fresh permutation, only *within* a pool of
``pool_batches`` consecutive batches are sequences sorted by length, and the batches are shuffled again.
Padding never changes the loss (tests check that bucketed and fully padded batches agree).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Batch:
    input_ids: np.ndarray       # [B, L] int64, right-padded with 0
    flat_positions: np.ndarray  # [M] int64 indices into the flattened [B*L] grid
    labels: np.ndarray          # [M] int64 items to predict

    @property
    def num_sequences(self) -> int:
        return int(self.input_ids.shape[0])


def epoch_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator, bucket: bool = True,
                  pool_batches: int = 64) -> list[np.ndarray]:
    """Instance indices for each batch of one epoch (every instance exactly once, last batch may be short)."""
    order = rng.permutation(len(lengths))
    if bucket:
        pool = batch_size * pool_batches
        for start in range(0, len(order), pool):
            chunk = order[start:start + pool]
            order[start:start + pool] = chunk[np.argsort(lengths[chunk], kind="stable")]
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if bucket:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def collate(tokens: np.ndarray, token_offsets: np.ndarray, positions: np.ndarray, labels: np.ndarray,
            mask_offsets: np.ndarray, idx: np.ndarray, pad_to: int | None = None) -> Batch:
    """Gather the instances ``idx`` from CSR arrays into one padded batch (width = longest, or ``pad_to``)."""
    starts, ends = token_offsets[idx], token_offsets[idx + 1]
    lens = ends - starts
    width = int(pad_to if pad_to is not None else lens.max())
    input_ids = np.zeros((len(idx), width), dtype=np.int64)
    flat_pos, flat_lab = [], []
    for row, (a, b, i) in enumerate(zip(starts, ends, idx, strict=True)):
        input_ids[row, : b - a] = tokens[a:b]
        m0, m1 = mask_offsets[i], mask_offsets[i + 1]
        flat_pos.append(positions[m0:m1].astype(np.int64) + row * width)
        flat_lab.append(labels[m0:m1])
    return Batch(input_ids, np.concatenate(flat_pos), np.concatenate(flat_lab).astype(np.int64))
