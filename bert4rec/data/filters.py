"""Filters applied to the interactions before the split, each counted in ``stats.json`` under ``"filters"``
(interactions, users and items before and after) and printed:

1. ``--min_rating``: keep interactions rated at least this (implicit feedback from explicit ratings);
2. ``--drop_duplicates``: drop lines repeating an earlier (user, item, timestamp) -- (user, item) without a time;
3. the k-core filter of ``bert4rec.data.split.k_core`` (``--min_item_count``, ``--min_user_len``), recorded by the
   generator after it ran.

A filter that leaves nothing is one ``error:`` line naming it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bert4rec.data.arrays import num_distinct
from bert4rec.data.interactions import Interactions
from bert4rec.data.split import duplicate_interactions
from bert4rec.errors import UserError


def counts(inter: Interactions) -> dict[str, int]:
    return {"interactions": len(inter), "users": num_distinct(inter.users), "items": num_distinct(inter.items)}


def record(name: str, before: dict[str, int], after: dict[str, int], **extra) -> dict:
    return {"filter": name, "before": before, "after": after, **extra}


def describe(entry: dict) -> str:
    b, a = entry["before"], entry["after"]
    return (f"filter {entry['filter']}: {b['interactions']:,} -> {a['interactions']:,} interactions, "
            f"{b['users']:,} -> {a['users']:,} users, {b['items']:,} -> {a['items']:,} items")


def filter_by_rating(inter: Interactions, min_rating: float, label: str) -> Interactions:
    if inter.ratings is None:
        raise UserError(f"--min_rating {min_rating:g}: {label} has no rating column (name it with --rating_col)")
    kept = inter.subset(inter.ratings >= min_rating)
    if len(kept) == 0:
        raise UserError(f"--min_rating {min_rating:g} removed every interaction of {label} (its highest rating is "
                        f"{inter.ratings.max():g})")
    return kept


def row_filters(inter: Interactions, label: str, min_rating: float | None, drop_duplicates: bool,
                find_duplicates: bool, log: Callable[[str], object]) -> tuple[Interactions, list[dict], int]:
    """Filters 1 and 2; returns the interactions left, their records and the number of duplicate lines."""
    records: list[dict] = []
    if min_rating is not None:
        before = counts(inter)
        inter = filter_by_rating(inter, min_rating, label)
        records.append(record(f"min_rating >= {min_rating:g}", before, counts(inter)))
        log(describe(records[-1]))
    duplicates = duplicate_interactions(inter) if find_duplicates else np.zeros(len(inter), dtype=bool)
    num_duplicates = int(duplicates.sum())
    if num_duplicates:
        key = "(user, item, timestamp)" if inter.has_time else "(user, item)"
        if drop_duplicates:
            before = counts(inter)
            inter = inter.subset(~duplicates)
            records.append(record("drop_duplicates", before, counts(inter)))
            log(describe(records[-1]))
        else:
            log(f"warning: {label}: {num_duplicates:,} lines repeat an earlier {key} (kept as separate "
                "interactions; --drop_duplicates drops them)")
    return inter, records, num_duplicates
