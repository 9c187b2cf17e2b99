"""From interactions to per-user sequences: k-core filter (rare items and short users, repeated until nothing
changes), chronological order, renumbering, the leave-one-out split, and the popularity-sampled negatives of the
evaluation sets.

Renumbering: users get ids ``1..U`` in increasing order of their original id (string ids: in natural order,
``bert4rec.data.tables``); items get ids ``1..N`` in order of
first appearance when reading users in that order, each user's items chronologically (on the SASRec
``ml-1m.txt`` both are the identity).

Split (``holdout``): ``valid_test`` -- test target = last item, validation target = second-to-last, training
sequence = all before those (users need >= 3 interactions); ``test`` -- the paper's protocol: train on all but
the last item, no validation set (users need >= 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bert4rec.data.arrays import first_positions, num_distinct, repeated_rows, stable_order, unique_inverse
from bert4rec.data.interactions import Interactions
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
    filter_rounds: int = 1
    times: np.ndarray | None = None  # flat time ticks aligned with ``items`` (None: the input has no time)

    @property
    def num_users(self) -> int:
        return len(self.user_original)

    @property
    def num_items(self) -> int:
        return len(self.item_original)


def duplicate_interactions(inter: Interactions) -> np.ndarray:
    """True for every interaction repeating an earlier line's (user, item, timestamp) exactly (the first stays);
    without a time column, an earlier line's (user, item)."""
    if inter.has_time:
        return repeated_rows([inter.users, inter.times, inter.items])
    return repeated_rows([inter.users, inter.items])


def min_user_length(holdout: str) -> int:
    """Interactions a user needs for the split: one training item plus the held-out targets."""
    return 3 if holdout == "valid_test" else 2


def k_core(users: np.ndarray, items: np.ndarray, min_item_count: int, min_length: int) -> tuple[np.ndarray, dict]:
    """Which interactions survive removing items with fewer than ``min_item_count`` interactions and users with
    fewer than ``min_length``, again and again until nothing changes (RecBole's ``item_inter_num_interval`` /
    ``user_inter_num_interval``); returns the mask and what each filter removed over all rounds."""
    _, user_code = unique_inverse(users)
    _, item_code = unique_inverse(items)
    keep = np.ones(len(users), dtype=bool)
    removed = {"rounds": 0, "interactions_removed_by_item_filter": 0, "items_removed_by_item_filter": 0,
               "interactions_removed_by_user_filter": 0, "users_removed_by_user_filter": 0}
    while True:
        removed["rounds"] += 1
        changed = False
        for code, minimum, what in ((item_code, min_item_count, "item"), (user_code, min_length, "user")):
            drop, groups = _below(code, keep, minimum)
            removed[f"interactions_removed_by_{what}_filter"] += int(drop.sum())
            removed[f"{what}s_removed_by_{what}_filter"] += groups
            keep &= ~drop
            changed |= bool(drop.any())
        if not changed:
            return keep, removed


def _below(codes: np.ndarray, keep: np.ndarray, minimum: int) -> tuple[np.ndarray, int]:
    """The kept rows whose code (item or user) has fewer than ``minimum`` kept rows, and how many codes that is."""
    counts = np.bincount(codes[keep], minlength=codes.max(initial=-1) + 1)
    short = (counts > 0) & (counts < minimum)
    return keep & short[codes], int(short.sum())


def build_sequences(inter: Interactions, min_item_count: int, min_length: int) -> SequenceData:
    """k-core filter (``k_core``), sort per user by time (stable), renumber; original ids as strings when the
    input had string ids (``inter.user_labels`` / ``item_labels``)."""
    n_raw = len(inter.users)
    keep, removed = k_core(inter.users, inter.items, min_item_count, min_length)
    if not keep.any():
        raise UserError(
            f"no user has the {min_length} interactions the split needs (after removing items with fewer than "
            f"{min_item_count} interactions and users with fewer than {min_length}, repeated until nothing changes; "
            f"{n_raw:,} interactions before): lower --min_item_count / --min_user_len"
        )
    users, items, times = inter.users[keep], inter.items[keep], inter.times[keep]
    order = stable_order(users, times)  # stable: ties keep file order
    users, items, times = users[order], items[order], times[order]
    user_original, user_code = unique_inverse(users)
    lengths = np.bincount(user_code, minlength=len(user_original))
    item_uniq, inv = unique_inverse(items)
    first_idx = first_positions(inv, len(item_uniq))
    rank = np.empty(len(item_uniq), dtype=np.int64)
    rank[np.argsort(first_idx, kind="stable")] = np.arange(len(item_uniq))
    new_items = (rank[inv] + 1).astype(np.int32)
    item_original = np.empty(len(item_uniq), dtype=np.int64)
    item_original[rank] = item_uniq
    if inter.item_labels is not None:
        item_original = inter.item_labels[item_original]
    if inter.user_labels is not None:
        user_original = inter.user_labels[user_original]
    counts = np.bincount(new_items, minlength=len(item_uniq) + 1).astype(np.int64)
    return SequenceData(
        user_original=user_original,
        item_original=item_original,
        items=new_items,
        offsets=offsets_from_lengths(lengths),
        counts=counts,
        num_raw_interactions=n_raw,
        num_raw_users=num_distinct(inter.users),
        num_raw_items=num_distinct(inter.items),
        removed_by_item_filter=removed["interactions_removed_by_item_filter"],
        items_removed_by_item_filter=removed["items_removed_by_item_filter"],
        dropped_short_users=removed["users_removed_by_user_filter"],
        dropped_short_interactions=removed["interactions_removed_by_user_filter"],
        filter_rounds=removed["rounds"],
        times=times if inter.has_time else None,
    )


def leave_one_out_leakage(seq: SequenceData, holdout: str) -> dict:
    """The leakage audit of leave-one-out data (``bert4rec.data.sessions``): held-out targets earlier than the
    last training event of any user (the split is per user, not by time; None without timestamps), targets whose
    item no training sequence has, users in training and test (all of them, by construction)."""
    held = 2 if holdout == "valid_test" else 1
    ends = seq.offsets[1:]
    is_target = np.zeros(len(seq.items), dtype=bool)
    for k in range(1, held + 1):
        is_target[ends - k] = True
    trained = np.zeros(seq.num_items + 1, dtype=bool)
    trained[seq.items[~is_target]] = True
    before = None
    if seq.times is not None:
        train_end = seq.times[~is_target].max(initial=np.iinfo(np.int64).min)
        before = int((seq.times[is_target] < train_end).sum())
    return {"eval_targets_before_train_end": before, "eval_targets": int(is_target.sum()),
            "eval_items_unseen_in_train": int((~trained[seq.items[is_target]]).sum()),
            "users_in_train_and_test": seq.num_users, "split": "leave-one-out (per user, not by time)"}


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
