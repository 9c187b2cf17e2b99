"""Generate training and evaluation data (the original BERT4Rec ``gen_data_fin.py``, reproduced, and any
interaction table: CSV / TSV / Parquet / RecBole).

    cd bert_train && python gen_data_fin.py                       # ML-1M from GroupLens (downloaded once)
    python bert_train/gen_data_fin.py --raw_path mylog.csv        # your own log -> data/mylog/
    python bert_train/gen_data_fin.py --raw_path ml-1m.txt --holdout test --data_name ml-1m-sas

Writes ``data/<data_name>/`` (vocab.txt, users.txt, item_counts.txt, train.txt, train_windows.txt, valid.txt,
test.txt, stats.json; item features when there are any); file formats are documented in ``data/README.md``.
Installed with pip the command is ``bert4rec-gen`` (same flags); default folders are then relative to the working
directory, in a checkout to the checkout.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bert4rec.cli._common import command_name, exit_code
from bert4rec.data import (
    DEFAULT_DOWNLOAD_URL,
    DOWNLOAD_URL_ENV,
    FORMATS,
    HOLDOUTS,
    SPLITS,
    GenerateOptions,
    generate_dataset,
)
from bert4rec.data.options import DATE_RULES
from bert4rec.errors import UserError


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad flags as a one-line ``UserError`` (exit code 2, no usage dump)."""

    def error(self, message: str):  # type: ignore[override]
        raise UserError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    d = GenerateOptions()
    p = _Parser(
        prog=command_name("gen_data_fin.py", "bert4rec-gen"),
        description="Generate BERT4Rec training/evaluation data into data/<data_name>/.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,
    )
    io = p.add_argument_group("input and output")
    io.add_argument(
        "--raw_path",
        type=Path,
        default=None,
        help="ratings input: a GroupLens zip (ml-1m.zip, ml-100k.zip, ml-20m.zip), its unpacked folder, "
        "a ratings.dat / u.data / ratings.csv file, or a 'user item' sequence file. Default: "
        "data/raw/<data_name>(.zip), downloaded from GroupLens when missing",
    )
    io.add_argument("--data_name", default=None,
                    help="dataset name: output folder and download (default: a table's file name, e.g. mylog for "
                    "mylog.csv; else ml-1m)")
    io.add_argument("--format", default=d.format, choices=FORMATS, help="input format (auto: from content)")
    io.add_argument("--output_dir", type=Path, default=None, help="output folder (default data/<data_name>)")
    io.add_argument("--raw_dir", type=Path, default=None, help="download cache (default data/raw)")
    io.add_argument(
        "--download_url",
        default=None,
        help=f"base URL of the archives (default ${DOWNLOAD_URL_ENV} or {DEFAULT_DOWNLOAD_URL})",
    )
    io.add_argument(
        "--download_md5", default=None, help="expected md5 of the download (default: GroupLens's md5)"
    )
    io.add_argument("--item_meta", type=Path, default=None,
                    help="item metadata (ML-1M movies.dat, ML-100K u.item, ML-20M movies.csv) for item_features.txt "
                    "(titles, genres, decade); default: the file that comes with a GroupLens zip or folder")
    io.add_argument("--item_id_map", type=Path, default=None,
                    help="'file_id original_id' lines mapping the input's item ids to MovieLens ids (needed with "
                    "--item_meta for a 'user item' file, e.g. sas_to_original_items.txt)")
    io.add_argument("--user_id_map", type=Path, default=None,
                    help="the same for user ids (e.g. sas_to_original_users.txt)")
    io.add_argument("--force", action="store_true", help="regenerate even if the output is up to date")
    io.add_argument("--no_progress", action="store_true", help="no progress bars")

    tb = p.add_argument_group("tables (CSV / TSV / Parquet / RecBole): columns detected from the usual names")
    tb.add_argument("--sep", default=None, help="CSV / TSV separator (default: sniffed from the header line)")
    tb.add_argument("--user_col", default=None, help="user id column (default: user_id, userId or user)")
    tb.add_argument("--item_col", default=None, help="item id column (default: item_id, itemId, movieId or item)")
    tb.add_argument("--time_col", default=None,
                    help="time column: epoch s / ms or ISO-8601 (default: timestamp, time, ts or datetime; "
                    "none found: file order)")
    tb.add_argument("--rating_col", default=None, help="rating column (default: rating, if present)")
    tb.add_argument("--item_table", type=Path, default=None,
                    help="item features / titles: CSV / TSV / Parquet / RecBole .item (a RecBole input's <name>.item "
                    "is used by default) -> item_features.tsv, read by SASRecF's selected_features")
    tb.add_argument("--item_table_id_col", default=None, help="--item_table's item id column (default: detected)")
    tb.add_argument("--item_feature_cols", default=None,
                    help="--item_table's feature columns, comma-separated (default for RecBole: its token and "
                    "token_seq columns)")
    tb.add_argument("--item_title_col", default=None, help="--item_table's title column (default: title, "
                    "movie_title or name)")
    tb.add_argument("--token_sep", default=None,
                    help="separator of several values in one feature cell (default '|'; RecBole token_seq: ' ')")

    sp = p.add_argument_group("filtering and split")
    sp.add_argument("--min_rating", type=float, default=None,
                    help="keep interactions rated at least this (implicit feedback from explicit ratings)")
    sp.add_argument("--min_item_count", type=int, default=d.min_item_count,
                    help="k-core: drop items with fewer interactions (repeated with --min_user_len until nothing "
                    "changes)")
    sp.add_argument("--min_user_len", type=int, default=None,
                    help="k-core: drop users with fewer interactions (default and minimum: what the split needs, "
                    "3 for --holdout valid_test, 2 for test)")
    sp.add_argument("--split", default=d.split, choices=SPLITS,
                    help="loo: leave-one-out (--holdout applies; every model); date: the session protocol "
                    "(GRU4Rec): the last --test_days in test, the --valid_days before in validation")
    sp.add_argument("--test_days", type=float, default=d.test_days, help="--split date: days of the test part")
    sp.add_argument("--valid_days", type=float, default=d.valid_days, help="--split date: days of validation")
    sp.add_argument("--session_gap", default=d.session_gap,
                    help="--split date: 'user' (each user's events are one session, the notebook's) or a gap such "
                    "as 30m, 2h, 1d: a new session after a longer pause")
    sp.add_argument("--date_rule", default=d.date_rule, choices=DATE_RULES,
                    help="--split date: global (every event by its own time: nothing evaluated precedes training) "
                    "or session_end (the notebook's: whole sessions by their last event; leaks)")
    sp.add_argument("--valid_start", default=None, help="--date_rule global: first day of validation (a date)")
    sp.add_argument("--test_start", default=None, help="--date_rule global: first day of test (a date)")
    sp.add_argument("--min_session_len", type=int, default=d.min_session_len,
                    help="--split date: shortest session kept (cleansing repeats until nothing changes)")
    sp.add_argument("--drop_duplicates", action="store_true",
                    help="drop lines repeating an earlier (user, item, timestamp); by default they are kept, "
                    "counted in stats.json and warned about")
    sp.add_argument(
        "--holdout",
        default=d.holdout,
        choices=HOLDOUTS,
        help="valid_test: last item = test, second-to-last = validation; test: paper protocol, no validation",
    )

    tr = p.add_argument_group("training instances")
    tr.add_argument("--max_seq_length", type=int, default=d.max_seq_length, help="window length")
    tr.add_argument(
        "--prop_sliding_window",
        type=float,
        default=d.prop_sliding_window,
        help="window step as a fraction of max_seq_length; -1: no overlap",
    )
    tr.add_argument("--dupe_factor", type=int, default=d.dupe_factor, help="random maskings per window")
    tr.add_argument("--max_predictions_per_seq", type=int, default=d.max_predictions_per_seq)
    tr.add_argument("--masked_lm_prob", type=float, default=d.masked_lm_prob, help="fraction masked")
    tr.add_argument(
        "--mask_prob",
        type=float,
        default=d.mask_prob,
        help="chosen position -> [MASK] with this probability, else half keep / half random item",
    )
    tr.add_argument("--random_seed", type=int, default=d.random_seed, help="seed of the masking")

    ev = p.add_argument_group("evaluation sets")
    ev.add_argument("--eval_seed", type=int, default=d.eval_seed, help="seed of the negative sampling")
    ev.add_argument("--num_negatives", type=int, default=d.num_negatives, help="negatives per user")
    return p


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    opts = GenerateOptions(
        raw_path=args.raw_path,
        data_name=args.data_name,
        format=args.format,
        output_dir=args.output_dir,
        raw_dir=args.raw_dir,
        download_url=args.download_url,
        download_md5=args.download_md5,
        min_item_count=args.min_item_count,
        holdout=args.holdout,
        max_seq_length=args.max_seq_length,
        prop_sliding_window=args.prop_sliding_window,
        dupe_factor=args.dupe_factor,
        max_predictions_per_seq=args.max_predictions_per_seq,
        masked_lm_prob=args.masked_lm_prob,
        mask_prob=args.mask_prob,
        random_seed=args.random_seed,
        eval_seed=args.eval_seed,
        num_negatives=args.num_negatives,
        drop_duplicates=args.drop_duplicates,
        min_rating=args.min_rating,
        min_user_len=args.min_user_len,
        sep=args.sep.encode().decode("unicode_escape") if args.sep else None,
        user_col=args.user_col,
        item_col=args.item_col,
        time_col=args.time_col,
        rating_col=args.rating_col,
        item_table=args.item_table,
        item_table_id_col=args.item_table_id_col,
        item_feature_cols=args.item_feature_cols,
        item_title_col=args.item_title_col,
        token_sep=args.token_sep,
        split=args.split,
        test_days=args.test_days,
        valid_days=args.valid_days,
        min_session_len=args.min_session_len,
        session_gap=args.session_gap,
        date_rule=args.date_rule,
        valid_start=args.valid_start,
        test_start=args.test_start,
        item_meta=args.item_meta,
        item_id_map=args.item_id_map,
        user_id_map=args.user_id_map,
        force=args.force,
    )
    stats = generate_dataset(opts, progress=False if args.no_progress else None)
    if stats.get("up_to_date"):
        return 0
    if stats.get("split") == "date":
        parts = ", ".join(f"{name} {p['sessions']:,} sessions / {p['events']:,} events ({p['first']} to "
                          f"{p['last']})" for name, p in stats["parts"].items())
        print(f"{stats['dataset']} ({stats['format']}, split by date): {stats['num_items']:,} items; {parts}")
        print(f"wrote {stats['output_dir']} in {stats['timings_seconds']['total']:.1f} s")
        return 0
    evals = ", ".join(f"{name} {n:,} users" for name, n in stats["num_eval_users"].items())
    print(
        f"{stats['dataset']} ({stats['format']}): {stats['num_users']:,} users, "
        f"{stats['num_items']:,} items, {stats['num_interactions']:,} interactions "
        f"({stats['dropped_short_users']:,} short users dropped)"
    )
    print(
        f"train: {stats['num_train_windows']:,} windows -> {stats['num_train_instances']:,} instances; "
        f"{evals} x {opts.num_negatives} negatives"
    )
    print(f"wrote {stats['output_dir']} in {stats['timings_seconds']['total']:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``gen_data_fin.py`` / ``bert4rec-gen``: the exit code (0; 2 for a user error, 3 for the machine's)."""
    return exit_code(lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
