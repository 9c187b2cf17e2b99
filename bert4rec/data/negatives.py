"""Popularity-sampled negatives of the evaluation sets (the candidates POP100 ranks the target among).

For each user, ``num_negatives`` distinct items the user never touched, drawn without replacement with
probability proportional to their interaction counts -- successive popularity draws rejecting seen and repeated
items, as the original BERT4Rec evaluation did. Two samplers give exactly that distribution:

* keys (Efraimidis-Spirakis: the smallest ``Exp(1) / count`` among the unseen items), which touches every item
  for every user: exact and fast while users x items is small (ML-1M: 2e7) -- the files of every published run;
* rejection (the draws themselves, vectorised, a user's seen and already drawn items blocked), whose cost
  follows the number of draws, not the catalogue: used above ``KEYS_LIMIT`` users x items (ML-20M: 3.7e9).
"""

from __future__ import annotations

import numpy as np

from bert4rec.errors import UserError

KEYS_LIMIT = 200_000_000  # users x items above which the rejection sampler is used
BLOCK_USERS = 4096  # users the rejection sampler draws for at once
MAX_ROUNDS = 30  # rejection rounds before a user's remaining draws fall back to keys (almost every item seen)


def sample_popular_negatives(
    items: np.ndarray,
    offsets: np.ndarray,
    counts: np.ndarray,
    num_negatives: int,
    rng: np.random.Generator,
    user_labels: np.ndarray | None = None,
) -> np.ndarray:
    """``[U, num_negatives]`` int32 negatives in sampling order (module docstring); ``items``/``offsets``: every
    item of every user (CSR), ``counts``: ``[N+1]`` weights, index 0 unused."""
    num_items = len(counts) - 1
    if (np.asarray(counts[1:]) <= 0).any():
        raise ValueError("every item needs a positive count")
    check_enough_items(items, offsets, num_items, num_negatives, user_labels)
    if (len(offsets) - 1) * num_items <= KEYS_LIMIT:
        return _keys_negatives(items, offsets, counts, num_negatives, rng)
    return _rejection_negatives(items, offsets, counts, num_negatives, rng)


def check_enough_items(items: np.ndarray, offsets: np.ndarray, num_items: int, num_negatives: int,
                       user_labels: np.ndarray | None) -> None:
    """A user who touched so many items that fewer than ``num_negatives`` remain is a UserError naming them."""
    lengths = np.diff(offsets)
    candidates = np.flatnonzero(num_items - lengths < num_negatives)  # repeats make the true count lower
    for u in candidates.tolist():
        distinct = len(np.unique(items[offsets[u]:offsets[u + 1]]))
        if num_items - distinct < num_negatives:
            who = user_labels[u] if user_labels is not None else u + 1
            raise UserError(f"user {who} has interacted with {distinct} of the {num_items} items; fewer than "
                            f"--num_negatives {num_negatives} remain to sample negatives from")


def _rejection_negatives(items: np.ndarray, offsets: np.ndarray, counts: np.ndarray, num_negatives: int,
                         rng: np.random.Generator) -> np.ndarray:
    num_items = len(counts) - 1
    cdf = np.cumsum(np.asarray(counts[1:], dtype=np.float64))
    n_users = len(offsets) - 1
    lengths = np.diff(offsets)
    out = np.zeros((n_users, num_negatives), dtype=np.int32)
    draws = 2 * num_negatives + 16
    for u0 in range(0, n_users, BLOCK_USERS):
        u1 = min(n_users, u0 + BLOCK_USERS)
        m = u1 - u0
        # what each user of the block may not draw, as sorted keys row * (N + 1) + item: memory follows the
        # block's interactions, not users x items (a 1 M-item catalogue costs what a small one does)
        blocked = np.sort(np.repeat(np.arange(m, dtype=np.int64), lengths[u0:u1]) * (num_items + 1)
                          + items[offsets[u0]:offsets[u1]])
        filled = np.zeros(m, dtype=np.int64)
        for _ in range(MAX_ROUNDS):
            rows = np.flatnonzero(filled < num_negatives)
            if not len(rows):
                break
            cand = np.searchsorted(cdf, rng.random((len(rows), draws)) * cdf[-1], side="right") + 1
            cand = np.minimum(cand, num_items)
            key = rows[:, None] * (num_items + 1) + cand
            first = np.zeros(key.size, dtype=bool)
            first[np.unique(key.ravel(), return_index=True)[1]] = True  # a repeat within the round is rejected
            accept = ~_contains(blocked, key) & first.reshape(key.shape)
            rank = np.cumsum(accept, axis=1) + filled[rows][:, None]
            accept &= rank <= num_negatives
            r, c = np.nonzero(accept)
            out[u0 + rows[r], rank[r, c] - 1] = cand[r, c]
            blocked = np.sort(np.concatenate([blocked, key[r, c]]))  # repeats are harmless to the lookup
            filled[rows] = np.minimum(rank[:, -1], num_negatives)
        for row in np.flatnonzero(filled < num_negatives).tolist():  # users who saw almost every popular item
            have = out[u0 + row, :filled[row]]
            seen = np.concatenate([items[offsets[u0 + row]:offsets[u0 + row + 1]], have])
            rest = _keys_negatives(seen, np.array([0, len(seen)]), counts, num_negatives - int(filled[row]), rng)
            out[u0 + row, filled[row]:] = rest[0]
    return out


def _contains(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Which of ``keys`` are in the sorted array ``sorted_keys``."""
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[at] == keys if len(sorted_keys) else np.zeros(keys.shape, dtype=bool)


def _keys_negatives(items: np.ndarray, offsets: np.ndarray, counts: np.ndarray, num_negatives: int,
                    rng: np.random.Generator, chunk_elems: int = 500_000) -> np.ndarray:
    """The keys sampler: per user, the ``num_negatives`` unseen items of smallest ``Exp(1) / count``, smallest
    first; vectorised over chunks of users (``chunk_elems`` keys at a time)."""
    num_items = len(counts) - 1
    inv_w = (1.0 / np.asarray(counts[1:], dtype=np.float32)).astype(np.float32)
    n_users = len(offsets) - 1
    lengths = np.diff(offsets)
    out = np.empty((n_users, num_negatives), dtype=np.int32)
    rows_per_chunk = max(1, chunk_elems // max(num_items, 1))
    for u0 in range(0, n_users, rows_per_chunk):
        u1 = min(n_users, u0 + rows_per_chunk)
        m = u1 - u0
        keys = rng.standard_exponential((m, num_items), dtype=np.float32)
        keys *= inv_w
        seen = items[offsets[u0] : offsets[u1]].astype(np.int64) - 1
        keys[np.repeat(np.arange(m), lengths[u0:u1]), seen] = np.inf
        if num_negatives < num_items:
            idx = np.argpartition(keys, num_negatives - 1, axis=1)[:, :num_negatives]
        else:
            idx = np.broadcast_to(np.arange(num_items), (m, num_items)).copy()
        order = np.argsort(np.take_along_axis(keys, idx, axis=1), axis=1, kind="stable")
        out[u0:u1] = np.take_along_axis(idx, order, axis=1) + 1
    return out
