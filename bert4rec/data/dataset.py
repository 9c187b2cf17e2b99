"""One generated dataset loaded for training and evaluation, every file checked against the vocabulary.

``load_training_data`` reads ``vocab.txt``, the shared training windows (``train_windows.txt``: every model's
training sequences) and the validation/test sets, and checks before any training starts that every item id is an
item of the vocabulary (a bad id is one ``error:`` line naming the file and line, not a crash mid-run). Data of
the session protocol (``gen_data_fin.py --split date``: ``train_sessions.txt`` ...) loads as ``SessionDataset``:
the same interface for the models (its training sessions cut into windows), evaluated at every event of every
validation/test session.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bert4rec.data.files import EvalSet, Vocab, Windows, load_eval_set, load_vocab, load_windows
from bert4rec.data.item_table import ITEM_TABLE_FILE, parse_item_table_file
from bert4rec.errors import UserError

SELECTION = {"loo": ("full", "NDCG@10"), "session": ("session", "MRR@20")}  # what validation chooses on


@dataclass
class TrainingData:
    vocab: Vocab
    windows: Windows        # the shared training sequences, cut into windows
    valid: EvalSet | None   # None: --holdout test data (the paper's protocol)
    test: EvalSet
    train_path: Path        # train.txt: BERT4Rec's fixed masked instances (read only when asked for)

    protocol = "loo"                      # leave-one-out: FULL and POP100 per user
    selection = SELECTION["loo"]

    @property
    def has_validation(self) -> bool:
        return self.valid is not None

    def evaluate(self, model, split: str, batch_size: int) -> dict:
        """{"pop100": metrics, "full": metrics, "seconds": s} on the validation or test users."""
        from bert4rec.evaluate import evaluate

        metrics = evaluate(model.predict, self.valid if split == "valid" else self.test, self.num_items,
                           batch_size)
        return {"pop100": metrics["pop100"], "full": metrics["full"], "seconds": metrics["seconds"]}

    def num_eval(self, split: str) -> int:
        return len(self.valid if split == "valid" else self.test)

    @property
    def features_path(self) -> Path:
        """item_features.txt (genres, decade per item) when gen_data_fin.py had MovieLens item metadata."""
        return self.train_path.with_name("item_features.txt")

    @property
    def item_table_path(self) -> Path:
        """item_features.tsv (any feature columns) when gen_data_fin.py had an item table."""
        return self.train_path.with_name(ITEM_TABLE_FILE)

    @property
    def has_fixed_features(self) -> bool:
        """The features are MovieLens genres and decades (fixed vocabularies), not an item table's columns."""
        return not self.item_table_path.is_file() and self.features_path.is_file()

    def item_features(self) -> dict[str, list[tuple[str, ...]]]:
        """Per feature, the values of every item id 0..N (item 0, [PAD]: none): an item table's columns, or
        ``genre`` and ``year`` from MovieLens metadata; a UserError when the data has neither."""
        if self.item_table_path.is_file():
            return parse_item_table_file(self.item_table_path, self.num_items)[1]
        if not self.features_path.is_file():
            raise UserError(f"{self.features_path}: not found; this model needs item features: generate the data "
                            "with item metadata (a GroupLens zip or folder, --item_meta with --item_id_map, or "
                            "--item_table)")
        genres: list[tuple[str, ...]] = [()] * (self.num_items + 1)
        decades: list[tuple[str, ...]] = [()] * (self.num_items + 1)
        for number, line in enumerate(self.features_path.read_text(encoding="utf-8").splitlines(), start=1):
            fields = line.split("\t")
            if len(fields) != 5 or not fields[0].isdigit() or not 1 <= int(fields[0]) <= self.num_items:
                raise UserError(f"{self.features_path}:{number}: expected item_id<TAB>original_id<TAB>genres<TAB>"
                                f"decade<TAB>title for an item 1..{self.num_items}")
            item = int(fields[0])
            genres[item] = tuple(fields[2].split("|"))
            decades[item] = (fields[3],)
        return {"genre": genres, "year": decades}

    @property
    def num_items(self) -> int:
        return self.vocab.num_items

    def training_sequences(self) -> tuple[np.ndarray, np.ndarray]:
        """Each user's whole training sequence (CSR ``items, offsets``): the history before the first held-out
        item, i.e. the validation histories (or the test histories when there is no validation set)."""
        held_out = self.valid if self.valid is not None else self.test
        return held_out.history, held_out.history_offsets

    def training_item_counts(self) -> np.ndarray:
        """Interactions per item in the training part only (index 0 = 0): never a validation or test target."""
        items, _ = self.training_sequences()
        return np.bincount(items, minlength=self.num_items + 1).astype(np.int64)


def check_item_ids(path: Path, values: np.ndarray, offsets: np.ndarray | None, num_items: int, what: str,
                   allowed_extra: int | None = None) -> None:
    """Every id in ``values`` must be an item ``1..num_items`` (or ``allowed_extra``, e.g. ``[MASK]``);
    otherwise a UserError names the file and the line (row ``i`` of ``offsets``, or value ``i``) of the first."""
    values = np.asarray(values)
    bad = (values < 1) | (values > num_items)
    if allowed_extra is not None:
        bad &= values != allowed_extra
    if not bad.any():
        return
    first = int(np.argmax(bad))
    line = first if offsets is None else int(np.searchsorted(offsets, first, side="right")) - 1
    raise UserError(f"{path}:{line + 1}: {what} {int(values[first])} is not an item of the vocabulary "
                    f"(1..{num_items}); regenerate the data or point --VOCAB_PATH at its vocab.txt")


def _checked_eval_set(path: Path, num_items: int) -> EvalSet:
    eval_set = load_eval_set(path)
    check_item_ids(path, eval_set.history, eval_set.history_offsets, num_items, "history item")
    check_item_ids(path, eval_set.targets, None, num_items, "target")
    k = eval_set.negatives.shape[1]
    check_item_ids(path, eval_set.negatives.ravel(), np.arange(0, eval_set.negatives.size + 1, k), num_items,
                   "negative")
    return eval_set


@dataclass
class SessionDataset(TrainingData):
    """The session protocol: whole training sessions (``sessions``; ``windows`` cuts them to the longest input),
    and validation/test sessions whose every next event is predicted from the events before it."""

    sessions: Windows | None = None
    valid_sessions: Windows | None = None
    test_sessions: Windows | None = None

    protocol = "session"
    selection = SELECTION["session"]

    @property
    def has_validation(self) -> bool:
        return True

    def evaluate(self, model, split: str, batch_size: int) -> dict:
        from bert4rec.evaluate import evaluate_sessions

        metrics = evaluate_sessions(model, self.valid_sessions if split == "valid" else self.test_sessions,
                                    self.num_items, batch_size)
        return {"session": metrics["session"], "seconds": metrics["seconds"]}

    def num_eval(self, split: str) -> int:
        return len(self.valid_sessions if split == "valid" else self.test_sessions)

    def training_sequences(self) -> tuple[np.ndarray, np.ndarray]:
        return self.sessions.items, self.sessions.offsets


def _checked_sessions(path: Path, num_items: int) -> Windows:
    sessions = load_windows(path)
    if len(sessions) == 0:
        raise UserError(f"{path}: no sessions")
    check_item_ids(path, sessions.items, sessions.offsets, num_items, "item")
    if int(sessions.lengths.min()) < 2:
        raise UserError(f"{path}:{int(np.argmin(sessions.lengths)) + 1}: a session needs at least 2 events")
    return sessions


def load_session_data(vocab_path: Path, train_path: Path, max_len: int) -> SessionDataset:
    """``train/valid/test_sessions.txt`` of ``--split date`` data, checked like the leave-one-out files."""
    from bert4rec.instances import build_windows

    vocab = load_vocab(vocab_path)
    parts = {name: _checked_sessions(train_path.with_name(f"{name}_sessions.txt"), vocab.num_items)
             for name in ("train", "valid", "test")}
    train = parts["train"]
    index, items, offsets = build_windows(train.items, train.offsets, max_len, max(1, max_len // 2))
    windows = Windows(train.users[index], items.astype(np.int32), offsets)
    return SessionDataset(vocab, windows, None, None, train_path, train, parts["valid"], parts["test"])


SESSION_TRAIN_FILE = "train_sessions.txt"  # what marks --split date data


def is_session_data(train_path: Path) -> bool:
    return Path(train_path).name == SESSION_TRAIN_FILE


def protocol_metrics(evaluation: dict) -> dict:
    """An ``evaluate`` result without its timing: the metrics of each protocol."""
    return {k: v for k, v in evaluation.items() if k != "seconds"}


def load_training_data(vocab_path: Path, train_path: Path, valid_path: Path | None, test_path: Path,
                       max_len: int) -> TrainingData:
    """Read and cross-check the generated files; every problem is a one-line UserError."""
    if is_session_data(train_path):
        return load_session_data(vocab_path, train_path, max_len)
    vocab = load_vocab(vocab_path)
    windows_path = train_path.with_name("train_windows.txt")
    windows = load_windows(windows_path)
    if len(windows) == 0:
        raise UserError(f"{windows_path}: no training windows")
    check_item_ids(windows_path, windows.items, windows.offsets, vocab.num_items, "item")
    longest = int(windows.lengths.max())
    if longest > max_len:
        raise UserError(f"{windows_path}: windows of length {longest} exceed --MAX_LEN {max_len} "
                        "(regenerate with a smaller --max_seq_length or raise --MAX_LEN)")
    valid = _checked_eval_set(valid_path, vocab.num_items) if valid_path is not None else None
    test = _checked_eval_set(test_path, vocab.num_items)
    return TrainingData(vocab, windows, valid, test, train_path)
