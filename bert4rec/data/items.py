"""Item metadata (title, genres, year) and original-id maps, written next to the data as ``item_features.txt``.

Metadata files, as GroupLens publishes them (ISO-8859-1 for ML-1M and ML-100K, UTF-8 for ML-20M):

* ML-1M ``movies.dat``: ``MovieID::Title::Genres``, genres ``|``-separated, the year at the end of the title;
* ML-100K ``u.item``: ``id|title|release date|video release date|IMDb URL|`` + 19 genre flags (``u.genre`` order);
  the year is the release date's (else the title's);
* ML-20M ``movies.csv``: header, then ``movieId,title,genres`` (quoted titles), ``(no genres listed)`` = none.

The GroupLens zips and folders contain them and they are found next to the ratings; for the ``user item``
sequence file pass ``--item_meta`` and, since its ids are renumbered, ``--item_id_map`` (``file_id original_id``
per line, e.g. ``sas_to_original_items.txt``), and optionally ``--user_id_map`` for the users.

Features (``item_features.txt``): ``genres`` (every genre of the item, ``|``-separated) and ``decade`` (the year
rounded down to its decade: 1995 -> ``1990s``). An item of the dataset without a metadata line, or without a
genre or a year, gets ``[UNK]`` there (counted in ``stats.json``); metadata lines of movies not in the dataset
are ignored. A malformed line (wrong field count, a non-integer id, an id given twice, bad encoding) is one
``error:`` line naming the file and line.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bert4rec.errors import UserError
from bert4rec.fileio import read_bytes

UNKNOWN = "[UNK]"
META_FILES = {"movies.dat": "ml-1m", "u.item": "ml-100k", "movies.csv": "ml-20m"}
ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                 "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
                 "War", "Western")
_TITLE_YEAR = re.compile(r"\((\d{4})\)\s*$")
_DATE_YEAR = re.compile(r"(\d{4})\s*$")


@dataclass(frozen=True)
class ItemMeta:
    title: str
    genres: tuple[str, ...]
    year: int | None

    @property
    def decade(self) -> str:
        return f"{self.year // 10 * 10}s" if self.year is not None else UNKNOWN


def _decode(data: bytes, label: str, encoding: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise UserError(f"{label}:{line}: not {encoding} text (byte 0x{data[err.start]:02x})") from None


def _int_id(value: str, label: str, line: int, what: str) -> int:
    if not value.strip().isdigit():
        raise UserError(f"{label}:{line}: {what} must be a non-negative integer, got {value[:40]!r}")
    return int(value)


def _lines(text: str) -> list[tuple[int, str]]:
    return [(n, line) for n, line in enumerate(text.replace("\r\n", "\n").split("\n"), start=1) if line.strip()]


def parse_item_meta(data: bytes, label: str, fmt: str) -> dict[int, ItemMeta]:
    """Metadata by original movie id from the bytes of ``movies.dat`` / ``u.item`` / ``movies.csv``."""
    if fmt == "ml-20m":
        rows = list(csv.reader(io.StringIO(_decode(data, label, "utf-8"))))
        if not rows or [c.strip() for c in rows[0]] != ["movieId", "title", "genres"]:
            raise UserError(f"{label}:1: expected the header movieId,title,genres")
        numbered = [(n, row) for n, row in enumerate(rows[1:], start=2) if row]
    else:
        sep = "::" if fmt == "ml-1m" else "|"
        numbered = [(n, line.split(sep)) for n, line in _lines(_decode(data, label, "iso-8859-1"))]
    meta: dict[int, ItemMeta] = {}
    expected = {"ml-1m": 3, "ml-100k": 5 + len(ML100K_GENRES), "ml-20m": 3}[fmt]
    for n, fields in numbered:
        if len(fields) != expected:
            raise UserError(f"{label}:{n}: expected {expected} fields, found {len(fields)}")
        movie = _int_id(fields[0], label, n, "the movie id")
        if movie in meta:
            raise UserError(f"{label}:{n}: movie id {movie} is listed twice")
        title = fields[1].strip()
        if fmt == "ml-100k":
            flags = fields[5:]
            if any(f not in ("0", "1") for f in flags):
                raise UserError(f"{label}:{n}: the 19 genre flags must be 0 or 1")
            genres = tuple(g for g, f in zip(ML100K_GENRES, flags, strict=True) if f == "1" and g != "unknown")
            date = _DATE_YEAR.search(fields[2])
            year = int(date.group(1)) if date else None
        else:
            names = [g for g in fields[2].strip().split("|") if g and g != "(no genres listed)"]
            genres = tuple(names)
            year = None
        if year is None:
            found = _TITLE_YEAR.search(title)
            year = int(found.group(1)) if found else None
        meta[movie] = ItemMeta(title, genres, year)
    return meta


def read_id_map(path: Path, what: str) -> dict[int, int]:
    """``file_id original_id`` per line (whitespace-separated) -> {file_id: original_id}, one-to-one."""
    text = _decode(read_bytes(path), str(path), "utf-8")
    mapping: dict[int, int] = {}
    originals: dict[int, int] = {}
    for n, line in _lines(text):
        fields = line.split()
        if len(fields) != 2:
            raise UserError(f"{path}:{n}: expected 2 fields ({what} id in the data, original id), found {len(fields)}")
        key, original = (_int_id(f, str(path), n, f"the {what} id") for f in fields)
        if key in mapping:
            raise UserError(f"{path}:{n}: {what} {key} is mapped twice")
        if original in originals:
            raise UserError(f"{path}:{n}: original id {original} is the image of {what}s {originals[original]} "
                            f"and {key}")
        mapping[key] = original
        originals[original] = key
    if not mapping:
        raise UserError(f"{path}: the id map is empty")
    return mapping


def apply_id_map(ids: np.ndarray, mapping: dict[int, int], path: Path, what: str) -> np.ndarray:
    """The original ids of ``ids``; an id the map lacks is a UserError naming it."""
    missing = [int(i) for i in ids if int(i) not in mapping]
    if missing:
        raise UserError(f"{path}: no line for {what} {missing[0]} of the data ({len(missing)} {what}s missing)")
    return np.array([mapping[int(i)] for i in ids], dtype=np.int64)


def find_item_meta(raw_path: Path) -> tuple[bytes, str, str] | None:
    """The metadata file that comes with a GroupLens zip, folder or ratings file: (bytes, label, format)."""
    raw_path = Path(raw_path)
    if raw_path.is_file() and zipfile.is_zipfile(raw_path):
        with zipfile.ZipFile(raw_path) as zf:
            for name in sorted(zf.namelist(), key=lambda n: n.count("/")):
                base = name.rsplit("/", 1)[-1]
                if base in META_FILES and "__MACOSX" not in name:
                    return zf.read(name), f"{raw_path}:{name}", META_FILES[base]
        return None
    folder = raw_path if raw_path.is_dir() else raw_path.parent
    for base, fmt in META_FILES.items():
        for candidate in (folder / base, *folder.glob(f"*/{base}")):
            if candidate.is_file():
                return read_bytes(candidate), str(candidate), fmt
    return None


def meta_format(path: Path) -> str:
    """The metadata format of ``--item_meta`` from its file name."""
    name = Path(path).name
    if name not in META_FILES:
        raise UserError(f"--item_meta {path}: expected movies.dat (ML-1M), u.item (ML-100K) or movies.csv (ML-20M)")
    return META_FILES[name]


def _as_int(original: object) -> int | None:
    """A metadata key: MovieLens files name movies by integer ids; a string id matches only if it is one."""
    text = str(original)
    return int(text) if text.isdigit() else None


def item_features_rows(item_original: np.ndarray, meta: dict[int, ItemMeta]) -> tuple[list[str], dict]:
    """Lines of ``item_features.txt`` (``item_id<TAB>original_id<TAB>genres<TAB>decade<TAB>title``) for items
    1..N, and the counts for ``stats.json``."""
    lines, missing, no_genre, no_year = [], 0, 0, 0
    for item, original in enumerate(item_original.tolist(), start=1):
        m = meta.get(_as_int(original))
        if m is None:
            missing += 1
            lines.append(f"{item}\t{original}\t{UNKNOWN}\t{UNKNOWN}\t")
            continue
        no_genre += not m.genres
        no_year += m.year is None
        genres = "|".join(m.genres) if m.genres else UNKNOWN
        title = m.title.replace("\t", " ")
        lines.append(f"{item}\t{original}\t{genres}\t{m.decade}\t{title}")
    counts = {"items": len(item_original), "items_without_metadata": missing,
              "items_without_genre": no_genre + missing, "items_without_year": no_year + missing,
              "metadata_lines_not_in_dataset": len(set(meta) - {_as_int(o) for o in item_original.tolist()})}
    return lines, counts
