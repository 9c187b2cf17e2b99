"""From interactions to per-user sequences: rare-item filter, chronological order, renumbering, the
leave-one-out split, and the popularity-sampled negatives of the evaluation sets.

Renumbering: users get ids ``1..U`` in increasing order of their original id; items get ids ``1..N`` in order of
first appearance when reading users in that order, each user's items chronologically (on the SASRec
``ml-1m.txt`` both are the identity).

Split (``holdout``): ``valid_test`` -- test target = last item, validation target = second-to-last, training
sequence = all before those (users need >= 3 interactions); ``test`` -- the paper's protocol: train on all but
the last item, no validation set (users need >= 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bert4rec.data.raw import Interactions
from bert4rec.errors import UserError
from bert4rec.instances import offsets_from_lengths, ragged_gather

HOLDOUTS = ("valid_test", "test")


@dataclass
class SequenceData:
    """Per-user chronological item sequences after filtering and renumbering (ids 1..U, 1..N)."""

    user_original: np.ndarray  # [U] original user id of user u+1
    item_original: np.ndarray  # [N] original item id of item i+1
    items: np.ndarray  # flat int32 item ids, users 1..U in order
    offsets: np.ndarray  # [U+1] int64
    counts: np.ndarray  # [N+1] int64 interactions per item (index 0 = 0)
    num_raw_interactions: int
    num_raw_users: int
    num_raw_items: int
    removed_by_item_filter: int
    items_removed_by_item_filter: int
    dropped_short_users: int
    dropped_short_interactions: int

    @property
    def num_users(self) -> int:
        return len(self.user_original)

    @property
    def num_items(self) -> int:
        return len(self.item_original)


def duplicate_interactions(inter: Interactions) -> np.ndarray:
    """True for every interaction repeating an earlier line's (user, item, timestamp) exactly (the first stays)."""
    order = np.lexsort((np.arange(len(inter.users)), inter.times, inter.items, inter.users))
    u, i, t = inter.users[order], inter.items[order], inter.times[order]
    repeat = np.zeros(len(order), dtype=bool)
    repeat[1:] = (u[1:] == u[:-1]) & (i[1:] == i[:-1]) & (t[1:] == t[:-1])
    out = np.zeros(len(order), dtype=bool)
    out[order] = repeat
    return out


def min_user_length(holdout: str) -> int:
    """Interactions a user needs for the split: one training item plus the held-out targets."""
    return 3 if holdout == "valid_test" else 2


def build_sequences(inter: Interactions, min_item_count: int, min_length: int) -> SequenceData:
    """Filter rare items (one pass), sort per user by time (stable), drop short users, renumber."""
    n_raw = len(inter.users)
    uniq_items, item_inv = np.unique(inter.items, return_inverse=True)
    item_counts = np.bincount(item_inv)
    keep = item_counts[item_inv] >= min_item_count
    users, items, times = inter.users[keep], inter.items[keep], inter.times[keep]
    removed = n_raw - len(users)
    order = np.lexsort((times, users))  # lexsort is stable: ties keep file order
    users, items = users[order], items[order]
    uniq_users, user_start, user_len = np.unique(users, return_index=True, return_counts=True)
    long_enough = user_len >= min_length
    dropped_users = int((~long_enough).sum())
    dropped_inter = int(user_len[~long_enough].sum())
    if not long_enough.any():
        raise UserError(
            f"no user has the {min_length} interactions the split needs "
            f"(after removing items with fewer than {min_item_count} interactions)"
        )
    kept = np.repeat(long_enough, user_len)
    items = items[kept]
    user_original = uniq_users[long_enough]
    lengths = user_len[long_enough]
    item_uniq, first_idx, inv = np.unique(items, return_index=True, return_inverse=True)
    rank = np.empty(len(item_uniq), dtype=np.int64)
    rank[np.argsort(first_idx, kind="stable")] = np.arange(len(item_uniq))
    new_items = (rank[inv] + 1).astype(np.int32)
    item_original = np.empty(len(item_uniq), dtype=np.int64)
    item_original[rank] = item_uniq
    counts = np.bincount(new_items, minlength=len(item_uniq) + 1).astype(np.int64)
    return SequenceData(
        user_original=user_original,
        item_original=item_original,
        items=new_items,
        offsets=offsets_from_lengths(lengths),
        counts=counts,
        num_raw_interactions=n_raw,
        num_raw_users=int(len(np.unique(inter.users))),
        num_raw_items=int(len(uniq_items)),
        removed_by_item_filter=int(removed),
        items_removed_by_item_filter=int((item_counts < min_item_count).sum()),
        dropped_short_users=dropped_users,
        dropped_short_interactions=dropped_inter,
    )


def drop_last(items: np.ndarray, offsets: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Every sequence without its last ``n`` items (CSR in, CSR out)."""
    lengths = np.maximum(np.diff(offsets) - n, 0)
    return ragged_gather(items, offsets[:-1], lengths), offsets_from_lengths(lengths)


def split_leave_one_out(
    seq: SequenceData, holdout: str
) -> tuple[tuple[np.ndarray, np.ndarray], dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Training sequences and evaluation ``{name: (history, history_offsets, targets)}``."""
    ends = seq.offsets[1:]
    test = (*drop_last(seq.items, seq.offsets, 1), seq.items[ends - 1])
    if holdout == "test":
        return (test[0], test[1]), {"test": test}
    valid = (*drop_last(seq.items, seq.offsets, 2), seq.items[ends - 2])
    return (valid[0], valid[1]), {"valid": valid, "test": test}


def sample_popular_negatives(
    items: np.ndarray,
    offsets: np.ndarray,
    counts: np.ndarray,
    num_negatives: int,
    rng: np.random.Generator,
    user_labels: np.ndarray | None = None,
    chunk_elems: int = 500_000,
) -> np.ndarray:
    """For each user, ``num_negatives`` distinct items not in that user's items, drawn by popularity.

    ``items``/``offsets``: every item of every user (CSR); ``counts``: ``[N+1]`` weights, index 0
    unused. Sampling is without replacement with probability proportional to ``counts`` among the
    items the user never touched (Efraimidis-Spirakis keys ``Exp(1) / count``, smallest first), i.e.
    successive popularity draws rejecting seen and repeated items, as the original evaluation did.
    Returns ``[U, num_negatives]`` int32 in sampling order. Vectorised over chunks of users.
    """
    num_items = len(counts) - 1
    weights = np.asarray(counts[1:], dtype=np.float32)
    if (weights <= 0).any():
        raise ValueError("every item needs a positive count")
    inv_w = (1.0 / weights).astype(np.float32)
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
        rows = np.repeat(np.arange(m), lengths[u0:u1])
        keys[rows, seen] = np.inf
        allowed = np.isfinite(keys).sum(axis=1)
        short = np.flatnonzero(allowed < num_negatives)
        if len(short):
            i = int(short[0])
            who = user_labels[u0 + i] if user_labels is not None else u0 + i + 1
            raise UserError(
                f"user {who} has interacted with {num_items - int(allowed[i])} of the {num_items} items; "
                f"fewer than --num_negatives {num_negatives} remain to sample negatives from"
            )
        if num_negatives < num_items:
            idx = np.argpartition(keys, num_negatives - 1, axis=1)[:, :num_negatives]
        else:
            idx = np.broadcast_to(np.arange(num_items), (m, num_items)).copy()
        order = np.argsort(np.take_along_axis(keys, idx, axis=1), axis=1, kind="stable")
        out[u0:u1] = np.take_along_axis(idx, order, axis=1) + 1
    return out

