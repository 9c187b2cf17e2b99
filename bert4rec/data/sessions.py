"""The session-based protocol (``gen_data_fin.py --split date``), as the GRU4Rec notebook this project reproduces
prepared MovieLens:

1. each user's ratings in time order form one session (ties keep file order);
2. by date: sessions ending in the last ``test_days`` days are the test part, the ``valid_days`` days before
   them the validation part, everything earlier the training part (the end of the data is its last timestamp);
3. the training part is cleansed until nothing changes: items with fewer than ``min_item_count`` events, then
   sessions shorter than ``min_session_len``, removed again and again;
4. items are indexed on the cleansed training part only; validation and test lose the events of items unknown
   there and are cleansed the same way with a minimum count of 1 (only too short sessions go).

Output: ``vocab.txt`` and ``item_counts.txt`` (training counts) as for leave-one-out data, and
``train_sessions.txt``, ``valid_sessions.txt``, ``test_sessions.txt``: ``user<TAB>items``, one session per
line, items in time order (the ``train_windows.txt`` format). The ``user item`` sequence file has no
timestamps and is refused.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import numpy as np

from bert4rec.data.interactions import Interactions
from bert4rec.errors import UserError
from bert4rec.instances import offsets_from_lengths

PARTS = ("train", "valid", "test")
DAY = 86400


@dataclass
class Events:
    """Events of one part, sorted by (session, time): session ids (original user ids), items, times."""

    sessions: np.ndarray
    items: np.ndarray
    times: np.ndarray

    def subset(self, keep: np.ndarray) -> Events:
        return Events(self.sessions[keep], self.items[keep], self.times[keep])

    def __len__(self) -> int:
        return int(self.sessions.shape[0])


def cleanse(events: Events, min_session_len: int, min_item_count: int) -> tuple[Events, int]:
    """Remove rare items and short sessions until nothing changes; returns the events and the rounds it took."""
    rounds = 0
    while True:
        rounds += 1
        _, item_inverse, item_counts = np.unique(events.items, return_inverse=True, return_counts=True)
        keep = item_counts[item_inverse] >= min_item_count
        _, session_inverse, session_lengths = np.unique(events.sessions, return_inverse=True, return_counts=True)
        keep &= session_lengths[session_inverse] >= min_session_len
        if keep.all():
            return events, rounds
        events = events.subset(keep)
        if len(events) == 0:
            return events, rounds


def split_by_date(events: Events, test_days: float, valid_days: float, ticks_per_second: int = 1
                  ) -> dict[str, Events]:
    """Each session to the part its last event falls in: test = the last ``test_days`` days, validation the
    ``valid_days`` before, training the rest."""
    day = DAY * ticks_per_second
    _, inverse = np.unique(events.sessions, return_inverse=True)
    ends = np.zeros(inverse.max() + 1, dtype=np.int64)
    np.maximum.at(ends, inverse, events.times)
    end = events.times.max()
    part = np.where(ends > end - test_days * day, 2, np.where(ends > end - (test_days + valid_days) * day, 1, 0))
    return {name: events.subset(part[inverse] == i) for i, name in enumerate(PARTS)}


def _describe(events: Events, ticks_per_second: int = 1) -> dict:
    if len(events) == 0:
        return {"events": 0, "sessions": 0, "items": 0, "first": None, "last": None}

    def day(t: int) -> str:
        return datetime.datetime.fromtimestamp(int(t) // ticks_per_second, tz=datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M:%S")

    return {"events": len(events), "sessions": int(len(np.unique(events.sessions))),
            "items": int(len(np.unique(events.items))), "first": day(events.times.min()),
            "last": day(events.times.max())}


@dataclass
class SessionData:
    """The three parts with items renumbered 1..N (training items, by first appearance)."""

    item_original: np.ndarray               # [N] original item id of item i+1
    parts: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # name -> (session ids, flat items, offsets)
    counts: np.ndarray                      # [N+1] training events per item
    stats: dict


def build_sessions(inter: Interactions, fmt: str, test_days: float, valid_days: float, min_session_len: int,
                   min_item_count: int) -> SessionData:
    """The whole protocol (steps 1-4 of the module docstring); a part left empty is a UserError."""
    if fmt == "seq" or not inter.has_time:
        raise UserError("--split date needs timestamps: the 'user item' sequence file has none (use ratings.dat, "
                        "u.data or ratings.csv, or --split loo)" if fmt == "seq" else
                        "--split date needs timestamps: the input has no time column (name it with --time_col, "
                        "or use --split loo)")
    scale = inter.time_scale
    order = np.lexsort((inter.times, inter.users))  # stable: ties keep file order
    events = Events(inter.users[order], inter.items[order], inter.times[order])
    parts = split_by_date(events, test_days, valid_days, scale)
    raw = {name: _describe(e, scale) for name, e in parts.items()}
    train, rounds = cleanse(parts["train"], min_session_len, min_item_count)
    if len(train) == 0:
        raise UserError(f"--split date: no training session of >= {min_session_len} events survives the cleansing "
                        f"(items with >= {min_item_count} events); lower --min_item_count or the date windows")
    uniq, first = np.unique(train.items, return_index=True)  # the training items, sorted by original id
    by_first_use = np.argsort(first, kind="stable")
    item_original = uniq[by_first_use]  # ids 1..N in order of first appearance
    if inter.item_labels is not None:
        item_original = inter.item_labels[item_original]
    new_id = np.empty(len(uniq), dtype=np.int32)
    new_id[by_first_use] = np.arange(1, len(uniq) + 1, dtype=np.int32)  # uniq[j] -> its id
    cleaned = {"train": train}
    for name in ("valid", "test"):
        known = np.isin(parts[name].items, uniq)
        cleaned[name], _ = cleanse(parts[name].subset(known), min_session_len, 1)
        if len(cleaned[name]) == 0:
            days = test_days if name == "test" else valid_days
            raise UserError(f"--split date: the {name} part is empty (no session of >= {min_session_len} known "
                            f"items ends in its {days:g} days); widen --{name}_days or use --split loo")
    out = {}
    for name, e in cleaned.items():
        sessions, lengths = np.unique(e.sessions, return_counts=True)
        items = new_id[np.searchsorted(uniq, e.items)]
        out[name] = (sessions, items, offsets_from_lengths(lengths))
    counts = np.bincount(out["train"][1], minlength=len(item_original) + 1).astype(np.int64)
    stats = {"parts": {name: _describe(e, scale) for name, e in cleaned.items()}, "parts_before_cleansing": raw,
             "cleansing_rounds_train": rounds, "num_items": len(item_original),
             "options": {"test_days": test_days, "valid_days": valid_days, "min_session_len": min_session_len,
                         "min_item_count": min_item_count}}
    return SessionData(item_original, out, counts, stats)
