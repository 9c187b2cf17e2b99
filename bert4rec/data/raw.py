"""Raw inputs: locating, downloading and parsing interaction files.

Formats (``--format``): GroupLens ML-1M ``ratings.dat`` (``::``), ML-100K ``u.data`` (tabs), ML-20M ``ratings.csv``
(header, commas, fractional ratings) -- each as published, zipped or unpacked -- the SASRec/BERT4Rec sequence
file (``user item`` per line, chronological), and any interaction table: CSV / TSV with a header, Parquet, RecBole
atomic files (``bert4rec.data.tables``). A gzip file is read through. ``read_raw`` finds the bytes in a zip, a
folder or a file; ``parse_interactions`` turns them into arrays, naming the file and line of the first malformed
line.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bert4rec.data.interactions import Interactions
from bert4rec.data.tables import TABLE_FORMATS, first_line, load_source, table_format_of, table_interactions
from bert4rec.errors import UserError
from bert4rec.fileio import atomic_path, file_digest, read_bytes

if TYPE_CHECKING:
    from bert4rec.data.options import GenerateOptions

FORMATS = ("auto", "ml-1m", "ml-100k", "ml-20m", "seq", *TABLE_FORMATS)
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


@dataclass
class RawInput:
    """Bytes of a ratings / sequence file and where they came from."""

    data: bytes
    label: str  # for messages: the file, or "archive.zip:member"
    path: Path  # the file or zip given
    member: str | None  # member of the zip, or the file inside a folder
    format: str  # detected or forced format
    table: object | None = None  # a pyarrow.Table given directly (API frames); ``data``: bytes of its digest


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
    if opts.name not in DOWNLOAD_MD5:
        known = ", ".join(DOWNLOAD_MD5)
        raise UserError(
            f"no --raw_path given and --data_name {opts.name} is not a downloadable dataset "
            f"({known}); pass --raw_path"
        )
    raw_dir = opts.resolved_raw_dir()
    expected_md5 = opts.download_md5 or DOWNLOAD_MD5[opts.name]
    folder, archive = raw_dir / opts.name, raw_dir / f"{opts.name}.zip"
    if folder.exists():
        return folder
    if archive.exists():
        got = md5_file(archive)
        if got != expected_md5.lower():
            raise UserError(f"{archive}: md5 {got} does not match the expected {expected_md5.lower()} (a damaged or "
                            "different download); delete it to download again, or pass --raw_path")
        return archive
    base = opts.download_url or os.environ.get(DOWNLOAD_URL_ENV) or DEFAULT_DOWNLOAD_URL
    url = base.rstrip("/") + f"/{opts.name}.zip"
    dest = raw_dir / f"{opts.name}.zip"
    log(f"downloading {url} -> {dest}")
    return download_file(url, dest, md5=expected_md5, progress=progress)


def md5_file(path: Path) -> str:
    """md5 of a file (the checksum GroupLens publishes)."""
    return file_digest(path, "md5")


ML20M_HEADER = "userId,movieId,rating,timestamp"


def detect_format(data: bytes, label: str) -> str:
    """Format of a ratings / sequence / table file from its first line: the MovieLens and ``user item`` layouts,
    else a table with a header (RecBole when its fields are ``name:type``)."""
    first = data.split(b"\n", 1)[0].rstrip(b"\r")
    if b"::" in first:
        return "ml-1m"
    header = first_line(data)
    if header == ML20M_HEADER:
        return "ml-20m"
    if b"\t" in first:
        fields = header.split("\t")
        if all(f.strip().isdigit() for f in fields):
            return "ml-100k"
        return "recbole" if all(re.fullmatch(r".+:[a-z_]+", f) for f in fields) else "tsv"
    if re.fullmatch(rb"\d+ \d+", first):
        return "seq"
    if any(sep in header for sep in (",", ";", "|")) and not all(
            f.strip().replace(".", "", 1).isdigit() for f in re.split(r"[,;|]", header)):
        return "csv"
    if b"," in first:
        return "ml-20m"
    shown = first[:60].decode("latin-1")
    raise UserError(
        f"{label}:1: cannot detect the format from {shown!r}; expected 'user::item::rating::time' "
        "(ml-1m), tab-separated u.data (ml-100k), ratings.csv (ml-20m), 'user item' (seq) or a CSV / TSV "
        "with a header line; pass --format"
    )


def _maybe_gunzip(data: bytes, label: str) -> bytes:
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        raise UserError(f"{label}: cannot read the gzip file ({err})") from None


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
    by_name = table_format_of(path) if path.exists() else None
    if path.is_dir() and (by_name == "recbole" or fmt == "recbole"):
        file = path / f"{path.name}.inter"
        if not file.is_file():
            raise UserError(f"{path}: no {path.name}.inter in this RecBole dataset folder")
        data = read_bytes(file)
        if not data.strip():
            raise UserError(f"{file}: file is empty")
        return RawInput(data=data, label=str(file), path=path, member=file.name, format="recbole")
    if path.is_dir():
        names = [p.relative_to(path).as_posix() for p in path.glob("*")] + [
            p.relative_to(path).as_posix() for p in path.glob("*/*")
        ]
        member = _pick_member(names, fmt)
        if member is None:
            raise UserError(f"{path}: no ratings file ({wanted}) in this folder")
        file = path / member
        label = str(file)
        data = read_bytes(file)
    elif zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                member = _pick_member(zf.namelist(), fmt)
                if member is None:
                    raise UserError(f"{path}: no ratings file ({wanted}) in this zip")
                data = zf.read(member)
        except (zipfile.BadZipFile, OSError, EOFError, zipfile.LargeZipFile, zlib.error) as err:
            raise UserError(f"{path}: cannot read the zip ({err})") from None
        label = f"{path}:{member}"
    elif path.is_file():
        if path.suffix.lower() == ".zip":
            raise UserError(f"{path}: not a valid zip file")
        member = None
        label = str(path)
        data = read_bytes(path)
        if by_name != "parquet" and fmt != "parquet":
            data = _maybe_gunzip(data, label)
    else:
        raise UserError(f"{path}: no such file or directory")
    if not data or data.isspace():
        raise UserError(f"{label}: file is empty")
    if fmt == "auto":
        if member is not None:
            fmt = RATINGS_FILES[member.rsplit("/", 1)[-1]]
        else:
            fmt = by_name or detect_format(data, label)
    return RawInput(data=data, label=label, path=path, member=member, format=fmt)


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
FLOAT_SCALE = 1000  # float columns of the MovieLens layouts are parsed into integer thousandths (ratings 0.5-5)
_INT_RE = re.compile(r"\d{1,18}")
_FLOAT_RE = re.compile(r"(?=.*\d)\d*\.?\d*")


def parse_interactions(raw: RawInput, sep: str | None = None, columns: dict[str, str | None] | None = None,
                       log: Callable[[str], object] = print) -> Interactions:
    """Parse the raw bytes in ``raw.format``; ``UserError`` with file:line on the first bad line. ``sep`` and
    ``columns`` (role -> column name) apply to tables."""
    if raw.format in TABLE_FORMATS or raw.table is not None:
        source, chosen = load_source(raw, sep, columns or {})
        return table_interactions(source, chosen, log)
    layout_sep, cols, float_cols, header = _RAW_LAYOUT[raw.format]
    table = _parse_table(raw.data, raw.label, layout_sep, cols, float_cols, header)
    users = table[:, 0]
    items = table[:, 1]
    if raw.format == "seq":
        return Interactions(np.ascontiguousarray(users), np.ascontiguousarray(items),
                            np.arange(len(table), dtype=np.int64), time_scale=0)
    ratings = table[:, 2] / FLOAT_SCALE if 2 in float_cols else table[:, 2].astype(np.float64)
    return Interactions(np.ascontiguousarray(users), np.ascontiguousarray(items), table[:, 3], ratings)


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
        out[:, list(float_cols)] = np.round(table[:, list(float_cols)] * FLOAT_SCALE).astype(np.int64)
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
                row.append(round(float(value) * FLOAT_SCALE))
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

