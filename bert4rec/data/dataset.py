"""One generated dataset loaded for training and evaluation, every file checked against the vocabulary.

``load_training_data`` reads ``vocab.txt``, the shared training windows (``train_windows.txt``: every model's
training sequences) and the validation/test sets, and checks before any training starts that every item id is an
item of the vocabulary (a bad id is one ``error:`` line naming the file and line, not a crash mid-run).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bert4rec.data.files import EvalSet, Vocab, Windows, load_eval_set, load_vocab, load_windows
from bert4rec.errors import UserError


@dataclass
class TrainingData:
    vocab: Vocab
    windows: Windows        # the shared training sequences, cut into windows
    valid: EvalSet | None   # None: --holdout test data (the paper's protocol)
    test: EvalSet
    train_path: Path        # train.txt: BERT4Rec's fixed masked instances (read only when asked for)

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


def load_training_data(vocab_path: Path, train_path: Path, valid_path: Path | None, test_path: Path,
                       max_len: int) -> TrainingData:
    """Read and cross-check the generated files; every problem is a one-line UserError."""
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
