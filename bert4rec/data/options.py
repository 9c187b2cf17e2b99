"""The options of the generator (the flags of ``bert_train/gen_data_fin.py``, the keywords of the Python API's
``Dataset``), validated before any work starts."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from bert4rec.data.items import meta_format
from bert4rec.data.raw import FORMATS
from bert4rec.data.sessions import parse_gap
from bert4rec.data.split import HOLDOUTS
from bert4rec.data.tables import OWN_ID_FORMATS
from bert4rec.errors import UserError
from bert4rec.fileio import file_digest
from bert4rec.instances import sliding_step
from bert4rec.paths import project_root

SPLITS = ("loo", "date")
DATE_RULES = ("global", "session_end")


def sha256_file(path: Path) -> str:
    return file_digest(path, "sha256")


TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq", ".inter")


def default_data_name(raw_path: Path | None) -> str:
    """``mylog`` for ``mylog.csv(.gz)`` / ``.parquet`` / a RecBole file or folder; ``ml-1m`` otherwise (the
    MovieLens inputs keep the name ``train.sh`` and ``trainrec.py`` default to)."""
    if raw_path is None:
        return "ml-1m"
    path = Path(raw_path)
    name = path.name[:-3] if path.name.lower().endswith(".gz") else path.name
    stem, suffix = Path(name).stem, Path(name).suffix.lower()
    if suffix in TABLE_SUFFIXES or (path.is_dir() and (path / f"{path.name}.inter").is_file()):
        cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", stem if suffix in TABLE_SUFFIXES else path.name).lstrip("._-")
        return cleaned or "data"
    return "ml-1m"


@dataclass
class GenerateOptions:
    """Options of ``generate_dataset`` (the CLI flags of ``bert_train/gen_data_fin.py``)."""

    raw_path: Path | None = None
    data_name: str | None = None  # default: the table file's name (mylog.csv -> mylog), else ml-1m
    format: str = "auto"
    output_dir: Path | None = None  # default: <repo>/data/<data_name>
    raw_dir: Path | None = None  # default: <repo>/data/raw (download cache)
    download_url: str | None = None  # default: $BERT4REC_DOWNLOAD_URL or GroupLens
    download_md5: str | None = None  # default: the md5 GroupLens publishes
    min_item_count: int = 5
    holdout: str = "valid_test"
    split: str = "loo"              # loo: leave-one-out (every model); date: the session protocol (GRU4Rec)
    test_days: float = 14.0         # --split date
    valid_days: float = 14.0        # --split date
    min_session_len: int = 2        # --split date
    session_gap: str = "user"       # --split date: "user" (one session per user) or a gap such as 30m, 2h, 1d
    date_rule: str = "global"       # --split date: global cut times, or session_end (the notebook's, leaky)
    valid_start: str | None = None  # --split date, global: the first day of validation (default: from valid_days)
    test_start: str | None = None   # --split date, global: the first day of test (default: from test_days)
    max_seq_length: int = 200
    prop_sliding_window: float = 0.5
    dupe_factor: int = 10
    max_predictions_per_seq: int = 40
    masked_lm_prob: float = 0.2
    mask_prob: float = 1.0
    random_seed: int = 12345
    eval_seed: int = 98765
    num_negatives: int = 100
    drop_duplicates: bool = False  # drop repeated (user, item, timestamp) lines (kept and counted by default)
    min_rating: float | None = None  # keep interactions rated at least this (implicit feedback from ratings)
    min_user_len: int | None = None  # k-core: users need this many interactions (default: what the split needs)
    sep: str | None = None  # CSV / TSV separator (default: sniffed from the header)
    user_col: str | None = None  # table columns (default: detected from the usual names)
    item_col: str | None = None
    time_col: str | None = None
    rating_col: str | None = None
    item_table: Path | None = None  # item features / titles: CSV / TSV / Parquet / RecBole .item
    item_table_id_col: str | None = None  # its item id column (default: detected)
    item_feature_cols: str | list[str] | None = None  # "a,b": its feature columns (RecBole: token[_seq] columns)
    item_title_col: str | None = None  # its title column (default: title / movie_title / name)
    token_sep: str | None = None  # separator of several values in one feature cell (default "|"; RecBole: " ")
    item_meta: Path | None = None    # movies.dat / u.item / movies.csv (default: the one next to the ratings)
    item_id_map: Path | None = None  # "file_id original_id" lines: original (MovieLens) item ids
    user_id_map: Path | None = None  # the same for users
    force: bool = False

    @property
    def name(self) -> str:
        """The dataset name: ``data_name``, else a table file's name (``mylog.csv`` -> ``mylog``), else ml-1m."""
        return self.data_name or default_data_name(self.raw_path)

    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else project_root() / "data" / self.name

    def resolved_raw_dir(self) -> Path:
        return Path(self.raw_dir) if self.raw_dir else project_root() / "data" / "raw"

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
            "drop_duplicates",
            "split",
            "test_days",
            "valid_days",
            "min_session_len",
            "session_gap",
            "date_rule",
            "valid_start",
            "test_start",
            "min_rating",
            "min_user_len",
            "sep",
            "user_col",
            "item_col",
            "time_col",
            "rating_col",
            "item_table_id_col",
            "item_feature_cols",
            "item_title_col",
            "token_sep",
        )
        extra = {f"{k}_sha256": sha256_file(Path(getattr(self, k))) if getattr(self, k) else None
                 for k in ("item_meta", "item_id_map", "user_id_map", "item_table")}
        return {**{k: getattr(self, k) for k in keys}, **extra}

    def validate(self) -> None:
        """Raise ``UserError`` naming the first option whose value is out of range."""

        def bad(option: str, requirement: str) -> UserError:
            return UserError(f"--{option} {requirement}, got {getattr(self, option)!r}")

        def finite(value: float) -> bool:
            return isinstance(value, int | float) and math.isfinite(value)

        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name):
            raise bad("data_name", "must be a plain name (letters, digits, '.', '_', '-')")
        if self.format not in FORMATS:
            raise bad("format", f"must be one of {', '.join(FORMATS)}")
        if self.holdout not in HOLDOUTS:
            raise bad("holdout", f"must be one of {', '.join(HOLDOUTS)}")
        if self.split not in SPLITS:
            raise bad("split", f"must be one of {', '.join(SPLITS)}")
        if self.split == "date" and self.holdout != "valid_test":
            raise UserError("--holdout applies to --split loo; --split date makes its own validation and test parts")
        for option in ("test_days", "valid_days"):
            if not finite(getattr(self, option)) or getattr(self, option) <= 0:
                raise bad(option, "must be a number of days > 0")
        if self.date_rule not in DATE_RULES:
            raise bad("date_rule", f"must be one of {', '.join(DATE_RULES)}")
        parse_gap(self.session_gap)
        if self.date_rule == "session_end" and (self.valid_start or self.test_start):
            raise UserError("--valid_start / --test_start are cut dates of --date_rule global")
        if self.min_session_len < 2:
            raise bad("min_session_len", "must be >= 2 (a session needs an event to predict)")
        if self.min_item_count < 1:
            raise bad("min_item_count", "must be >= 1")
        if self.min_user_len is not None and self.min_user_len < 1:
            raise bad("min_user_len", "must be >= 1")
        if self.min_rating is not None and not finite(self.min_rating):
            raise bad("min_rating", "must be a number")
        if self.sep is not None and len(self.sep) != 1:
            raise bad("sep", "must be one character (e.g. ',' or a tab: $'\\t')")
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
        if self.item_table is not None and self.item_meta is not None:
            raise UserError("--item_table and --item_meta are two sources of item features: give one")
        for option in ("item_meta", "item_id_map", "user_id_map", "item_table"):
            path = getattr(self, option)
            if path is not None and not Path(path).is_file():
                raise UserError(f"--{option} {path}: file not found")
        if self.item_meta is not None:
            meta_format(Path(self.item_meta))

    def feature_columns(self) -> list[str] | None:
        cols = self.item_feature_cols
        if cols is None:
            return None
        return [c.strip() for c in (cols.split(",") if isinstance(cols, str) else cols) if c.strip()] or None

    def column_flags(self) -> dict[str, str | None]:
        return {"user": self.user_col, "item": self.item_col, "time": self.time_col, "rating": self.rating_col}

    def check_applies_to(self, fmt: str) -> None:
        """Refuse table-only flags for the MovieLens and sequence layouts (their columns are fixed)."""
        if fmt in OWN_ID_FORMATS:
            if self.item_id_map is not None or self.user_id_map is not None:
                raise UserError(f"--item_id_map / --user_id_map are for MovieLens and 'user item' inputs; a {fmt} "
                                "input keeps its own ids")
            return
        given = [f"--{k}" for k in ("sep", "user_col", "item_col", "time_col", "rating_col") if getattr(self, k)]
        if given:
            raise UserError(f"{given[0]} applies to CSV / TSV / Parquet / RecBole inputs; this input is {fmt}, whose "
                            "columns are fixed")
        if self.min_rating is not None and fmt == "seq":
            raise UserError("--min_rating: the 'user item' sequence file has no ratings")
