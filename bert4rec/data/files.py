"""The generated files: vectorised writers, and loaders that check every line and name the first bad one.

Output files (all UTF-8 text, ``\\t`` between fields, single spaces inside list fields, ``\\n`` line
ends; item ids everywhere are token ids ``1..N``):

``vocab.txt``
    ``token_id<TAB>token<TAB>original_id``; line i is token id i: 0 ``[PAD]`` (original id ``-``),
    ``1..N`` the items (token = the id as a string, original_id = the item id in the input file),
    ``N+1`` ``[MASK]``, ``N+2`` ``[UNK]``, ``N+3`` ``[RESERVED]`` (original ids ``-``).
    ``vocab_size = N + 4``.
``users.txt``
    ``user_id<TAB>original_user_id``, users ``1..U`` in order.
``item_counts.txt``
    ``item_id<TAB>count`` for items ``1..N``: interactions over the whole (filtered) dataset.
``train.txt``
    ``user<TAB>input_ids<TAB>masked_positions<TAB>masked_labels``: one masked training instance per
    line. ``input_ids`` is the window after masking (``[MASK]`` = ``N+1``), ``masked_positions`` are
    0-based indices into it, increasing, and ``masked_labels`` the original items there. Order: window by
    window (users in order, each user's windows by increasing start), each window's ``dupe_factor``
    random maskings followed by its copy with only the last item masked.
``train_windows.txt``
    ``user<TAB>items``: the unmasked training windows in the same order (for re-masking every epoch).
``valid.txt`` (``--holdout valid_test`` only) and ``test.txt``
    ``user<TAB>history<TAB>target<TAB>negatives``: one line per user, sorted by user. ``history`` is the
    whole chronological history before ``target`` (not truncated); ``negatives`` are ``num_negatives``
    distinct items the user never interacted with, sampled by popularity (``item_counts.txt``) from
    ``eval_seed``, in sampling order.
``stats.json``

Loaders (``load_train_instances``, ``load_windows``, ``load_eval_set``, ``load_vocab``, ``load_item_counts``)
parse the files vectorised and raise ``UserError`` naming file and line on malformed input.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bert4rec.errors import UserError
from bert4rec.fileio import read_bytes
from bert4rec.instances import TrainInstances, offsets_from_lengths, ragged_index

SPECIAL_TOKENS = ("[MASK]", "[UNK]", "[RESERVED]")
PAD_TOKEN = "[PAD]"


def items_in_vocab(vocab_size: int) -> int:
    """Items 1..N of a vocabulary of ``vocab_size`` tokens (``[PAD]``, the items, then the special tokens)."""
    return vocab_size - 1 - len(SPECIAL_TOKENS)


@dataclass
class Windows:
    """Training windows (``train_windows.txt``): per window its user, and the items in CSR layout."""

    users: np.ndarray    # [W] int32
    items: np.ndarray    # flat int32 item ids
    offsets: np.ndarray  # [W+1] int64

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def __iter__(self):  # ``users, items, offsets = load_windows(path)``
        return iter((self.users, self.items, self.offsets))

    def window(self, i: int) -> np.ndarray:
        return self.items[self.offsets[i] : self.offsets[i + 1]]


@dataclass
class EvalSet:
    """Validation or test set: per user the full history, the target and the sampled negatives."""

    users: np.ndarray  # [U] int32
    history: np.ndarray  # flat int32, chronological
    history_offsets: np.ndarray  # [U+1] int64
    targets: np.ndarray  # [U] int32
    negatives: np.ndarray  # [U, num_negatives] int32

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def user_history(self, i: int) -> np.ndarray:
        """History of the i-th user of the set."""
        return self.history[self.history_offsets[i] : self.history_offsets[i + 1]]


@dataclass
class Vocab:
    """Token vocabulary: ``[PAD]`` = 0, items ``1..num_items``, then ``[MASK]``, ``[UNK]``, ``[RESERVED]``."""

    size: int
    num_items: int
    pad_id: int
    mask_id: int
    original_ids: list[str]  # per token id; "-" for special tokens
    tokens: list[str] = field(default_factory=list)  # per token id



_POW10 = 10 ** np.arange(19, dtype=np.int64)


def ints_to_text(values: np.ndarray, seps: np.ndarray) -> bytes:
    """Decimal text of non-negative ``values``, each followed by its byte in ``seps`` (vectorised).

    Digits go right-aligned into a ``[width + 1, n]`` byte matrix (last row: the separator), with zero
    bytes for leading positions; transposed to row-major order, the zero bytes are dropped.
    """
    values = np.asarray(values)
    n = len(values)
    if n == 0:
        return b""
    if values.min() < 0:
        raise ValueError("only non-negative integers can be written")
    top = int(values.max())
    width = len(str(top))
    work = values.astype(np.int32 if top <= _INT32_MAX else np.int64)
    mat = np.empty((width + 1, n), dtype=np.uint8)
    mat[width] = seps
    for j in range(width - 1, -1, -1):
        q = work // 10
        digit = (work - q * 10).astype(np.uint8)
        digit += 48
        if j < width - 1:
            digit *= work != 0  # leading position: zero byte
        mat[j] = digit
        work = q
    flat = np.ascontiguousarray(mat.T).ravel()
    return flat[flat != 0].tobytes()


Field = tuple[np.ndarray, np.ndarray | None]  # (values, offsets or None for one value per row)


def encode_rows(fields: Sequence[Field], start: int = 0, stop: int | None = None) -> bytes:
    """Lines ``start..stop`` of a table whose columns are scalar or ragged (CSR) integer fields.

    Fields are separated by tabs, list items by single spaces. Ragged fields must be non-empty.
    """
    first_vals, first_off = fields[0]
    nrows_total = len(first_vals) if first_off is None else len(first_off) - 1
    stop = nrows_total if stop is None else stop
    nrows = stop - start
    if nrows <= 0:
        return b""
    counts = []
    parts = []
    for values, offsets in fields:
        if offsets is None:
            counts.append(np.ones(nrows, dtype=np.int64))
            parts.append(np.asarray(values[start:stop], dtype=np.int64))
        else:
            lo, hi = int(offsets[start]), int(offsets[stop])
            c = np.diff(offsets[start : stop + 1])
            if (c < 1).any():
                raise ValueError("ragged fields must be non-empty")
            counts.append(c)
            parts.append(np.asarray(values[lo:hi], dtype=np.int64))
    row_total = np.sum(counts, axis=0)
    row_start = np.cumsum(row_total) - row_total
    total = int(row_total.sum())
    vals = np.empty(total, dtype=np.int64)
    seps = np.full(total, ord(" "), dtype=np.uint8)
    col = np.zeros(nrows, dtype=np.int64)
    for f, (c, part) in enumerate(zip(counts, parts, strict=True)):
        dest_start = row_start + col
        vals[ragged_index(dest_start, c)] = part
        seps[dest_start + c - 1] = ord("\n") if f == len(fields) - 1 else ord("\t")
        col += c
    return ints_to_text(vals, seps)


def write_rows(
    path: Path,
    fields: Sequence[Field],
    chunk_tokens: int = 1_000_000,
    progress: Callable[[int], object] | None = None,
) -> None:
    """Write a table (see ``encode_rows``) in chunks of about ``chunk_tokens`` numbers."""
    first_vals, first_off = fields[0]
    nrows = len(first_vals) if first_off is None else len(first_off) - 1
    per_row = np.zeros(nrows, dtype=np.int64)
    for _values, offsets in fields:
        per_row += 1 if offsets is None else np.diff(offsets)
    cum = np.cumsum(per_row)
    with open(path, "wb") as out:
        start = 0
        while start < nrows:
            base = int(cum[start - 1]) if start else 0
            stop = int(np.searchsorted(cum, base + chunk_tokens, side="right"))
            stop = min(nrows, max(stop, start + 1))
            out.write(encode_rows(fields, start, stop))
            if progress is not None:
                progress(stop - start)
            start = stop


def write_users(path: Path, user_original: np.ndarray) -> None:
    """``users.txt``: ``user_id<TAB>original_id`` for users 1..U (original ids may be strings)."""
    lines = [f"{u}\t{orig}\n" for u, orig in enumerate(np.asarray(user_original).tolist(), start=1)]
    Path(path).write_text("".join(lines), encoding="utf-8")


def write_vocab(path: Path, item_original: np.ndarray) -> None:
    """``vocab.txt``: ``token_id<TAB>token<TAB>original_id`` (see module docstring)."""
    n = len(item_original)
    lines = [f"0\t{PAD_TOKEN}\t-"]
    lines += [f"{i}\t{i}\t{orig}" for i, orig in enumerate(item_original.tolist(), start=1)]
    lines += [f"{n + 1 + j}\t{tok}\t-" for j, tok in enumerate(SPECIAL_TOKENS)]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")




_PARSE_CHUNK_BYTES = 1 << 20
_INT32_MAX = int(np.iinfo(np.int32).max)


@dataclass
class _IntRows:
    """An integer table read by ``_read_int_rows``: per field, the flat values of every line."""

    fields: list[np.ndarray]  # per field: int64 values of all lines, in order
    counts: np.ndarray  # [rows, nfields] values per field per line

    def offsets(self, f: int) -> np.ndarray:
        return offsets_from_lengths(self.counts[:, f])


def _parse_chunk(
    arr: np.ndarray, nfields: int, path: Path, line0: int, what: str
) -> tuple[list[np.ndarray], np.ndarray]:
    """Parse whole lines ``arr`` (bytes ending in a newline) starting at file line ``line0 + 1``."""

    def fail(pos: int, message: str) -> UserError:
        line = line0 + int(np.count_nonzero(arr[:pos] == 10)) + 1
        return UserError(f"{path}:{line}: {message} (expected {what})")

    digit = arr - np.uint8(48)  # wraps around for bytes below '0'
    is_sep = (arr == 32) | (arr == 9) | (arr == 10)
    ok = (digit < 10) | is_sep
    if not ok.all():
        pos = int(np.argmin(ok))
        raise fail(pos, f"unexpected character {chr(arr[pos])!r}")
    doubled = is_sep[1:] & is_sep[:-1]
    if is_sep[0] or doubled.any():
        pos = 0 if is_sep[0] else int(np.argmax(doubled)) + 1
        raise fail(pos, "empty line or field, or extra whitespace")
    sep_pos = np.flatnonzero(is_sep)
    tok_len = np.diff(sep_pos, prepend=-1) - 1
    longest = int(tok_len.max())
    if longest > 18:
        raise fail(int(sep_pos[np.argmax(tok_len > 18)]), "number too large")
    values = digit[sep_pos - 1].astype(np.int64)
    for j in range(1, longest):
        idx = np.maximum(sep_pos - 1 - j, 0)
        values += digit[idx] * (tok_len > j) * _POW10[j]
    sep_chars = arr[sep_pos]
    field_end = sep_chars != 32
    ends = np.flatnonzero(field_end)  # token index ending each field
    line_end_field = np.flatnonzero(sep_chars[ends] == 10)
    fields_per_line = np.diff(line_end_field, prepend=-1)
    wrong = np.flatnonzero(fields_per_line != nfields)
    if len(wrong):
        line_start_tok = int(ends[line_end_field[wrong[0] - 1]]) + 1 if wrong[0] else 0
        found = int(fields_per_line[wrong[0]])
        raise fail(int(sep_pos[line_start_tok]), f"expected {nfields} tab-separated fields, found {found}")
    counts = np.diff(ends, prepend=-1).reshape(-1, nfields)
    if nfields == 1:
        return [values], counts
    field_of_token = (np.cumsum(field_end) - field_end) % nfields
    return [values[field_of_token == f] for f in range(nfields)], counts


def _read_int_rows(path: str | os.PathLike, nfields: int, what: str) -> _IntRows:
    """Parse a table of non-negative integers: ``nfields`` tab-separated fields per line, lists inside a
    field separated by single spaces. Vectorised, in chunks of whole lines; ``UserError`` names the file
    and line of the first malformed line."""
    path = Path(path)
    data = read_bytes(path)
    if not data or data.isspace():
        raise UserError(f"{path}: file is empty (expected {what})")
    if not data.endswith(b"\n"):
        data += b"\n"
    parts: list[list[np.ndarray]] = [[] for _ in range(nfields)]
    all_counts: list[np.ndarray] = []
    start, lines = 0, 0
    while start < len(data):
        stop = data.find(b"\n", start + _PARSE_CHUNK_BYTES) + 1 or len(data)
        arr = np.frombuffer(data, dtype=np.uint8, count=stop - start, offset=start)
        fields, counts = _parse_chunk(arr, nfields, path, lines, what)
        for f, vals in enumerate(fields):
            if len(vals) and vals.max() > _INT32_MAX:
                i = int(np.argmax(vals > _INT32_MAX))
                row = int(np.searchsorted(np.cumsum(counts[:, f]), i, side="right"))
                raise UserError(f"{path}:{lines + row + 1}: number too large (expected {what})")
        for f in range(nfields):
            parts[f].append(fields[f].astype(np.int32))
        all_counts.append(counts)
        lines += len(counts)
        start = stop
    return _IntRows(
        fields=[np.concatenate(p) for p in parts],
        counts=np.concatenate(all_counts),
    )


def _first_bad_line(path: Path, bad_rows: np.ndarray, message: str) -> None:
    bad_rows = np.flatnonzero(bad_rows)
    if len(bad_rows):
        raise UserError(f"{path}:{int(bad_rows[0]) + 1}: {message}")


def _single(path: Path, rows: _IntRows, f: int, name: str) -> np.ndarray:
    _first_bad_line(path, rows.counts[:, f] != 1, f"the {name} field must be a single number")
    return rows.fields[f]


def load_train_instances(path: str | os.PathLike) -> TrainInstances:
    """Load ``train.txt`` (``user<TAB>input_ids<TAB>masked_positions<TAB>masked_labels``)."""
    path = Path(path)
    rows = _read_int_rows(path, 4, "user<TAB>input_ids<TAB>masked_positions<TAB>masked_labels")
    users = _single(path, rows, 0, "user")
    counts = rows.counts
    _first_bad_line(path, counts[:, 2] != counts[:, 3], "masked_positions and masked_labels differ in length")
    positions = rows.fields[2]
    mask_offsets = rows.offsets(2)
    inst_of_mask = np.repeat(np.arange(len(users)), counts[:, 2])
    outside = positions >= counts[inst_of_mask, 1]
    _first_bad_line(path, np.bincount(inst_of_mask[outside], minlength=len(users)) > 0,
                    "masked position outside the input")  # fmt: skip
    inner = np.ones(len(positions), dtype=bool)
    inner[mask_offsets[:-1][counts[:, 2] > 0]] = False  # an instance's first position has no predecessor
    not_increasing = inner & (np.diff(positions, prepend=-1) <= 0)
    _first_bad_line(path, np.bincount(inst_of_mask[not_increasing], minlength=len(users)) > 0,
                    "masked positions must be strictly increasing")  # fmt: skip
    return TrainInstances(
        users=users,
        tokens=rows.fields[1],
        token_offsets=rows.offsets(1),
        positions=positions,
        labels=rows.fields[3],
        mask_offsets=mask_offsets,
    )


def load_windows(path: str | os.PathLike) -> Windows:
    """Load ``train_windows.txt``; returns ``Windows(users [W], flat items, offsets [W+1])``."""
    path = Path(path)
    rows = _read_int_rows(path, 2, "user<TAB>items")
    return Windows(_single(path, rows, 0, "user"), rows.fields[1], rows.offsets(1))


def load_eval_set(path: str | os.PathLike) -> EvalSet:
    """Load ``valid.txt`` / ``test.txt`` (``user<TAB>history<TAB>target<TAB>negatives``)."""
    path = Path(path)
    rows = _read_int_rows(path, 4, "user<TAB>history<TAB>target<TAB>negatives")
    users = _single(path, rows, 0, "user")
    targets = _single(path, rows, 2, "target")
    k = int(rows.counts[0, 3])
    _first_bad_line(path, rows.counts[:, 3] != k, f"expected {k} negatives like the first line")
    return EvalSet(
        users=users,
        history=rows.fields[1],
        history_offsets=rows.offsets(1),
        targets=targets,
        negatives=rows.fields[3].reshape(len(users), k),
    )


def load_vocab(path: str | os.PathLike) -> Vocab:
    """Load ``vocab.txt`` and check its layout (``[PAD]``, items, ``[MASK]``, ``[UNK]``, ``[RESERVED]``)."""
    path = Path(path)
    text = read_bytes(path).decode("utf-8", errors="replace")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise UserError(f"{path}: file is empty (expected token_id<TAB>token<TAB>original_id)")
    tokens: list[str] = []
    originals: list[str] = []
    for i, line in enumerate(lines):
        parts = line.split("\t")
        if len(parts) != 3:
            raise UserError(
                f"{path}:{i + 1}: expected 3 tab-separated fields (token_id, token, original_id), "
                f"found {len(parts)}"
            )
        if parts[0] != str(i):
            raise UserError(f"{path}:{i + 1}: token id must be {i} (line number - 1), found {parts[0]!r}")
        tokens.append(parts[1])
        originals.append(parts[2])
    n = len(tokens) - 1 - len(SPECIAL_TOKENS)
    if n < 1 or tokens[0] != PAD_TOKEN or tuple(tokens[n + 1 :]) != SPECIAL_TOKENS:
        raise UserError(
            f"{path}: expected [PAD] on line 1, items, then {', '.join(SPECIAL_TOKENS)} on the last 3 lines"
        )
    for i in range(1, n + 1):
        if tokens[i] != str(i):
            raise UserError(f"{path}:{i + 1}: item token must be {i}, found {tokens[i]!r}")
    return Vocab(
        size=len(tokens),
        num_items=n,
        pad_id=0,
        mask_id=n + 1,
        original_ids=originals,
        tokens=tokens,
    )


def load_item_counts(path: str | os.PathLike) -> np.ndarray:
    """Load ``item_counts.txt``; returns int64 counts indexed by item id (index 0 = 0)."""
    path = Path(path)
    rows = _read_int_rows(path, 2, "item_id<TAB>count")
    items = _single(path, rows, 0, "item_id")
    counts = _single(path, rows, 1, "count")
    _first_bad_line(path, items != np.arange(1, len(items) + 1), "item ids must be 1, 2, 3, ... in order")
    return np.concatenate([[0], counts]).astype(np.int64)

