"""A finished training run, loaded for use: the model with its selected weights, and the data it was trained on.

A run folder (``--CHECKPOINTS``) holds ``results.json`` (the options, hence the data files), ``best.pdparams``
(the weights chosen on validation; ``last.pdparams`` when the run had no validation set) and the event log.
``load_run`` rebuilds any model of the project from it through the shared model contract, so recommending,
reporting and exporting work the same for every model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bert4rec.checkpoint import load_checkpoint, restore
from bert4rec.data.dataset import TrainingData, load_training_data
from bert4rec.data.files import EvalSet, Vocab, load_eval_set, load_vocab
from bert4rec.data.item_table import ITEM_TABLE_FILE, parse_item_table_file
from bert4rec.data.tables import OWN_ID_FORMATS
from bert4rec.errors import UserError
from bert4rec.models import SequentialRecommender, build_model, config_from_dict


@dataclass
class Catalogue:
    """How items and users are named: original ids (MovieLens ids when the generator knew them, else the input's
    own ids, strings or not) and titles."""

    item_original: list[str]         # per item id 0..N ("-" for [PAD])
    user_original: list[str]         # per user id 0..U ("-" for the unused 0)
    titles: dict[int, tuple[str, str]]  # item id -> (title, genres), when item_features.txt exists
    ids_are: str                     # what the original ids are, for the output
    titles_from: str | None          # where the titles come from
    movielens: bool = False          # the ids are MovieLens movie / user ids

    @property
    def noun(self) -> str:
        return "movie" if self.movielens else "item"

    @property
    def user_ids_are(self) -> str:
        return self.ids_are.replace("MovieLens ids", "MovieLens user ids")

    def original_item_lookup(self) -> dict[str, int]:
        return {original: item for item, original in enumerate(self.item_original) if item > 0}

    def user_lookup(self) -> dict[str, int]:
        return {original: user for user, original in enumerate(self.user_original) if user > 0}


@dataclass
class TrainedRun:
    path: Path
    results: dict
    model: SequentialRecommender
    data_dir: Path
    vocab: Vocab
    checkpoint: Path

    def test_set(self) -> EvalSet:
        """Every user's whole known sequence: the test histories (which end with the validation target)."""
        return load_eval_set(self.data_dir / "test.txt")

    def training_data(self) -> TrainingData:
        """The run's generated files as it used them (the file names of its options, in ``data_dir``)."""
        options = self.results["options"]

        def path(key: str) -> Path | None:
            return self.data_dir / Path(options[key]).name if options.get(key) else None

        return load_training_data(self.data_dir / "vocab.txt", path("train_path"), path("valid_path"),
                                  path("test_path"), int(options.get("max_len", 200)))

    def catalogue(self) -> Catalogue:
        return read_catalogue(self.data_dir, self.vocab)


def read_catalogue(data_dir: Path, vocab: Vocab) -> Catalogue:
    users_path = data_dir / "users.txt"
    rows = [line.split("\t") for line in users_path.read_text(encoding="utf-8").splitlines() if line]
    user_original = ["-"] * (len(rows) + 1)
    for row in rows:
        user_original[int(row[0])] = row[1]
    stats = _read_json(data_dir / "stats.json") or {}
    ids = stats.get("ids_and_metadata") or {}
    titles: dict[int, tuple[str, str]] = {}
    features = data_dir / "item_features.txt"
    table = data_dir / ITEM_TABLE_FILE
    if table.is_file():
        names, values = parse_item_table_file(table, vocab.num_items)
        first = next(iter(values.values()), None)
        titles = {item: (title, "|".join(first[item]) if first else "") for item, title in enumerate(names)
                  if item and (title or (first and first[item]))}
    elif features.is_file():
        for line in features.read_text(encoding="utf-8").splitlines():
            item, _original, genres, _decade, title = line.split("\t")
            titles[int(item)] = (title, genres)
    movielens = stats.get("format") in ("ml-1m", "ml-100k", "ml-20m") or "original ids from" in ids.get("item_ids", "")
    own = "the ids of the input file" + ("" if stats.get("format") in OWN_ID_FORMATS else
                                         " (no id map given to gen_data_fin.py)")
    ids_are = "MovieLens ids" if movielens else own
    return Catalogue(vocab.original_ids[: vocab.num_items + 1], user_original, titles, ids_are,
                     (ids.get("item_meta") or (ids.get("item_table") or {}).get("item_table")) if titles else None,
                     movielens)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def load_run(run_dir: Path, data_dir: Path | None = None, kernels: str = "auto") -> TrainedRun:
    """The model of a finished run with its selected weights; ``data_dir`` overrides where its data is."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"--CHECKPOINTS {run_dir}: no such run folder")
    results = _read_json(run_dir / "results.json")
    if results is None:
        raise UserError(f"--CHECKPOINTS {run_dir}: no results.json (not a finished training run)")
    checkpoint = run_dir / "best.pdparams"
    if not checkpoint.is_file():
        checkpoint = run_dir / "last.pdparams"
    payload = load_checkpoint(checkpoint)
    config = config_from_dict(payload["config"], str(checkpoint))
    if results.get("model", config.MODEL) != config.MODEL:
        raise UserError(f"{checkpoint}: a {config.MODEL} checkpoint, but {run_dir / 'results.json'} describes a "
                        f"{results.get('model')} run; the run folder was mixed up")
    options = results.get("options") or {}
    data_dir = Path(data_dir) if data_dir is not None else Path(options.get("vocab_path", "vocab.txt")).parent
    vocab_path = data_dir / "vocab.txt"
    if not vocab_path.is_file():
        raise UserError(f"{vocab_path}: the run's data is not there any more; pass --DATA_DIR with the data it "
                        "was trained on")
    vocab = load_vocab(vocab_path)
    if config.vocab_size != vocab.size:
        raise UserError(f"{vocab_path}: {vocab.size} tokens, but the run's model has {config.vocab_size}: not the "
                        "data it was trained on")
    model = build_model(config, kernels=kernels, max_len=int(options.get("max_len", 200)))
    restore(payload, model, rng=False)
    model.eval()
    return TrainedRun(run_dir, results, model, data_dir, vocab, checkpoint)


def top_k(scores: np.ndarray, seen: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best items per row of ``scores`` [B, N + 1], never column 0 nor an item of ``seen[row]``; equal
    scores rank the smaller item id first. Returns (items [B, k], scores [B, k]); a row with fewer than ``k``
    items left is padded with item 0 and score -inf."""
    rows, n = scores.shape
    k = min(k, n - 1)
    block = max(1, min(1024, n // (4 * k))) if k * 8 < n else 0  # a large catalogue: blocks, no sort
    masked = np.full((rows, -(-n // block) * block if block else n), -np.inf, dtype=np.float32)
    masked[:, 1:n] = scores[:, 1:]
    for row, items in enumerate(seen):
        masked[row, np.asarray(items, dtype=np.int64)] = -np.inf
    if block:
        items, best = _top_k_by_blocks(masked.reshape(rows, -1, block), k)
    else:
        items = np.argsort(-masked, axis=1, kind="stable")[:, :k]
        best = np.take_along_axis(masked, items, axis=1)
    items[~np.isfinite(best)] = 0
    return items, best


def _top_k_by_blocks(blocks: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``top_k``'s order in time linear in the catalogue, from scores cut into blocks [B, blocks, size]: k blocks
    whose maxima are at least a row's k-th best block maximum hold k scores that high, so only the blocks
    reaching that bound can hold the top k; their scores at or above it (ties at the boundary included, so the
    smaller ids among them win) are sorted by (-score, id). A block holding a NaN is always searched."""
    n_rows, _, size = blocks.shape
    maxima = blocks.max(axis=2)
    has_nan = np.isnan(maxima)
    bound = -np.partition(-np.where(has_nan, -np.inf, maxima), k - 1, axis=1)[:, k - 1]
    r, b = np.nonzero((maxima >= bound[:, None]) | has_nan)
    values = blocks[r, b]                                        # [candidate blocks, size]
    cr, cc = np.nonzero(values >= bound[r][:, None])
    rows, cols, values = r[cr], b[cr] * size + cc, values[cr, cc]
    order = np.lexsort((cols, -values, rows))
    rows, cols, values = rows[order], cols[order], values[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, np.arange(n_rows))[rows]
    keep = rank < k
    items = np.zeros((n_rows, k), dtype=np.int64)
    best = np.full((n_rows, k), -np.inf, dtype=np.float32)
    items[rows[keep], rank[keep]] = cols[keep]
    best[rows[keep], rank[keep]] = values[keep]
    return items, best
