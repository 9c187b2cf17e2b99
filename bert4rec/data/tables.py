"""Interaction tables of any origin: CSV / TSV (plain or gzip), Parquet, RecBole atomic files, pandas frames.

Read with pyarrow (multi-threaded, typed); ids are kept as opaque strings (leading zeros, spaces, unicode) and
turned into integer codes here, so the rest of the pipeline works on integers and writes the strings back out:

* users are coded in *natural* order of their ids (``u2`` before ``u10``; plain integers in numeric order, so
  ``u<id>`` numbers users exactly as the integer ids would); items by first appearance in the file;
* times: integer or float epoch seconds or milliseconds (detected from their size), or ISO-8601 strings; kept as
  integer ticks with ``time_scale`` ticks per second; no time column = file order;
* a missing, empty or unparseable value is one ``error:`` line naming the file, line and column.

Columns are taken from ``--user_col`` / ``--item_col`` / ``--time_col`` / ``--rating_col`` or found among the
usual names (``COLUMN_NAMES``); the choice is printed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bert4rec.data.interactions import Interactions
from bert4rec.errors import UserError

TABLE_FORMATS = ("csv", "tsv", "parquet", "recbole")
FRAME_FORMAT = "frame"  # a table handed over in memory (the Python API)
OWN_ID_FORMATS = (*TABLE_FORMATS, FRAME_FORMAT)  # inputs whose ids are kept as given (strings)
COLUMN_NAMES: dict[str, tuple[str, ...]] = {
    "user": ("user_id", "userid", "user"),
    "item": ("item_id", "itemid", "movieid", "movie_id", "item"),
    "time": ("timestamp", "time", "ts", "datetime"),
    "rating": ("rating",),
}
RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")
SNIFFED_SEPARATORS = (",", "\t", ";", "|")
MS_THRESHOLD = 10**11  # epoch seconds reach 1e11 in the year 5138; milliseconds passed it in 1973
TIME_UNITS = {1: "epoch seconds", 1000: "epoch milliseconds"}


@dataclass
class Columns:
    """The input columns that hold each role (``None``: the input has none)."""

    user: str
    item: str
    time: str | None = None
    rating: str | None = None
    how: dict[str, str] = field(default_factory=dict)  # role -> "given" / "detected"

    def describe(self) -> str:
        parts = [f"{role} = {name!r} ({self.how.get(role, 'given')})" for role, name in
                 (("user", self.user), ("item", self.item), ("time", self.time), ("rating", self.rating)) if name]
        return "columns: " + ", ".join(parts) + ("" if self.time else "; no time column: file order")


@dataclass
class Source:
    """A loaded table and how to name its rows in messages."""

    table: object  # pyarrow.Table
    label: str
    header_lines: int  # lines before the first data row (1 for a CSV header, 0 for Parquet / a frame)
    row_word: str = "line"

    def where(self, row: int, column: str) -> str:
        if self.row_word == "line":
            return f"{self.label}:{row + 1 + self.header_lines}: column {column!r}"
        return f"{self.label}: row {row + 1}, column {column!r}"


def table_format_of(path: Path) -> str | None:
    """The table format a path's name says (``None``: not a table by its name)."""
    path = Path(path)
    if path.is_dir():
        return "recbole" if (path / f"{path.name}.inter").is_file() else None
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".inter"):
        return "recbole"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith(".tsv"):
        return "tsv"
    return None


def sniff_separator(header: str) -> str:
    """The separator of a header line: the most frequent of ``SNIFFED_SEPARATORS`` outside quotes."""
    unquoted = re.sub(r'"[^"]*"', "", header)
    counts = {sep: unquoted.count(sep) for sep in SNIFFED_SEPARATORS}
    best = max(counts, key=lambda s: counts[s])
    return best if counts[best] else ","


def first_line(data: bytes) -> str:
    return data.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", errors="replace").lstrip("\ufeff")


def recbole_header(header: str, label: str) -> tuple[list[str], list[str]]:
    """Names and types of a RecBole atomic-file header (``name:type`` fields, tab-separated)."""
    names, types = [], []
    for j, field_ in enumerate(header.split("\t"), start=1):
        name, colon, kind = field_.rpartition(":")
        if not colon or not name:
            raise UserError(f"{label}:1: field {j} {field_!r} has no type (RecBole headers are name:type, "
                            f"types {', '.join(RECBOLE_TYPES)})")
        if kind not in RECBOLE_TYPES:
            raise UserError(f"{label}:1: field {j} {field_!r}: unknown type {kind!r} (expected one of "
                            f"{', '.join(RECBOLE_TYPES)})")
        names.append(name)
        types.append(kind)
    return names, types


def read_delimited(data: bytes, label: str, sep: str, quoted: bool, header: list[str] | None,
                   string_columns: list[str], include: list[str]):
    """A CSV-like table with pyarrow; ``header`` replaces the file's own names (RecBole's ``name:type``)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    read = pacsv.ReadOptions(column_names=header, skip_rows=1 if header else 0, block_size=1 << 24)
    convert = pacsv.ConvertOptions(column_types={c: pa.string() for c in string_columns},
                                   include_columns=include, strings_can_be_null=False,
                                   quoted_strings_can_be_null=False)
    parse = pacsv.ParseOptions(delimiter=sep, quote_char='"' if quoted else False)
    try:
        return pacsv.read_csv(pa.py_buffer(data), read_options=read, parse_options=parse, convert_options=convert)
    except pa.ArrowInvalid as err:
        bad: list = []

        def first_bad(row) -> str:
            bad.append(row)
            return "error"

        slow = pacsv.ReadOptions(column_names=header, skip_rows=1 if header else 0, use_threads=False)
        try:
            pacsv.read_csv(pa.py_buffer(data), read_options=slow, convert_options=convert,
                           parse_options=pacsv.ParseOptions(delimiter=sep, quote_char='"' if quoted else False,
                                                            invalid_row_handler=first_bad))
        except pa.ArrowInvalid:
            pass
        if bad:
            row = bad[0]
            raise UserError(f"{label}:{row.number}: expected {row.expected_columns} fields separated by "
                            f"{sep!r}, found {row.actual_columns}: {row.text[:80]!r}") from None
        raise UserError(f"{label}: {str(err).splitlines()[0]}") from None


def header_names(data: bytes, fmt: str, label: str, sep: str | None) -> tuple[list[str], str]:
    """Column names of a CSV / TSV / RecBole file and the separator to read it with."""
    if not data.strip():
        raise UserError(f"{label}: file is empty")
    header = first_line(data)
    if fmt == "recbole":
        return recbole_header(header, label)[0], "\t"
    sep = sep or ("\t" if fmt == "tsv" else sniff_separator(header))
    import csv

    names = next(csv.reader([header], delimiter=sep))
    return [n.strip() for n in names], sep


def pick_columns(names: list[str], label: str, given: dict[str, str | None]) -> Columns:
    """Each role's column: the flag's (which must exist) or the one usual name present (ambiguity is an error)."""
    chosen: dict[str, str | None] = {}
    how: dict[str, str] = {}
    lower = {}
    for name in names:
        lower.setdefault(name.lower(), []).append(name)
    for role, candidates in COLUMN_NAMES.items():
        flag = given.get(role)
        if flag:
            if flag not in names:
                raise UserError(f"--{role}_col {flag!r}: {label} has no such column (columns: {', '.join(names)})")
            chosen[role], how[role] = flag, "given"
            continue
        found = [n for c in candidates for n in lower.get(c, [])]
        found = [n for n in dict.fromkeys(found) if n not in chosen.values()]
        if len(found) > 1:
            raise UserError(f"{label}: columns {', '.join(map(repr, found))} could each be the {role} column; "
                            f"choose one with --{role}_col")
        chosen[role] = found[0] if found else None
        how[role] = "detected"
        if chosen[role] is None and role in ("user", "item"):
            raise UserError(f"{label}: no {role} column (looked for {', '.join(candidates)}; columns: "
                            f"{', '.join(names)}); name it with --{role}_col")
    if chosen["user"] == chosen["item"]:
        raise UserError(f"{label}: the user and item columns are both {chosen['user']!r}")
    return Columns(chosen["user"], chosen["item"], chosen["time"], chosen["rating"], how)


def _natural_key(text: str) -> tuple:
    parts = re.split(r"(\d+)", text)
    return (*[int(p) if i % 2 else p for i, p in enumerate(parts)], text)


def encode_ids(source: Source, column: str, natural_order: bool) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of a string id column and the id of each code (natural order or first appearance)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = source.table.column(column)
    if not pa.types.is_string(values.type) and not pa.types.is_large_string(values.type):
        values = pc.cast(values, pa.string())
    if values.null_count:
        row = int(pc.index(pc.is_null(values), True).as_py())
        raise UserError(f"{source.where(row, column)}: the id is missing")
    encoded = pc.dictionary_encode(values).combine_chunks()
    labels = np.array(encoded.dictionary.to_pylist(), dtype=object)
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    bad = [j for j, s in enumerate(labels) if not s or not s.strip() or any(c in s for c in "\t\n\r")]
    if bad:
        row = int(np.flatnonzero(codes == bad[0])[0])
        what = "empty" if not labels[bad[0]].strip() else "contains a tab or a line break"
        raise UserError(f"{source.where(row, column)}: the id {labels[bad[0]]!r} is {what}")
    if natural_order:
        order = sorted(range(len(labels)), key=lambda j: _natural_key(labels[j]))
        rank = np.empty(len(labels), dtype=np.int64)
        rank[order] = np.arange(len(labels))
        codes, labels = rank[codes], labels[order]
    return codes, labels


def _numbers(source: Source, column: str, what: str) -> np.ndarray:
    """A numeric column as float64 (strings parsed; the first value that is no number is an error)."""
    import pandas as pd
    import pyarrow as pa

    values = source.table.column(column)
    if pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
        out = values.to_numpy(zero_copy_only=False).astype(np.float64)
    else:
        out = pd.to_numeric(values.to_pandas(), errors="coerce").to_numpy(dtype=np.float64)
    return _all_finite(source, column, what, out)


def _all_finite(source: Source, column: str, what: str, out: np.ndarray) -> np.ndarray:
    """``out`` (the column as numbers); the first value that is none (NaN: missing or unparseable) is an error."""
    bad = np.flatnonzero(~np.isfinite(out))
    if len(bad):
        raise UserError(f"{source.where(int(bad[0]), column)}: {what} "
                        f"{source.table.column(column)[int(bad[0])].as_py()!r} is not a number")
    return out


def _epoch_ints(ints: np.ndarray) -> tuple[np.ndarray, int, str]:
    """Integer epoch times: seconds, or milliseconds when they reach ``MS_THRESHOLD``."""
    scale = 1000 if len(ints) and np.abs(ints).max() >= MS_THRESHOLD else 1
    return ints, scale, f"integer {TIME_UNITS[scale]}"


def parse_times(source: Source, column: str) -> tuple[np.ndarray, int, str]:
    """Integer time ticks, ticks per second and what the column held (for the printed summary)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    values = source.table.column(column)
    kind = values.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        if values.null_count:
            row = int(pc.index(pc.is_null(values), True).as_py())
            raise UserError(f"{source.where(row, column)}: the time is missing")
        ticks = pc.cast(pc.cast(values, pa.timestamp("ms")) if pa.types.is_date(kind) else values,
                        pa.timestamp("ms", tz=getattr(kind, "tz", None)))
        return ticks.cast(pa.int64()).to_numpy(zero_copy_only=False), 1000, "dates and times (ISO-8601)"
    if pa.types.is_integer(kind) and not values.null_count:
        return _epoch_ints(values.to_numpy(zero_copy_only=False).astype(np.int64))
    if pa.types.is_floating(kind):
        seconds = _numbers(source, column, "time")
    else:
        text = values.to_pandas()
        numbers = pd.to_numeric(text, errors="coerce")
        if numbers.isna().any() and np.isnan(numbers.iloc[0]):  # the first value says: dates, or numbers
            stamps = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
            bad = np.flatnonzero(stamps.isna().to_numpy())
            if len(bad):
                raise UserError(f"{source.where(int(bad[0]), column)}: {text.iloc[int(bad[0])]!r} is neither an "
                                "epoch timestamp nor an ISO-8601 date/time")
            ms = ((stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)).to_numpy(dtype=np.int64)
            return ms, 1000, "dates and times (ISO-8601)"
        seconds = _all_finite(source, column, "time", numbers.to_numpy(dtype=np.float64))
    if np.array_equal(seconds, np.round(seconds)) and np.abs(seconds).max(initial=0) < 2**53:
        return _epoch_ints(seconds.astype(np.int64))
    if np.abs(seconds).max(initial=0) >= MS_THRESHOLD:
        return np.round(seconds).astype(np.int64), 1000, "fractional epoch milliseconds"
    return np.round(seconds * 1000).astype(np.int64), 1000, "fractional epoch seconds"


def check_rows(source: Source) -> None:
    if source.table.num_rows == 0:
        raise UserError(f"{source.label}: no data rows" + (" (only a header)" if source.header_lines else ""))


def describe_source(source: Source, columns: Columns, time_kind: str | None, log: Callable[[str], object]) -> None:
    log(f"{source.label}: {source.table.num_rows:,} rows; {columns.describe()}"
        + (f"; times are {time_kind}" if time_kind else ""))


def read_columns(raw, sep: str | None, choose: Callable[[list[str]], tuple[list[str], list[str]]]) -> Source:
    """The columns ``choose(names)`` selects of a ``RawInput`` (CSV / TSV / RecBole bytes, Parquet bytes, or a
    frame): it returns (columns to read, those to read as strings)."""
    import pyarrow as pa

    if raw.table is not None:
        wanted, _ = choose(list(raw.table.column_names))
        return Source(raw.table.select(wanted), raw.label, 0, "row")
    if raw.format == "parquet":
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(pa.BufferReader(raw.data))
        except (pa.ArrowInvalid, OSError) as err:
            raise UserError(f"{raw.label}: not a readable Parquet file ({err})") from None
        wanted, _ = choose(list(parquet.schema_arrow.names))
        return Source(parquet.read(columns=wanted), raw.label, 0, "row")
    names, sep = header_names(raw.data, raw.format, raw.label, sep)
    wanted, strings = choose(names)
    twice = [c for c in wanted if names.count(c) > 1]
    if twice:
        raise UserError(f"{raw.label}:1: column {twice[0]!r} appears {names.count(twice[0])} times in the header")
    table = read_delimited(raw.data, raw.label, sep, quoted=raw.format != "recbole", header=names,
                           string_columns=strings, include=wanted)
    return Source(table, raw.label, 1)


def load_source(raw, sep: str | None, given: dict[str, str | None]) -> tuple[Source, Columns]:
    """The interaction table of a ``RawInput`` with its user / item / time / rating columns chosen."""
    chosen: list[Columns] = []

    def choose(names: list[str]) -> tuple[list[str], list[str]]:
        chosen.append(pick_columns(names, raw.label, given))
        return used_columns(chosen[0]), [chosen[0].user, chosen[0].item]

    source = read_columns(raw, sep, choose)
    return source, chosen[0]


def used_columns(columns: Columns) -> list[str]:
    return [c for c in (columns.user, columns.item, columns.time, columns.rating) if c]


def table_interactions(source: Source, columns: Columns, log: Callable[[str], object] = print) -> Interactions:
    """The table's interactions (ids coded, times in ticks) and one line saying what was found in it."""
    check_rows(source)
    users, user_labels = encode_ids(source, columns.user, natural_order=True)
    items, item_labels = encode_ids(source, columns.item, natural_order=False)
    if columns.time:
        times, scale, kind = parse_times(source, columns.time)
    else:
        times, scale, kind = np.arange(source.table.num_rows, dtype=np.int64), 0, None
    ratings = _numbers(source, columns.rating, "rating") if columns.rating else None
    describe_source(source, columns, kind, log)
    return Interactions(users, items, times, ratings, user_labels, item_labels, scale)
