"""Item features and titles from any item table: ``--item_table`` (CSV / TSV / Parquet / RecBole ``.item``), or the
``<name>.item`` next to a RecBole ``.inter`` file.

* the id column: ``--item_table_id_col``, else the usual item names (``item_id``, ``itemId``, ``movieId``, ``item``);
* the title column: ``--item_title_col``, else ``title`` / ``movie_title`` / ``name`` when present;
* feature columns: ``--item_feature_cols a,b``; for a RecBole file every other ``token`` / ``token_seq`` column.
  A ``token_seq`` value (RecBole) is split on spaces, any other value on ``--token_sep`` (default ``|``).

Written to ``item_features.tsv``: a header ``item_id, original_id, title, <features>`` and one line per item 1..N,
several values of a feature joined by ``|``. An item without a row has no title and no feature values (counted in
``stats.json``); a table none of whose ids is an item of the interactions is an error. SASRecF's
``selected_features`` names these columns (RecBole's ``class`` on ml-100k).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bert4rec.data.tables import (
    COLUMN_NAMES,
    Source,
    encode_ids,
    first_line,
    read_columns,
    recbole_header,
)
from bert4rec.errors import UserError

ITEM_TABLE_FILE = "item_features.tsv"
TITLE_NAMES = ("title", "movie_title", "name", "item_name")
FIXED = ("item_id", "original_id", "title")


def _one(names: list[str], candidates: tuple[str, ...], label: str, what: str, flag: str) -> str | None:
    lower = [n for c in candidates for n in names if n.lower() == c]
    found = list(dict.fromkeys(lower))
    if len(found) > 1:
        raise UserError(f"{label}: columns {', '.join(map(repr, found))} could each be the {what}; choose with {flag}")
    return found[0] if found else None


def _clean(token: str) -> str:
    return token.replace("\t", " ").replace("|", "/").replace("\n", " ").strip()


def read_item_table(path: Path, item_original: np.ndarray, id_col: str | None = None,
                    feature_cols: list[str] | None = None, title_col: str | None = None,
                    token_sep: str | None = None) -> tuple[list[str], dict]:
    """Lines of ``item_features.tsv`` for the items ``item_original`` (ids 1..N), and the counts for stats.json."""
    from bert4rec.data.raw import read_raw

    raw = read_raw(Path(path))
    types: dict[str, str] = {}
    if raw.format == "recbole":
        names, kinds = recbole_header(first_line(raw.data), raw.label)
        types = dict(zip(names, kinds, strict=True))
    chosen: dict[str, object] = {}

    def choose(names: list[str]) -> tuple[list[str], list[str]]:
        for flag, name in (("--item_table_id_col", id_col), ("--item_title_col", title_col),
                           *(("--item_feature_cols", c) for c in feature_cols or [])):
            if name and name not in names:
                raise UserError(f"{flag} {name!r}: {raw.label} has no such column (columns: {', '.join(names)})")
        ident = id_col or _one(names, COLUMN_NAMES["item"], raw.label, "item id column", "--item_table_id_col")
        if ident is None:
            raise UserError(f"{raw.label}: no item id column (looked for {', '.join(COLUMN_NAMES['item'])}); name it "
                            "with --item_table_id_col")
        title = title_col or _one(names, TITLE_NAMES, raw.label, "title column", "--item_title_col")
        features = list(feature_cols) if feature_cols else [
            n for n in names if types.get(n) in ("token", "token_seq") and n not in (ident, title)]
        chosen.update(id=ident, title=title, features=features)
        wanted = list(dict.fromkeys([ident, *([title] if title else []), *features]))
        return wanted, wanted

    source = read_columns(raw, None, choose)
    return item_table_lines(source, chosen, item_original, types, token_sep)


def item_table_lines(source: Source, chosen: dict, item_original: np.ndarray, types: dict[str, str],
                     token_sep: str | None) -> tuple[list[str], dict]:
    """The ``item_features.tsv`` lines of ``read_item_table``: one row per item of the dataset, in id order."""
    codes, labels = encode_ids(source, chosen["id"], natural_order=False)
    seen: dict[str, int] = {}  # item id -> its row
    for row, code in enumerate(codes.tolist()):
        label = labels[code]
        if label in seen:
            raise UserError(f"{source.where(row, chosen['id'])}: item {label!r} has a second row (first: "
                            f"{source.where(seen[label], chosen['id']).split(': column')[0]})")
        seen[label] = row
    wanted = [str(x) for x in np.asarray(item_original).tolist()]
    matched = [seen.get(x) for x in wanted]
    if not any(r is not None for r in matched):
        examples = ", ".join(repr(x) for x in list(seen)[:3])
        raise UserError(f"{source.label}: none of its {len(seen):,} item ids ({examples}, ...) is an item of the "
                        f"interactions (e.g. {wanted[0]!r}); wrong file or --item_table_id_col?")
    columns = {name: source.table.column(name).to_pylist() for name in [chosen["title"], *chosen["features"]] if name}
    features = chosen["features"]
    lines = ["\t".join([*FIXED, *features])]
    for item, (original, row) in enumerate(zip(wanted, matched, strict=True), start=1):
        title = _clean(str(columns[chosen["title"]][row] or "")) if chosen["title"] and row is not None else ""
        values = []
        for name in features:
            value = columns[name][row] if row is not None else None
            sep = token_sep or (" " if types.get(name) == "token_seq" else "|")
            tokens = [_clean(t) for t in str(value).split(sep)] if value not in (None, "") else []
            values.append("|".join(t for t in tokens if t))
        lines.append("\t".join([str(item), original, title, *values]))
    info = {"item_table": source.label, "id_column": chosen["id"], "title_column": chosen["title"],
            "feature_columns": features, "items": len(wanted),
            "items_without_a_row": sum(r is None for r in matched),
            "rows_not_in_dataset": len(seen) - sum(r is not None for r in matched)}
    return lines, info


def parse_item_table_file(path: Path, num_items: int) -> tuple[list[str], dict[str, list[tuple[str, ...]]]]:
    """Titles and features (per item id 0..N) of a generated ``item_features.tsv``."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t") if lines else []
    if header[:3] != list(FIXED) or len(lines) != num_items + 1:
        raise UserError(f"{path}: expected a header {', '.join(FIXED)}, <features> and one line per item "
                        f"1..{num_items}")
    names = header[3:]
    titles = [""] * (num_items + 1)
    features: dict[str, list[tuple[str, ...]]] = {n: [()] * (num_items + 1) for n in names}
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(header) or fields[0] != str(number - 1):
            raise UserError(f"{path}:{number}: expected {len(header)} tab-separated fields for item {number - 1}")
        titles[number - 1] = fields[2]
        for name, value in zip(names, fields[3:], strict=True):
            features[name][number - 1] = tuple(value.split("|")) if value else ()
    return titles, features
