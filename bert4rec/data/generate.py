"""The whole pipeline of ``bert_train/gen_data_fin.py``: raw ratings in, training and evaluation files out.

``generate_dataset``: read ratings (``bert4rec.data.raw``), treat every rating as an interaction, sort each user's
interactions by timestamp (stable: ties keep file order; the sequence format's order is its line order), drop
items with fewer than ``min_item_count`` interactions (one pass, counted over all interactions), drop users too
short to split (counted in ``stats.json``), renumber and split leave-one-out (``bert4rec.data.split``), cut
training windows and mask them (``bert4rec.instances``), sample popularity negatives for evaluation, and write
everything (``bert4rec.data.files``) into a temporary folder that replaces the output folder at the end. The
output folder is only ever replaced when it is provably an earlier output of the generator.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from bert4rec.data.files import SPECIAL_TOKENS, write_rows, write_users, write_vocab
from bert4rec.data.filters import describe, record, row_filters
from bert4rec.data.item_table import ITEM_TABLE_FILE, read_item_table
from bert4rec.data.items import (
    apply_id_map,
    find_item_meta,
    item_features_rows,
    meta_format,
    parse_item_meta,
    read_id_map,
)
from bert4rec.data.negatives import sample_popular_negatives
from bert4rec.data.options import GenerateOptions, sha256_file
from bert4rec.data.outdir import check_output_dir
from bert4rec.data.raw import RawInput, parse_interactions, read_raw, resolve_raw_path
from bert4rec.data.sessions import SessionData, build_sessions
from bert4rec.data.split import (
    SequenceData,
    build_sequences,
    leave_one_out_leakage,
    min_user_length,
    split_leave_one_out,
)
from bert4rec.data.tables import OWN_ID_FORMATS
from bert4rec.errors import UserError, os_failure
from bert4rec.fileio import atomic_dir, current_umask, read_bytes
from bert4rec.instances import generate_instances, length_stats, sliding_step

GENERATOR_VERSION = 1


OUTPUT_FILES = ("vocab.txt", "users.txt", "item_counts.txt", "train.txt", "train_windows.txt", "stats.json")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def expected_files(holdout: str, features_file: str | None = None) -> tuple[str, ...]:
    evaluation = ("valid.txt", "test.txt") if holdout == "valid_test" else ("test.txt",)
    return OUTPUT_FILES + evaluation + ((features_file,) if features_file else ())


SESSION_FILES = ("vocab.txt", "item_counts.txt", "train_sessions.txt", "valid_sessions.txt", "test_sessions.txt",
                 "stats.json")


def provenance(opts: GenerateOptions, raw: RawInput, fingerprint: str, out_dir: Path,
               files: Sequence[str]) -> dict:
    """What ``stats.json`` records of where an output came from: ``is_up_to_date`` and the output-folder rules
    (``bert4rec.data.outdir``) read it back."""
    return {"format": raw.format, "input_file": str(Path(raw.path).resolve()) if raw.path else raw.label,
            "input_member": raw.member,
            "input_sha256": fingerprint, "generator_version": GENERATOR_VERSION,
            "generation_options": opts.generation_options(),
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()},
            "output_dir": str(out_dir.resolve()), "files": list(files)}


def write_output(out_dir: Path, raw_path: Path | None, stats: dict, timings: dict, t_start: float,
                 write_files: Callable[[Path], None]) -> None:
    """Write a dataset atomically: ``write_files(tmp)`` writes its files, then ``stats.json``; the folder replaces
    ``out_dir`` only when everything was written (disk full, read-only...: one line, nothing replaced)."""
    check_output_dir(out_dir, [raw_path] if raw_path else [])  # again: the folder may have changed while we worked
    try:
        with atomic_dir(out_dir) as tmp:
            write_files(tmp)
            timings["total"] = round(time.perf_counter() - t_start, 3)
            stats["timings_seconds"] = timings
            (tmp / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
            tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes it 0700; give it the usual permissions
    except OSError as err:
        raise os_failure(err, out_dir) from None
    stats["up_to_date"] = False


def write_item_counts(path: Path, counts: np.ndarray) -> None:
    """``item_counts.txt``: item id and its training count, for items 1..N (``counts`` indexed by item id)."""
    n = len(counts) - 1
    write_rows(path, [(np.arange(1, n + 1, dtype=np.int64), None), (counts[1:], None)])


def write_sessions(tmp: Path, sessions: SessionData) -> None:
    write_vocab(tmp / "vocab.txt", sessions.item_original)
    write_item_counts(tmp / "item_counts.txt", sessions.counts)
    for name, (ids, items, offsets) in sessions.parts.items():
        write_rows(tmp / f"{name}_sessions.txt", [(ids, None), (items, offsets)])


def describe_leakage(audit: dict) -> str:
    """The audit as one line (every generated dataset prints it)."""
    before, total = audit["eval_targets_before_train_end"], audit["eval_targets"]
    head = "leakage audit: " + ("no evaluation target precedes the last training event" if before == 0 else
                                f"WARNING: {before:,} of {total:,} evaluation targets precede the last training "
                                "event" + (f" ({audit['split']})" if "split" in audit else "") if
                                before is not None else "no timestamps, order only")
    return (f"{head}; {audit['eval_items_unseen_in_train']:,} evaluation events of items unseen in training "
            f"removed; {audit['users_in_train_and_test']:,} users in both training and test")


def item_table_path(opts: GenerateOptions, raw: RawInput) -> Path | None:
    """``--item_table``, else the ``<name>.item`` next to a RecBole ``<name>.inter``."""
    if opts.item_table is not None:
        return Path(opts.item_table)
    if raw.format == "recbole" and raw.path is not None:
        inter = raw.path / raw.member if raw.path.is_dir() else raw.path
        candidate = inter.with_suffix(".item")
        return candidate if candidate.is_file() else None
    return None


def original_ids_and_metadata(opts: GenerateOptions, raw: RawInput, seq: SequenceData, log: Callable
                              ) -> tuple[np.ndarray, np.ndarray, tuple[str, list[str]] | None, dict]:
    """The original item and user ids written to vocab.txt and users.txt (through the id maps when given),
    and (file name, lines) of the item features when there are any: ``item_features.tsv`` from an item table,
    ``item_features.txt`` from MovieLens metadata (given, or next to the ratings)."""
    items, users = seq.item_original, seq.user_original
    info: dict = {"item_ids": "as in the input", "user_ids": "as in the input", "item_meta": None}
    if opts.item_id_map is not None:
        items = apply_id_map(items, read_id_map(Path(opts.item_id_map), "item"), Path(opts.item_id_map), "item")
        info["item_ids"] = f"original ids from {opts.item_id_map}"
    if opts.user_id_map is not None:
        users = apply_id_map(users, read_id_map(Path(opts.user_id_map), "user"), Path(opts.user_id_map), "user")
        info["user_ids"] = f"original ids from {opts.user_id_map}"
    table = item_table_path(opts, raw)
    if table is not None:
        lines, counts = read_item_table(table, items, opts.item_table_id_col, opts.feature_columns(),
                                        opts.item_title_col, opts.token_sep)
        info.update(item_table=counts)
        log(f"item table {counts['item_table']}: id {counts['id_column']!r}, title {counts['title_column']!r}, "
            f"features {counts['feature_columns']}; {counts['items_without_a_row']:,} of {counts['items']:,} items "
            "have no row")
        return items, users, (ITEM_TABLE_FILE, lines), info
    if opts.item_meta is not None:
        if raw.format == "seq" and opts.item_id_map is None:
            raise UserError("--item_meta with a 'user item' sequence file needs --item_id_map: its item ids are "
                            "renumbered, so they are not the metadata's movie ids")
        found = (read_bytes(Path(opts.item_meta)), str(opts.item_meta), meta_format(Path(opts.item_meta)))
    else:
        comes_with_data = raw.format not in ("seq", *OWN_ID_FORMATS) or opts.item_id_map is not None
        found = find_item_meta(raw.path) if comes_with_data else None
    if found is None:
        return items, users, None, info
    data, label, fmt = found
    lines, counts = item_features_rows(items, parse_item_meta(data, label, fmt))
    info.update(item_meta=label, item_features=counts)
    if counts["items_without_metadata"]:
        log(f"warning: {counts['items_without_metadata']:,} of {counts['items']:,} items have no line in {label} "
            "(their features are [UNK])")
    return items, users, ("item_features.txt", lines), info


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
    return same and all((out_dir / name).is_file() for name in stats.get("files", ()))


def _tqdm(progress: bool | None, **kwargs):
    from tqdm import tqdm

    return tqdm(disable=(not progress) if progress is not None else None, **kwargs)


def generate_dataset(
    opts: GenerateOptions, progress: bool | None = None, log: Callable[[str], object] = print,
    frame: RawInput | None = None,
) -> dict:
    """Run the whole pipeline; returns the stats written to ``stats.json`` (or the existing ones when
    the output is up to date). ``progress=None`` shows tqdm bars only on a terminal. ``frame``: a table given
    in memory (the Python API's ``Dataset.from_frame``) instead of ``opts.raw_path``."""
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, t0: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - t0, 3)
        return now

    opts.validate()
    out_dir = opts.resolved_output_dir()
    inputs = [] if frame is not None else [Path(opts.raw_path)] if opts.raw_path is not None else \
        [opts.resolved_raw_dir()]
    check_output_dir(out_dir, inputs)
    raw_path = None if frame is not None else resolve_raw_path(opts, progress=progress, log=log)
    t = time.perf_counter()
    raw = frame if frame is not None else read_raw(raw_path, opts.format)
    fingerprint = sha256_bytes(raw.data)
    t = lap("read", t)
    if not opts.force and is_up_to_date(out_dir, opts, fingerprint):
        stats = json.loads((out_dir / "stats.json").read_text(encoding="utf-8"))
        stats["up_to_date"] = True
        log(f"{out_dir} is up to date (same input sha256 and options); use --force to regenerate")
        return stats

    opts.check_applies_to(raw.format)
    inter = parse_interactions(raw, opts.sep, opts.column_flags(), log)
    inter, filters, num_duplicates = row_filters(inter, raw.label, opts.min_rating, opts.drop_duplicates,
                                                 find_duplicates=raw.format != "seq", log=log)
    time_scale = inter.time_scale
    t = lap("parse", t)
    if opts.split == "date":
        sessions = build_sessions(inter, raw.format, opts.test_days, opts.valid_days, opts.min_session_len,
                                  opts.min_item_count, opts.session_gap, opts.date_rule, opts.valid_start,
                                  opts.test_start)
        log(describe_leakage(sessions.stats["leakage"]))
        stats = {"dataset": opts.name, "split": "date", "num_items": int(len(sessions.item_original)),
                 "vocab_size": int(len(sessions.item_original)) + 1 + len(SPECIAL_TOKENS), **sessions.stats,
                 "duplicate_interactions": num_duplicates,
                 **provenance(opts, raw, fingerprint, out_dir, SESSION_FILES)}
        write_output(out_dir, raw_path, stats, timings, t_start, lambda tmp: write_sessions(tmp, sessions))
        return stats
    min_len = max(opts.min_user_len or 0, min_user_length(opts.holdout))
    seq = build_sequences(inter, opts.min_item_count, min_len)
    before = {"interactions": seq.num_raw_interactions, "users": seq.num_raw_users, "items": seq.num_raw_items}
    filters.append(record(f"k-core (items >= {opts.min_item_count}, users >= {min_len})", before,
                          {"interactions": int(len(seq.items)), "users": seq.num_users, "items": seq.num_items},
                          rounds=seq.filter_rounds))
    log(describe(filters[-1]))
    leakage = leave_one_out_leakage(seq, opts.holdout)
    log(describe_leakage(leakage))
    del inter
    (train_items, train_offsets), eval_parts = split_leave_one_out(seq, opts.holdout)
    item_original, user_original, feature_lines, id_info = original_ids_and_metadata(opts, raw, seq, log)
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
        "dataset": opts.name,
        "num_users": seq.num_users,
        "num_items": num_items,
        "num_interactions": int(len(seq.items)),
        "num_train_instances": len(instances),
        "num_train_windows": int(len(win_users)),
        "vocab_size": num_items + 1 + len(SPECIAL_TOKENS),
        "pad_id": 0,
        "mask_id": mask_id,
        "duplicate_interactions": num_duplicates,
        "duplicates_dropped": bool(opts.drop_duplicates and num_duplicates),
        "dropped_short_users": seq.dropped_short_users,
        "dropped_short_user_interactions": seq.dropped_short_interactions,
        "min_user_interactions": min_len,
        "filters": filters,
        "leakage": leakage,
        "time_unit": {0: None, 1: "seconds", 1000: "milliseconds"}[time_scale],
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
        **provenance(opts, raw, fingerprint, out_dir,
                     expected_files(opts.holdout, feature_lines[0] if feature_lines else None)),
        "input_file_sha256": sha256_file(raw.path) if raw.path and raw.path.is_file() and raw.member else fingerprint,
        "ids_and_metadata": id_info,
        "sliding_step": step,
        "numpy_version": np.__version__,
        "python_version": sys.version.split()[0],
    }

    def write_files(tmp: Path) -> None:
        write_vocab(tmp / "vocab.txt", item_original)
        if feature_lines is not None:
            (tmp / feature_lines[0]).write_text("\n".join(feature_lines[1]) + "\n", encoding="utf-8")
        write_users(tmp / "users.txt", user_original)
        write_item_counts(tmp / "item_counts.txt", seq.counts)
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

    write_output(out_dir, raw_path, stats, timings, t_start, write_files)
    return stats
