"""The session-based protocol (``gen_data_fin.py --split date``): sessions, a split by time, cleansing, and the
leakage audit.

1. Sessions (``--session_gap``): ``user`` -- each user's events in time order are one session (ties keep file
   order; the GRU4Rec notebook's choice) -- or a duration (``30m``, ``2h``, ``1d``, ``900s``): a new session starts
   after a gap longer than that between a user's consecutive events.
2. The split by time (``--date_rule``):

   * ``global`` (the default): two cut times -- ``--test_start`` / ``--valid_start`` dates, or the last
     ``--test_days`` of the data and the ``--valid_days`` before them. Every *event* goes to the part its own time
     falls in, so every validation and test event is later than every training event by construction; a session
     that crosses a cut is cut there.
   * ``session_end``: the notebook's rule, kept because it is what the notebook did: a whole session goes to the
     part its *last* event falls in. It leaks: on ML-100K 64 % of the test predictions precede the last training
     event (the audit below measures it for every dataset).
3. The training part is cleansed until nothing changes: items with fewer than ``min_item_count`` events, then
   sessions shorter than ``min_session_len``, removed again and again;
4. items are indexed on the cleansed training part only; validation and test lose the events of items unknown
   there (counted) and are cleansed the same way with a minimum count of 1 (too short pieces go, counted).

The audit (``stats.json["leakage"]``, printed): ``eval_targets_before_train_end`` (validation/test prediction
targets -- every event of an evaluation session but its first -- earlier than the last training event),
``eval_items_unseen_in_train`` (evaluation events removed because training never saw their item),
``users_in_train_and_test``.

Output: ``vocab.txt`` and ``item_counts.txt`` (training counts) as for leave-one-out data, and
``train_sessions.txt``, ``valid_sessions.txt``, ``test_sessions.txt``: ``user<TAB>items``, one session per
line (a user may have several), items in time order (the ``train_windows.txt`` format). The ``user item``
sequence file has no timestamps and is refused.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

import numpy as np

from bert4rec.data.interactions import Interactions
from bert4rec.errors import UserError
from bert4rec.instances import offsets_from_lengths

PARTS = ("train", "valid", "test")
DAY = 86400


@dataclass
class Events:
    """Events of one part, sorted by (user, time): session keys, users (codes / original ids), items, times."""

    sessions: np.ndarray
    items: np.ndarray
    times: np.ndarray
    users: np.ndarray

    def subset(self, keep: np.ndarray) -> Events:
        return Events(self.sessions[keep], self.items[keep], self.times[keep], self.users[keep])

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


GAP_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_gap(text: str) -> int | None:
    """Seconds of a ``--session_gap`` (``30m``, ``2h``, ``1d``, ``900s``, ``900``); None for ``user``."""
    if text == "user":
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip())
    if not match or float(match.group(1)) <= 0:
        raise UserError(f"--session_gap {text!r}: expected 'user' or a duration such as 30m, 2h, 1d or 900s")
    return round(float(match.group(1)) * GAP_UNITS[match.group(2) or "s"])


def session_keys(users: np.ndarray, times: np.ndarray, gap_ticks: int | None) -> np.ndarray:
    """Per event (sorted by user, time), its session: the user, or a new one after each gap > ``gap_ticks``."""
    if gap_ticks is None:
        return users
    new = np.ones(len(users), dtype=bool)
    new[1:] = (users[1:] != users[:-1]) | (np.diff(times) > gap_ticks)
    return np.cumsum(new) - 1


def split_by_date(events: Events, test_days: float, valid_days: float, ticks_per_second: int = 1
                  ) -> dict[str, Events]:
    """``session_end``: each session to the part its last event falls in: test = the last ``test_days`` days,
    validation the ``valid_days`` before, training the rest."""
    day = DAY * ticks_per_second
    _, inverse = np.unique(events.sessions, return_inverse=True)
    ends = np.zeros(inverse.max() + 1, dtype=np.int64)
    np.maximum.at(ends, inverse, events.times)
    end = events.times.max()
    part = np.where(ends > end - test_days * day, 2, np.where(ends > end - (test_days + valid_days) * day, 1, 0))
    return {name: events.subset(part[inverse] == i) for i, name in enumerate(PARTS)}


def cut_times(events: Events, test_days: float, valid_days: float, ticks_per_second: int,
              valid_start: str | None, test_start: str | None) -> tuple[int, int]:
    """The first tick of validation and of test (``global``): the given dates, else the last days of the data."""
    def at(date: str, flag: str) -> int:
        import pandas as pd

        try:
            stamp = pd.Timestamp(date)
            stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp
        except ValueError:
            raise UserError(f"{flag} {date!r}: not a date (e.g. 1998-03-01 or 1998-03-01T12:00)") from None
        return int(stamp.value // 10**9 * ticks_per_second)

    day = DAY * ticks_per_second
    end = int(events.times.max())
    test_cut = at(test_start, "--test_start") if test_start else int(end - test_days * day) + 1
    valid_cut = at(valid_start, "--valid_start") if valid_start else int(test_cut - valid_days * day)
    if valid_cut > test_cut:
        raise UserError(f"--valid_start must not be after --test_start ({valid_start or 'derived'} > "
                        f"{test_start or 'derived'})")
    return valid_cut, test_cut


def split_by_event_time(events: Events, valid_cut: int, test_cut: int) -> dict[str, Events]:
    """``global``: every event to the part of its own time; sessions crossing a cut are cut there."""
    part = np.where(events.times >= test_cut, 2, np.where(events.times >= valid_cut, 1, 0))
    return {name: events.subset(part == i) for i, name in enumerate(PARTS)}


def leakage_audit(train: Events, evaluation: dict[str, Events], unseen: int) -> dict:
    """The audit of the module docstring, on the final parts."""
    train_end = int(train.times.max())
    before, targets = {}, {}
    for name, e in evaluation.items():
        target = np.zeros(len(e), dtype=bool)
        target[1:] = e.sessions[1:] == e.sessions[:-1]  # every event of a session but its first
        before[name], targets[name] = int((target & (e.times < train_end)).sum()), int(target.sum())
    return {"eval_targets_before_train_end": sum(before.values()), "eval_targets": sum(targets.values()),
            "by_part": {name: {"targets": targets[name], "before_train_end": before[name]} for name in evaluation},
            "eval_items_unseen_in_train": int(unseen),
            "users_in_train_and_test": int(len(np.intersect1d(train.users, evaluation["test"].users)))}


def _day(t: int, ticks_per_second: int) -> str:
    return datetime.datetime.fromtimestamp(int(t) // ticks_per_second, tz=datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S")


def _describe(events: Events, ticks_per_second: int = 1) -> dict:
    if len(events) == 0:
        return {"events": 0, "sessions": 0, "items": 0, "first": None, "last": None}
    return {"events": len(events), "sessions": int(len(np.unique(events.sessions))),
            "items": int(len(np.unique(events.items))), "first": _day(events.times.min(), ticks_per_second),
            "last": _day(events.times.max(), ticks_per_second)}


@dataclass
class SessionData:
    """The three parts with items renumbered 1..N (training items, by first appearance)."""

    item_original: np.ndarray               # [N] original item id of item i+1
    parts: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # name -> (session ids, flat items, offsets)
    counts: np.ndarray                      # [N+1] training events per item
    stats: dict


def build_sessions(inter: Interactions, fmt: str, test_days: float, valid_days: float, min_session_len: int,
                   min_item_count: int, session_gap: str = "user", date_rule: str = "global",
                   valid_start: str | None = None, test_start: str | None = None) -> SessionData:
    """The whole protocol (steps 1-4 of the module docstring); a part left empty is a UserError."""
    if fmt == "seq" or not inter.has_time:
        raise UserError("--split date needs timestamps: the 'user item' sequence file has none (use ratings.dat, "
                        "u.data or ratings.csv, or --split loo)" if fmt == "seq" else
                        "--split date needs timestamps: the input has no time column (name it with --time_col, "
                        "or use --split loo)")
    scale = inter.time_scale
    order = np.lexsort((inter.times, inter.users))  # stable: ties keep file order
    users, times = inter.users[order], inter.times[order]
    gap = parse_gap(session_gap)
    events = Events(session_keys(users, times, None if gap is None else gap * scale), inter.items[order], times,
                    users)
    if date_rule == "session_end":
        parts = split_by_date(events, test_days, valid_days, scale)
        cuts = None
    else:
        cuts = cut_times(events, test_days, valid_days, scale, valid_start, test_start)
        parts = split_by_event_time(events, *cuts)
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
    unseen, dropped = 0, {}
    for name in ("valid", "test"):
        known = np.isin(parts[name].items, uniq)
        unseen += int((~known).sum())
        cleaned[name], _ = cleanse(parts[name].subset(known), min_session_len, 1)
        dropped[name] = int(known.sum()) - len(cleaned[name])
        if len(cleaned[name]) == 0:
            days = test_days if name == "test" else valid_days
            raise UserError(f"--split date: the {name} part is empty (no session of >= {min_session_len} known "
                            f"items in its {days:g} days); widen --{name}_days or use --split loo")
    out = {}
    for name, e in cleaned.items():
        # session keys grow with (user, time), so the sorted keys are the sessions in event order
        _, starts, lengths = np.unique(e.sessions, return_index=True, return_counts=True)
        items = new_id[np.searchsorted(uniq, e.items)]
        out[name] = (e.users[starts], items, offsets_from_lengths(lengths))  # users: ids, or codes of string ids
    counts = np.bincount(out["train"][1], minlength=len(item_original) + 1).astype(np.int64)
    audit = leakage_audit(train, {n: cleaned[n] for n in ("valid", "test")}, unseen)
    stats = {"parts": {name: _describe(e, scale) for name, e in cleaned.items()}, "parts_before_cleansing": raw,
             "cleansing_rounds_train": rounds, "num_items": len(item_original),
             "eval_events_dropped_in_short_pieces": dropped, "leakage": audit,
             "options": {"test_days": test_days, "valid_days": valid_days, "min_session_len": min_session_len,
                         "min_item_count": min_item_count, "session_gap": session_gap, "date_rule": date_rule,
                         "valid_start": valid_start, "test_start": test_start},
             "cut_times": None if cuts is None else {"valid_start": _day(cuts[0], scale),
                                                     "test_start": _day(cuts[1], scale)}}
    return SessionData(item_original, out, counts, stats)
