"""The interactions every input format is parsed into (``bert4rec.data.raw``, ``bert4rec.data.tables``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Interactions:
    """Raw interactions in file order: user and item ids (or codes of string ids), and a time key each."""

    users: np.ndarray  # int64: the ids of the MovieLens / sequence formats, else codes into user_labels
    items: np.ndarray  # int64: the same for items
    times: np.ndarray  # int64 time ticks (time_scale per second), or line numbers when there is no time
    ratings: np.ndarray | None = None  # float64, when the input has ratings
    user_labels: np.ndarray | None = None  # the original (string) id of each user code; None: the ids are ints
    item_labels: np.ndarray | None = None
    time_scale: int = 1  # ticks per second; 0: no time (file order)

    def subset(self, keep: np.ndarray) -> Interactions:
        ratings = self.ratings[keep] if self.ratings is not None else None
        return Interactions(self.users[keep], self.items[keep], self.times[keep], ratings, self.user_labels,
                            self.item_labels, self.time_scale)

    def __len__(self) -> int:
        return int(len(self.users))

    @property
    def has_time(self) -> bool:
        return self.time_scale > 0
