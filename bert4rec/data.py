"""BERT4Rec data: raw MovieLens / sequence files in, plain-text training and evaluation files out.

Pipeline (``generate_dataset``): read ratings (GroupLens ML-1M ``ratings.dat``, ML-100K ``u.data``,
ML-20M ``ratings.csv`` -- each as published, zipped or unpacked -- or the SASRec/BERT4Rec sequence
file ``user item`` per line), treat every rating as an interaction, sort each user's interactions by
timestamp (stable: ties keep file order; the sequence format's order is its line order), drop items
with fewer than ``min_item_count`` interactions (one pass, counted over all interactions), drop users
too short to split, renumber, split leave-one-out, cut training windows and mask them
(``bert4rec.instances``), sample popularity negatives for evaluation, and write everything atomically.

Renumbering: users get ids ``1..U`` in increasing order of their original id; items get ids ``1..N``
in order of first appearance when reading users in that order, each user's items chronologically
(on the SASRec ``ml-1m.txt`` both are the identity).

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
    Counts, sequence-length statistics, options, detected format, input path and sha256, timings.

Split (``holdout``): ``valid_test`` -- test target = last item, validation target = second-to-last,
training sequence = all before those (users need >= 3 interactions); ``test`` -- the paper's protocol:
train on all but the last item, no validation set (users need >= 2). Shorter users are dropped and
counted in ``stats.json`` (``dropped_short_users``).

Loaders (``load_train_instances``, ``load_windows``, ``load_eval_set``, ``load_vocab``,
``load_item_counts``) parse the files vectorised and raise ``UserError`` naming file and line on
malformed input.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bert4rec.errors import EnvironmentFailure, UserError, os_failure
from bert4rec.fileio import atomic_dir, atomic_path, current_umask
from bert4rec.instances import (
    TrainInstances,
    generate_instances,
    length_stats,
    offsets_from_lengths,
    ragged_gather,
    ragged_index,
    sliding_step,
)

__all__ = [
    "EvalSet",
    "GenerateOptions",
    "TrainInstances",
    "Vocab",
    "generate_dataset",
    "load_eval_set",
    "load_item_counts",
    "load_train_instances",
    "load_vocab",
    "load_windows",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
GENERATOR_VERSION = 1

FORMATS = ("auto", "ml-1m", "ml-100k", "ml-20m", "seq")
HOLDOUTS = ("valid_test", "test")
DEFAULT_DOWNLOAD_URL = "https://files.grouplens.org/datasets/movielens/"
DOWNLOAD_URL_ENV = "BERT4REC_DOWNLOAD_URL"
# md5 sums published by GroupLens next to the archives.
DOWNLOAD_MD5 = {
    "ml-1m": "c4d9eecfca2ab87c1945afe126590906",
    "ml-100k": "0e33842e24a9c977be4e0107933c0723",
    "ml-20m": "cd245b17a1ae2cc31bb14903e1204af3",
}
# ratings file name inside the GroupLens archives -> format
RATINGS_FILES = {"ratings.dat": "ml-1m", "u.data": "ml-100k", "ratings.csv": "ml-20m"}
FORMAT_RATINGS_FILE = {fmt: name for name, fmt in RATINGS_FILES.items()}

SPECIAL_TOKENS = ("[MASK]", "[UNK]", "[RESERVED]")
PAD_TOKEN = "[PAD]"


# --------------------------------------------------------------------------------------------------
# Public data classes
# --------------------------------------------------------------------------------------------------


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


@dataclass
class GenerateOptions:
    """Options of ``generate_dataset`` (the CLI flags of ``bert_train/gen_data_fin.py``)."""

    raw_path: Path | None = None
    data_name: str = "ml-1m"
    format: str = "auto"
    output_dir: Path | None = None  # default: <repo>/data/<data_name>
    raw_dir: Path | None = None  # default: <repo>/data/raw (download cache)
    download_url: str | None = None  # default: $BERT4REC_DOWNLOAD_URL or GroupLens
    download_md5: str | None = None  # default: the md5 GroupLens publishes
    min_item_count: int = 5
    holdout: str = "valid_test"
    max_seq_length: int = 200
    prop_sliding_window: float = 0.5
    dupe_factor: int = 10
    max_predictions_per_seq: int = 40
    masked_lm_prob: float = 0.2
    mask_prob: float = 1.0
    random_seed: int = 12345
    eval_seed: int = 98765
    num_negatives: int = 100
    force: bool = False

    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else REPO_ROOT / "data" / self.data_name

    def resolved_raw_dir(self) -> Path:
        return Path(self.raw_dir) if self.raw_dir else REPO_ROOT / "data" / "raw"

    def generation_options(self) -> dict:
        """Options that determine the output (compared to decide whether a re-run is a no-op)."""
        keys = (
            "format",
            "min_item_count",
            "holdout",
            "max_seq_length",
            "prop_sliding_window",
            "dupe_factor",
            "max_predictions_per_seq",
            "masked_lm_prob",
            "mask_prob",
            "random_seed",
            "eval_seed",
            "num_negatives",
        )
        return {k: getattr(self, k) for k in keys}

    def validate(self) -> None:
        """Raise ``UserError`` naming the first option whose value is out of range."""

        def bad(option: str, requirement: str) -> UserError:
            return UserError(f"--{option} {requirement}, got {getattr(self, option)!r}")

        def finite(value: float) -> bool:
            return isinstance(value, int | float) and math.isfinite(value)

        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.data_name or ""):
            raise bad("data_name", "must be a plain name (letters, digits, '.', '_', '-')")
        if self.format not in FORMATS:
            raise bad("format", f"must be one of {', '.join(FORMATS)}")
        if self.holdout not in HOLDOUTS:
            raise bad("holdout", f"must be one of {', '.join(HOLDOUTS)}")
        if self.min_item_count < 1:
            raise bad("min_item_count", "must be >= 1")
        if self.max_seq_length < 2:
            raise bad("max_seq_length", "must be >= 2")
        if self.dupe_factor < 0:
            raise bad("dupe_factor", "must be >= 0")
        if self.max_predictions_per_seq < 1:
            raise bad("max_predictions_per_seq", "must be >= 1")
        if not finite(self.masked_lm_prob) or not 0 < self.masked_lm_prob <= 1:
            raise bad("masked_lm_prob", "must be in (0, 1]")
        if not finite(self.mask_prob) or not 0 <= self.mask_prob <= 1:
            raise bad("mask_prob", "must be in [0, 1]")
        p = self.prop_sliding_window
        if not finite(p) or not (p == -1 or 0 < p <= 1):
            raise bad("prop_sliding_window", "must be in (0, 1], or -1 for no sliding")
        if sliding_step(self.max_seq_length, p) < 1:
            raise bad(
                "prop_sliding_window",
                f"times --max_seq_length {self.max_seq_length} must give a step of at least 1 item",
            )
        for seed in ("random_seed", "eval_seed"):
            if not 0 <= getattr(self, seed) < 2**63:
                raise bad(seed, "must be a non-negative integer")
        if self.num_negatives < 1:
            raise bad("num_negatives", "must be >= 1")
        if self.download_md5 is not None and not re.fullmatch(r"[0-9a-fA-F]{32}", self.download_md5):
            raise bad("download_md5", "must be 32 hex digits")


# --------------------------------------------------------------------------------------------------
# Raw input: locating, downloading, reading
# --------------------------------------------------------------------------------------------------


@dataclass
class RawInput:
    """Bytes of a ratings / sequence file and where they came from."""

    data: bytes
    label: str  # for messages: the file, or "archive.zip:member"
    path: Path  # the file or zip given
    member: str | None  # member of the zip, or the file inside a folder
    format: str  # detected or forced format


def download_file(url: str, dest: Path, md5: str | None = None, progress: bool | None = None) -> Path:
    """Download ``url`` to ``dest`` atomically with a tqdm bar; verify ``md5`` when given.

    Raises ``UserError`` (one line naming the URL and where to put the file by hand) on any failure;
    nothing is left at ``dest`` then.
    """
    from tqdm import tqdm

    dest = Path(dest)
    created_dir = not dest.parent.exists()
    hint = f"download it by hand and put it at {dest} (or pass --raw_path)"
    try:
        with atomic_path(dest) as tmp:
            digest = hashlib.md5()
            try:
                with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
                    total = response.headers.get("Content-Length")
                    with tqdm(
                        total=int(total) if total and total.isdigit() else None,
                        unit="B",
                        unit_scale=True,
                        desc=f"download {dest.name}",
                        disable=(not progress) if progress is not None else None,
                    ) as bar:
                        while True:
                            chunk = response.read(1 << 20)
                            if not chunk:
                                break
                            out.write(chunk)
                            digest.update(chunk)
                            bar.update(len(chunk))
            except (urllib.error.URLError, OSError, ValueError) as err:
                reason = getattr(err, "reason", None) or err
                raise UserError(f"download of {url} failed ({reason}); {hint}") from None
            got = digest.hexdigest()
            if md5 is not None and got.lower() != md5.lower():
                raise UserError(
                    f"download of {url} failed: md5 {got} does not match the expected {md5.lower()} "
                    f"(discarded); {hint}"
                )
    except UserError:
        if created_dir:
            try:
                dest.parent.rmdir()
            except OSError:
                pass
        raise
    return dest


def resolve_raw_path(opts: GenerateOptions, progress: bool | None = None, log: Callable = print) -> Path:
    """The raw input to read: ``--raw_path``, else the cache in ``raw_dir``, else a fresh download."""
    if opts.raw_path is not None:
        path = Path(opts.raw_path)
        if not path.exists():
            raise UserError(f"{path}: no such file or directory (--raw_path)")
        return path
    if opts.data_name not in DOWNLOAD_MD5:
        known = ", ".join(DOWNLOAD_MD5)
        raise UserError(
            f"no --raw_path given and --data_name {opts.data_name} is not a downloadable dataset "
            f"({known}); pass --raw_path"
        )
    raw_dir = opts.resolved_raw_dir()
    for candidate in (raw_dir / opts.data_name, raw_dir / f"{opts.data_name}.zip"):
        if candidate.exists():
            return candidate
    base = opts.download_url or os.environ.get(DOWNLOAD_URL_ENV) or DEFAULT_DOWNLOAD_URL
    url = base.rstrip("/") + f"/{opts.data_name}.zip"
    dest = raw_dir / f"{opts.data_name}.zip"
    log(f"downloading {url} -> {dest}")
    return download_file(url, dest, md5=opts.download_md5 or DOWNLOAD_MD5[opts.data_name], progress=progress)


def detect_format(data: bytes, label: str) -> str:
    """Format of a ratings / sequence file from its first line."""
    first = data.split(b"\n", 1)[0].rstrip(b"\r")
    if b"::" in first:
        return "ml-1m"
    if b"," in first:
        return "ml-20m"
    if b"\t" in first:
        return "ml-100k"
    if re.fullmatch(rb"\d+ \d+", first):
        return "seq"
    shown = first[:60].decode("latin-1")
    raise UserError(
        f"{label}:1: cannot detect the format from {shown!r}; expected 'user::item::rating::time' "
        "(ml-1m), tab-separated u.data (ml-100k), ratings.csv (ml-20m) or 'user item' (seq); "
        "pass --format"
    )


def _pick_member(names: Sequence[str], fmt: str) -> str | None:
    """The ratings file among ``names`` (paths) for ``fmt`` ('auto': any known one), shallowest first."""
    wanted = [FORMAT_RATINGS_FILE[fmt]] if fmt in FORMAT_RATINGS_FILE else list(RATINGS_FILES)
    found = [n for n in names if n.rsplit("/", 1)[-1] in wanted and not n.rsplit("/", 1)[-1].startswith(".")]
    found = [n for n in found if "__MACOSX" not in n]
    if not found:
        return None
    return min(found, key=lambda n: (n.count("/"), wanted.index(n.rsplit("/", 1)[-1]), n))


def read_raw(path: Path, fmt: str = "auto") -> RawInput:
    """Read the ratings bytes from a zip, a folder or a file and settle the format."""
    path = Path(path)
    if fmt == "seq" and (path.is_dir() or zipfile.is_zipfile(path)):
        raise UserError(f"{path}: --format seq needs the sequence file itself, not a folder or zip")
    wanted = FORMAT_RATINGS_FILE.get(fmt, " / ".join(RATINGS_FILES))
    if path.is_dir():
        names = [p.relative_to(path).as_posix() for p in path.glob("*")] + [
            p.relative_to(path).as_posix() for p in path.glob("*/*")
        ]
        member = _pick_member(names, fmt)
        if member is None:
            raise UserError(f"{path}: no ratings file ({wanted}) in this folder")
        file = path / member
        label = str(file)
        data = _read_bytes(file)
    elif zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                member = _pick_member(zf.namelist(), fmt)
                if member is None:
                    raise UserError(f"{path}: no ratings file ({wanted}) in this zip")
                data = zf.read(member)
        except (zipfile.BadZipFile, OSError, EOFError, zipfile.LargeZipFile) as err:
            raise UserError(f"{path}: cannot read the zip ({err})") from None
        label = f"{path}:{member}"
    elif path.is_file():
        if path.suffix.lower() == ".zip":
            raise UserError(f"{path}: not a valid zip file")
        member = None
        label = str(path)
        data = _read_bytes(path)
    else:
        raise UserError(f"{path}: no such file or directory")
    if not data or data.isspace():
        raise UserError(f"{label}: file is empty")
    if fmt == "auto":
        if member is not None:
            fmt = RATINGS_FILES[member.rsplit("/", 1)[-1]]
        else:
            fmt = detect_format(data, label)
    return RawInput(data=data, label=label, path=path, member=member, format=fmt)


def _read_bytes(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file or directory") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected a file") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror or err})") from None


# --------------------------------------------------------------------------------------------------
# Parsing raw formats
# --------------------------------------------------------------------------------------------------

# format -> (separator, column names, float columns, has header)
_RAW_LAYOUT: dict[str, tuple[bytes, tuple[str, ...], tuple[int, ...], bool]] = {
    "ml-1m": (b"::", ("user", "item", "rating", "timestamp"), (), False),
    "ml-100k": (b"\t", ("user", "item", "rating", "timestamp"), (), False),
    "ml-20m": (b",", ("user", "item", "rating", "timestamp"), (2,), True),
    "seq": (b" ", ("user", "item"), (), False),
}
_SEP_NAMES = {b"::": "'::'", b"\t": "tabs", b",": "commas", b" ": "single spaces"}
_INT_RE = re.compile(r"\d{1,18}")
_FLOAT_RE = re.compile(r"(?=.*\d)\d*\.?\d*")


@dataclass
class Interactions:
    """Raw interactions in file order: original user and item ids, and a time key per interaction."""

    users: np.ndarray  # int64
    items: np.ndarray  # int64
    times: np.ndarray  # int64 (timestamps, or line numbers for the sequence format)


def parse_interactions(raw: RawInput) -> Interactions:
    """Parse the raw bytes in ``raw.format``; ``UserError`` with file:line on the first bad line."""
    sep, cols, float_cols, header = _RAW_LAYOUT[raw.format]
    table = _parse_table(raw.data, raw.label, sep, cols, float_cols, header)
    users = table[:, 0]
    items = table[:, 1]
    times = table[:, 3] if raw.format != "seq" else np.arange(len(table), dtype=np.int64)
    return Interactions(users=np.ascontiguousarray(users), items=np.ascontiguousarray(items), times=times)


def _normalise_text(data: bytes) -> bytes:
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
    data = data.rstrip(b"\n")
    return data + b"\n"


def _parse_table(
    data: bytes,
    label: str,
    sep: bytes,
    cols: tuple[str, ...],
    float_cols: tuple[int, ...],
    header: bool,
) -> np.ndarray:
    """Parse a separated table of non-negative numbers into an int64 array ``[rows, len(cols)]``.

    A vectorised fast path accepts strictly well-formed input; anything else goes through a line-by-line
    reference parser that either accepts it too or names the first bad line.
    """
    data = _normalise_text(data)
    first_line = 1
    if header:
        head, _, data = data.partition(b"\n")
        first_line = 2
        fields = head.decode("latin-1").split(sep.decode())
        if len(fields) != len(cols) or any(f.strip().isdigit() for f in fields):
            raise UserError(
                f"{label}:1: expected a header line of {len(cols)} column names separated by "
                f"{_SEP_NAMES[sep]} (e.g. userId,movieId,rating,timestamp), found {head[:60]!r}"
            )
        if not data:
            raise UserError(f"{label}: no data lines after the header")
    table = _parse_table_chunked(data, sep, len(cols), float_cols)
    if table is None:
        table = _parse_table_slow(data, label, sep, cols, float_cols, first_line)
    return table


def _parse_table_chunked(
    data: bytes, sep: bytes, ncols: int, float_cols: tuple[int, ...], chunk_bytes: int = 1 << 22
) -> np.ndarray | None:
    """``_parse_table_fast`` over chunks of whole lines (bounded temporaries); None if any chunk fails."""
    parts = []
    start = 0
    while start < len(data):
        stop = data.find(b"\n", start + chunk_bytes) + 1 or len(data)
        part = _parse_table_fast(data[start:stop], sep, ncols, float_cols)
        if part is None:
            return None
        parts.append(part)
        start = stop
    return np.concatenate(parts)


def _parse_table_fast(data: bytes, sep: bytes, ncols: int, float_cols: tuple[int, ...]) -> np.ndarray | None:
    if sep != b" ":
        if b" " in data:
            return None
        data = data.replace(sep, b" ")
    arr = np.frombuffer(data, dtype=np.uint8)
    allowed = np.zeros(256, dtype=bool)
    allowed[ord("0") : ord("9") + 1] = True
    allowed[[ord(" "), ord("\n")]] = True
    if float_cols:
        allowed[ord(".")] = True
    if not allowed[arr].all():
        return None
    is_sep = (arr == 32) | (arr == 10)
    if is_sep[0] or (is_sep[1:] & is_sep[:-1]).any():
        return None  # empty field or empty line
    newlines = np.flatnonzero(arr == 10)
    spaces = np.flatnonzero(arr == 32)
    nrows = len(newlines)
    per_line = np.bincount(np.searchsorted(newlines, spaces), minlength=nrows)
    if len(per_line) != nrows or (per_line != ncols - 1).any():
        return None
    token_len = np.diff(np.flatnonzero(is_sep), prepend=-1) - 1
    if token_len.max() > 18:
        return None
    if float_cols:
        dots = np.flatnonzero(arr == 46)
        # column of each dot: separators before it minus separators before its line start
        line_of_dot = np.searchsorted(newlines, dots)
        line_start = np.where(line_of_dot > 0, newlines[line_of_dot - 1] + 1, 0)
        col = np.searchsorted(spaces, dots) - np.searchsorted(spaces, line_start)
        if not np.isin(col, float_cols).all():
            return None
        try:
            values = np.fromstring(data, dtype=np.float64, sep=" ")
        except ValueError:
            return None
        if len(values) != nrows * ncols:
            return None
        table = values.reshape(nrows, ncols)
        int_cols = [c for c in range(ncols) if c not in float_cols]
        if (table[:, int_cols] >= 2**53).any():
            return None
        out = np.zeros((nrows, ncols), dtype=np.int64)
        out[:, int_cols] = table[:, int_cols].astype(np.int64)
        return out
    try:
        values = np.fromstring(data, dtype=np.int64, sep=" ")
    except ValueError:
        return None
    if len(values) != nrows * ncols:
        return None
    return values.reshape(nrows, ncols)


def _parse_table_slow(
    data: bytes,
    label: str,
    sep: bytes,
    cols: tuple[str, ...],
    float_cols: tuple[int, ...],
    first_line: int,
) -> np.ndarray:
    text = data.decode("latin-1")
    sep_s = sep.decode()
    ncols = len(cols)
    rows: list[list[int]] = []
    other_seps = [s for s in ("::", "\t", ",", " ") if s != sep_s]
    for lineno, line in enumerate(text.split("\n")[:-1], start=first_line):
        fields = line.split(sep_s)
        if len(fields) != ncols:
            if not line.strip():
                raise UserError(f"{label}:{lineno}: empty line")
            hint = ""
            looks = [s for s in other_seps if s in line and s.strip(" ") != ""] or (
                [" "] if " " in line.strip() else []
            )
            if looks:
                hint = f" (the line looks separated by {_SEP_NAMES[looks[0].encode()]}: wrong --format?)"
            raise UserError(
                f"{label}:{lineno}: expected {ncols} fields ({', '.join(cols)}) separated by "
                f"{_SEP_NAMES[sep]}, found {len(fields)}: {line[:80]!r}{hint}"
            )
        row = []
        for j, value in enumerate(fields):
            if j in float_cols:
                if not _FLOAT_RE.fullmatch(value):
                    raise UserError(f"{label}:{lineno}: {cols[j]} is not a number: {value[:40]!r}")
                row.append(0)
            else:
                if not _INT_RE.fullmatch(value):
                    raise UserError(
                        f"{label}:{lineno}: {cols[j]} is not a non-negative integer: {value[:40]!r}"
                    )
                row.append(int(value))
        rows.append(row)
    if not rows:
        raise UserError(f"{label}: no data lines")
    return np.asarray(rows, dtype=np.int64).reshape(len(rows), ncols)


# --------------------------------------------------------------------------------------------------
# Filtering, renumbering, splitting
# --------------------------------------------------------------------------------------------------


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

    @property
    def num_users(self) -> int:
        return len(self.user_original)

    @property
    def num_items(self) -> int:
        return len(self.item_original)


def min_user_length(holdout: str) -> int:
    """Interactions a user needs for the split: one training item plus the held-out targets."""
    return 3 if holdout == "valid_test" else 2


def build_sequences(inter: Interactions, min_item_count: int, min_length: int) -> SequenceData:
    """Filter rare items (one pass), sort per user by time (stable), drop short users, renumber."""
    n_raw = len(inter.users)
    uniq_items, item_inv = np.unique(inter.items, return_inverse=True)
    item_counts = np.bincount(item_inv)
    keep = item_counts[item_inv] >= min_item_count
    users, items, times = inter.users[keep], inter.items[keep], inter.times[keep]
    removed = n_raw - len(users)
    order = np.lexsort((times, users))  # lexsort is stable: ties keep file order
    users, items = users[order], items[order]
    uniq_users, user_start, user_len = np.unique(users, return_index=True, return_counts=True)
    long_enough = user_len >= min_length
    dropped_users = int((~long_enough).sum())
    dropped_inter = int(user_len[~long_enough].sum())
    if not long_enough.any():
        raise UserError(
            f"no user has the {min_length} interactions the split needs "
            f"(after removing items with fewer than {min_item_count} interactions)"
        )
    kept = np.repeat(long_enough, user_len)
    items = items[kept]
    user_original = uniq_users[long_enough]
    lengths = user_len[long_enough]
    item_uniq, first_idx, inv = np.unique(items, return_index=True, return_inverse=True)
    rank = np.empty(len(item_uniq), dtype=np.int64)
    rank[np.argsort(first_idx, kind="stable")] = np.arange(len(item_uniq))
    new_items = (rank[inv] + 1).astype(np.int32)
    item_original = np.empty(len(item_uniq), dtype=np.int64)
    item_original[rank] = item_uniq
    counts = np.bincount(new_items, minlength=len(item_uniq) + 1).astype(np.int64)
    return SequenceData(
        user_original=user_original,
        item_original=item_original,
        items=new_items,
        offsets=offsets_from_lengths(lengths),
        counts=counts,
        num_raw_interactions=n_raw,
        num_raw_users=int(len(np.unique(inter.users))),
        num_raw_items=int(len(uniq_items)),
        removed_by_item_filter=int(removed),
        items_removed_by_item_filter=int((item_counts < min_item_count).sum()),
        dropped_short_users=dropped_users,
        dropped_short_interactions=dropped_inter,
    )


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


# --------------------------------------------------------------------------------------------------
# Popularity negative sampling
# --------------------------------------------------------------------------------------------------


def sample_popular_negatives(
    items: np.ndarray,
    offsets: np.ndarray,
    counts: np.ndarray,
    num_negatives: int,
    rng: np.random.Generator,
    user_labels: np.ndarray | None = None,
    chunk_elems: int = 500_000,
) -> np.ndarray:
    """For each user, ``num_negatives`` distinct items not in that user's items, drawn by popularity.

    ``items``/``offsets``: every item of every user (CSR); ``counts``: ``[N+1]`` weights, index 0
    unused. Sampling is without replacement with probability proportional to ``counts`` among the
    items the user never touched (Efraimidis-Spirakis keys ``Exp(1) / count``, smallest first), i.e.
    successive popularity draws rejecting seen and repeated items, as the original evaluation did.
    Returns ``[U, num_negatives]`` int32 in sampling order. Vectorised over chunks of users.
    """
    num_items = len(counts) - 1
    weights = np.asarray(counts[1:], dtype=np.float32)
    if (weights <= 0).any():
        raise ValueError("every item needs a positive count")
    inv_w = (1.0 / weights).astype(np.float32)
    n_users = len(offsets) - 1
    lengths = np.diff(offsets)
    out = np.empty((n_users, num_negatives), dtype=np.int32)
    rows_per_chunk = max(1, chunk_elems // max(num_items, 1))
    for u0 in range(0, n_users, rows_per_chunk):
        u1 = min(n_users, u0 + rows_per_chunk)
        m = u1 - u0
        keys = rng.standard_exponential((m, num_items), dtype=np.float32)
        keys *= inv_w
        seen = items[offsets[u0] : offsets[u1]].astype(np.int64) - 1
        rows = np.repeat(np.arange(m), lengths[u0:u1])
        keys[rows, seen] = np.inf
        allowed = np.isfinite(keys).sum(axis=1)
        short = np.flatnonzero(allowed < num_negatives)
        if len(short):
            i = int(short[0])
            who = user_labels[u0 + i] if user_labels is not None else u0 + i + 1
            raise UserError(
                f"user {who} has interacted with {num_items - int(allowed[i])} of the {num_items} items; "
                f"fewer than --num_negatives {num_negatives} remain to sample negatives from"
            )
        if num_negatives < num_items:
            idx = np.argpartition(keys, num_negatives - 1, axis=1)[:, :num_negatives]
        else:
            idx = np.broadcast_to(np.arange(num_items), (m, num_items)).copy()
        order = np.argsort(np.take_along_axis(keys, idx, axis=1), axis=1, kind="stable")
        out[u0:u1] = np.take_along_axis(idx, order, axis=1) + 1
    return out


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------

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


def write_vocab(path: Path, item_original: np.ndarray) -> None:
    """``vocab.txt``: ``token_id<TAB>token<TAB>original_id`` (see module docstring)."""
    n = len(item_original)
    lines = [f"0\t{PAD_TOKEN}\t-"]
    lines += [f"{i}\t{i}\t{orig}" for i, orig in enumerate(item_original.tolist(), start=1)]
    lines += [f"{n + 1 + j}\t{tok}\t-" for j, tok in enumerate(SPECIAL_TOKENS)]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


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
    data = _read_bytes(path)
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


def load_windows(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Load ``train_windows.txt``; returns ``(users [W], flat items, offsets [W+1])``."""
    path = Path(path)
    rows = _read_int_rows(path, 2, "user<TAB>items")
    return _single(path, rows, 0, "user"), rows.fields[1], rows.offsets(1)


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
    text = _read_bytes(path).decode("utf-8", errors="replace")
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


# --------------------------------------------------------------------------------------------------
# The whole pipeline
# --------------------------------------------------------------------------------------------------

OUTPUT_FILES = ("vocab.txt", "users.txt", "item_counts.txt", "train.txt", "train_windows.txt", "stats.json")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def expected_files(holdout: str) -> tuple[str, ...]:
    return OUTPUT_FILES + (("valid.txt", "test.txt") if holdout == "valid_test" else ("test.txt",))


def is_up_to_date(out_dir: Path, opts: GenerateOptions, fingerprint: str) -> bool:
    """True when ``out_dir`` holds every file made from the same input bytes and options."""
    stats_path = out_dir / "stats.json"
    try:
        stats = json.loads(stats_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(stats, dict):
        return False
    same = (
        stats.get("generator_version") == GENERATOR_VERSION
        and stats.get("input_sha256") == fingerprint
        and stats.get("generation_options") == opts.generation_options()
    )
    return same and all((out_dir / name).is_file() for name in expected_files(opts.holdout))


def _tqdm(progress: bool | None, **kwargs):
    from tqdm import tqdm

    return tqdm(disable=(not progress) if progress is not None else None, **kwargs)


def _written_by_generator(folder: Path) -> list[str]:
    """Entries of ``folder`` the generator cannot account for: everything, unless its own ``stats.json``
    lists the files it wrote (then only what is not among them)."""
    entries = sorted(os.listdir(folder))
    try:
        stats = json.loads((folder / "stats.json").read_text(encoding="utf-8"))
        ours = isinstance(stats, dict) and "generator_version" in stats
        own = set(stats["files"]) | {"stats.json"} if ours else set()
    except (OSError, ValueError, KeyError, TypeError):
        own = set()
    return [name for name in entries if name not in own]


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_dir(out_dir: Path, inputs: Sequence[Path]) -> None:
    """Refuse an output folder the generator may not replace (``UserError``, nothing touched).

    The output is written next to ``out_dir`` and then swapped in whole, so ``out_dir`` is only acceptable when
    it does not exist, is empty, or holds exactly the files of an earlier run of the generator; it must not be
    (or contain) an input or the current folder, and a file in its place is never replaced.
    """
    out = out_dir.resolve()
    flag = f"--output_dir {out_dir}"
    cwd = Path.cwd().resolve()
    if out == cwd or out in cwd.parents:
        raise UserError(f"{flag}: is the current folder or one of its parents; name a folder of its own")
    for source in inputs:
        src = source.resolve()
        if src == out or out in src.parents:
            raise UserError(f"{flag}: holds the input {source}; write the output to another folder")
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise UserError(f"{flag}: is a file, not a folder; choose another path")
        foreign = _written_by_generator(out)
        if foreign:
            raise UserError(f"{flag}: exists and was not written by gen_data_fin.py (it holds {foreign[0]!r}); "
                            "choose a new folder or empty this one yourself")
        parent = out.parent
    else:
        parent = _nearest_existing(out.parent)
        if not parent.is_dir():
            raise UserError(f"{flag}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise EnvironmentFailure(f"{flag}: cannot write in {parent} (permission denied or read-only)")


def generate_dataset(
    opts: GenerateOptions, progress: bool | None = None, log: Callable[[str], object] = print
) -> dict:
    """Run the whole pipeline; returns the stats written to ``stats.json`` (or the existing ones when
    the output is up to date). ``progress=None`` shows tqdm bars only on a terminal."""
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, t0: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - t0, 3)
        return now

    opts.validate()
    out_dir = opts.resolved_output_dir()
    inputs = [Path(opts.raw_path)] if opts.raw_path is not None else [opts.resolved_raw_dir()]
    check_output_dir(out_dir, inputs)
    raw_path = resolve_raw_path(opts, progress=progress, log=log)
    t = time.perf_counter()
    raw = read_raw(raw_path, opts.format)
    fingerprint = sha256_bytes(raw.data)
    t = lap("read", t)
    if not opts.force and is_up_to_date(out_dir, opts, fingerprint):
        stats = json.loads((out_dir / "stats.json").read_text(encoding="utf-8"))
        stats["up_to_date"] = True
        log(f"{out_dir} is up to date (same input sha256 and options); use --force to regenerate")
        return stats

    inter = parse_interactions(raw)
    t = lap("parse", t)
    seq = build_sequences(inter, opts.min_item_count, min_user_length(opts.holdout))
    del inter
    (train_items, train_offsets), eval_parts = split_leave_one_out(seq, opts.holdout)
    t = lap("filter_split", t)

    num_items = seq.num_items
    mask_id = num_items + 1
    user_ids = np.arange(1, seq.num_users + 1, dtype=np.int32)
    eval_sets: dict[str, tuple] = {}
    for name in ("valid", "test"):
        if name not in eval_parts:
            continue
        # an independent stream per set: test negatives do not depend on whether valid.txt is made
        rng = np.random.default_rng([opts.eval_seed, {"test": 0, "valid": 1}[name]])
        negatives = sample_popular_negatives(
            seq.items, seq.offsets, seq.counts, opts.num_negatives, rng, user_labels=seq.user_original
        )
        eval_sets[name] = (*eval_parts[name], negatives)
    t = lap("negatives", t)

    step = sliding_step(opts.max_seq_length, opts.prop_sliding_window)
    n_windows_est = sum(
        1 if n <= opts.max_seq_length else len(range(n - opts.max_seq_length, 0, -step)) + 1
        for n in np.diff(train_offsets).tolist()
        if n > 0
    )
    with _tqdm(progress, total=n_windows_est * opts.dupe_factor, desc="masking", unit="window") as bar:
        instances, (win_users, win_items, win_offsets) = generate_instances(
            train_items,
            train_offsets,
            user_ids,
            np.random.default_rng(opts.random_seed),
            max_len=opts.max_seq_length,
            step=step,
            dupe_factor=opts.dupe_factor,
            masked_lm_prob=opts.masked_lm_prob,
            max_predictions=opts.max_predictions_per_seq,
            mask_prob=opts.mask_prob,
            mask_id=mask_id,
            num_items=num_items,
            progress=bar.update,
        )
    t = lap("instances", t)

    user_lengths = np.diff(seq.offsets)
    # input_sha256: the ratings bytes parsed; input_file_sha256: the file given (differs for a zip)
    stats = {
        "dataset": opts.data_name,
        "num_users": seq.num_users,
        "num_items": num_items,
        "num_interactions": int(len(seq.items)),
        "num_train_instances": len(instances),
        "num_train_windows": int(len(win_users)),
        "vocab_size": num_items + 1 + len(SPECIAL_TOKENS),
        "pad_id": 0,
        "mask_id": mask_id,
        "dropped_short_users": seq.dropped_short_users,
        "dropped_short_user_interactions": seq.dropped_short_interactions,
        "min_user_interactions": min_user_length(opts.holdout),
        "raw": {
            "num_interactions": seq.num_raw_interactions,
            "num_users": seq.num_raw_users,
            "num_items": seq.num_raw_items,
            "interactions_removed_by_item_filter": seq.removed_by_item_filter,
            "items_removed_by_item_filter": seq.items_removed_by_item_filter,
        },
        "num_train_sequences": int(np.count_nonzero(np.diff(train_offsets))),
        "num_train_tokens": int(len(train_items)),
        "num_eval_users": {name: int(len(v[2])) for name, v in eval_sets.items()},
        "sequence_lengths": {
            "users": length_stats(user_lengths),
            "train_sequences": length_stats(np.diff(train_offsets)),
            "train_windows": length_stats(np.diff(win_offsets)),
        },
        "masked_per_instance": length_stats(instances.num_masked),
        "format": raw.format,
        "input_file": str(Path(raw.path).resolve()),
        "input_member": raw.member,
        "input_sha256": fingerprint,
        "input_file_sha256": sha256_file(raw.path) if raw.path.is_file() and raw.member else fingerprint,
        "generator_version": GENERATOR_VERSION,
        "generation_options": opts.generation_options(),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()},
        "output_dir": str(out_dir.resolve()),
        "files": list(expected_files(opts.holdout)),
        "sliding_step": step,
        "numpy_version": np.__version__,
        "python_version": sys.version.split()[0],
    }

    check_output_dir(out_dir, [raw_path])  # again: the folder may have changed while we worked
    try:
        with atomic_dir(out_dir) as tmp:
            write_vocab(tmp / "vocab.txt", seq.item_original)
            users_table = np.stack([user_ids.astype(np.int64), seq.user_original], axis=1)
            write_rows(tmp / "users.txt", [(users_table[:, 0], None), (users_table[:, 1], None)])
            write_rows(
                tmp / "item_counts.txt",
                [(np.arange(1, num_items + 1, dtype=np.int64), None), (seq.counts[1:], None)],
            )
            with _tqdm(progress, total=len(instances), desc="writing train.txt", unit="inst") as bar:
                write_rows(
                    tmp / "train.txt",
                    [
                        (instances.users, None),
                        (instances.tokens, instances.token_offsets),
                        (instances.positions, instances.mask_offsets),
                        (instances.labels, instances.mask_offsets),
                    ],
                    progress=bar.update,
                )
            write_rows(tmp / "train_windows.txt", [(win_users, None), (win_items, win_offsets)])
            for name, (hist, hist_off, targets, negatives) in eval_sets.items():
                write_rows(
                    tmp / f"{name}.txt",
                    [
                        (user_ids, None),
                        (hist, hist_off),
                        (targets, None),
                        (negatives.ravel(), np.arange(0, negatives.size + 1, negatives.shape[1])),
                    ],
                )
            lap("write", t)
            timings["total"] = round(time.perf_counter() - t_start, 3)
            stats["timings_seconds"] = timings
            (tmp / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
            tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes it 0700; give it the usual permissions
    except OSError as err:  # disk full, read-only filesystem...: nothing was replaced
        raise os_failure(err, out_dir) from None
    stats["up_to_date"] = False
    return stats
