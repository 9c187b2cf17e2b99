"""Recommendations from a trained run, named by the input's own ids: the one implementation behind
``recommend.py`` and the Python API's ``Run.recommend``.

A known user's whole history (training, validation and test items) is never recommended; a new user's history is
given as original item ids, oldest first. Equal scores rank the smaller item id first (``top_k``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from bert4rec.batches import scoring_rows
from bert4rec.data.files import EvalSet
from bert4rec.errors import UserError
from bert4rec.trained import Catalogue, TrainedRun, top_k

BATCH = 256


def _plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"


def user_rows(run: TrainedRun, catalogue: Catalogue, users: Sequence[object], flag: str = "users") -> list[int]:
    """Rows of the test set (every user's known sequence) for original user ids; unknown ids are one error."""
    index = catalogue.user_lookup()
    wanted = [str(u) for u in users]
    unknown = [u for u in wanted if u not in index]
    if unknown:
        raise UserError(f"{flag} {', '.join(unknown[:5])}: no such {_plural(len(unknown), 'user')} in "
                        f"{run.data_dir / 'users.txt'} (users are named by {catalogue.user_ids_are})")
    return [index[u] - 1 for u in wanted]


def history_items(catalogue: Catalogue, histories: Sequence[Sequence[object]], flag: str = "histories"
                  ) -> list[list[int]]:
    """Model item ids of histories given as original item ids; unknown ids or an empty history are one error."""
    lookup = catalogue.original_item_lookup()
    out = []
    for history in histories:
        given = [str(x) for x in history]
        if not given:
            raise UserError(f"{flag}: give at least one {catalogue.noun} id per history")
        unknown = [x for x in given if x not in lookup]
        if unknown:
            raise UserError(f"{flag}: unknown {catalogue.noun} {_plural(len(unknown), 'id')} "
                            f"{', '.join(unknown[:5])} (not among the {len(lookup):,} items of the training data; "
                            f"ids are {catalogue.ids_are})")
        out.append([lookup[x] for x in given])
    return out


def known_histories(test: EvalSet, rows: Sequence[int]) -> list[np.ndarray]:
    """Everything each user of ``rows`` (rows of the test set) is known to have seen: test history and target."""
    return [np.append(test.user_history(r), test.targets[r]) for r in rows]


def ranked(run: TrainedRun, histories: Sequence[Sequence[int]], k: int
           ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(rows, items [B, k], scores [B, k]) per batch of histories, each history excluded from its row; batches
    hold histories of similar length (each padded only to its own longest), as in the evaluation loop."""
    size = scoring_rows(BATCH, run.model.num_items)
    order = np.argsort([len(h) for h in histories], kind="stable")
    for start in range(0, len(histories), size):
        rows = order[start:start + size]
        batch = [histories[i] for i in rows]
        items, scores = top_k(run.model.predict(batch), batch, k)
        yield rows, items, scores


def recommendations(run: TrainedRun, users: Sequence[object] | None = None,
                    histories: Sequence[Sequence[object]] | None = None, k: int = 10, progress: bool | None = None,
                    flags: tuple[str, str] = ("users", "histories")):
    """Top-``k`` items as a DataFrame ``user, rank, item, score`` (+ ``title`` when the data has titles): for known
    users (``users``, original ids; every user when both are None) or for new ``histories`` (original item ids;
    ``user`` is then the history's position)."""
    import pandas as pd
    from tqdm import tqdm

    if users is not None and histories is not None:
        raise UserError("give users or histories, not both")
    if k < 1:
        raise UserError(f"k must be >= 1, got {k}")
    catalogue = run.catalogue()
    if histories is not None:
        seen = history_items(catalogue, histories, flags[1])
        labels: list[object] = list(range(len(seen)))
    else:
        test = run.test_set()
        rows = list(range(len(test))) if users is None else user_rows(run, catalogue, users, flags[0])
        seen = known_histories(test, rows)
        labels = [catalogue.user_original[int(test.users[r])] for r in rows]
    items = np.zeros((len(seen), k), dtype=np.int64)
    scores = np.zeros((len(seen), k), dtype=np.float32)
    with tqdm(total=len(seen), desc="recommending", unit="user", disable=(not progress) if progress is not None
              else None) as bar:
        for rows, batch_items, batch_scores in ranked(run, seen, k):
            width = batch_items.shape[1]  # k, or fewer when the catalogue is smaller
            items[rows, :width], scores[rows, :width] = batch_items, batch_scores
            bar.update(len(rows))
    row, col = np.nonzero(items > 0)  # padding (item 0) only ever follows the real items of a row
    frame = pd.DataFrame({"user": np.asarray(labels, dtype=object)[row], "rank": col + 1,
                          "item": np.asarray(catalogue.item_original, dtype=object)[items[row, col]],
                          "score": scores[row, col].astype(np.float64)})
    if catalogue.titles:
        lookup = catalogue.original_item_lookup()
        frame["title"] = [catalogue.titles.get(lookup[i], ("", ""))[0] for i in frame["item"]]
    return frame
