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
import math
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bert4rec.data.files import SPECIAL_TOKENS, write_rows, write_vocab
from bert4rec.data.items import (
    apply_id_map,
    find_item_meta,
    item_features_rows,
    meta_format,
    parse_item_meta,
    read_id_map,
)
from bert4rec.data.outdir import check_output_dir
from bert4rec.data.raw import FORMATS, RawInput, parse_interactions, read_raw, resolve_raw_path
from bert4rec.data.sessions import SessionData, build_sessions
from bert4rec.data.split import (
    HOLDOUTS,
    SequenceData,
    build_sequences,
    duplicate_interactions,
    min_user_length,
    sample_popular_negatives,
    split_leave_one_out,
)
from bert4rec.errors import UserError, os_failure
from bert4rec.fileio import atomic_dir, current_umask, file_digest, read_bytes
from bert4rec.instances import generate_instances, length_stats, sliding_step

REPO_ROOT = Path(__file__).resolve().parents[2]
SPLITS = ("loo", "date")
GENERATOR_VERSION = 1


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
    split: str = "loo"              # loo: leave-one-out (every model); date: the session protocol (GRU4Rec)
    test_days: float = 14.0         # --split date
    valid_days: float = 14.0        # --split date
    min_session_len: int = 2        # --split date
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
    item_meta: Path | None = None    # movies.dat / u.item / movies.csv (default: the one next to the ratings)
    item_id_map: Path | None = None  # "file_id original_id" lines: original (MovieLens) item ids
    user_id_map: Path | None = None  # the same for users
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
            "drop_duplicates",
            "split",
            "test_days",
            "valid_days",
            "min_session_len",
        )
        extra = {f"{k}_sha256": sha256_file(Path(getattr(self, k))) if getattr(self, k) else None
                 for k in ("item_meta", "item_id_map", "user_id_map")}
        return {**{k: getattr(self, k) for k in keys}, **extra}

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
        if self.split not in SPLITS:
            raise bad("split", f"must be one of {', '.join(SPLITS)}")
        if self.split == "date" and self.holdout != "valid_test":
            raise UserError("--holdout applies to --split loo; --split date makes its own validation and test parts")
        for option in ("test_days", "valid_days"):
            if not finite(getattr(self, option)) or getattr(self, option) <= 0:
                raise bad(option, "must be a number of days > 0")
        if self.min_session_len < 2:
            raise bad("min_session_len", "must be >= 2 (a session needs an event to predict)")
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
        for option in ("item_meta", "item_id_map", "user_id_map"):
            path = getattr(self, option)
            if path is not None and not Path(path).is_file():
                raise UserError(f"--{option} {path}: file not found")
        if self.item_meta is not None:
            meta_format(Path(self.item_meta))



OUTPUT_FILES = ("vocab.txt", "users.txt", "item_counts.txt", "train.txt", "train_windows.txt", "stats.json")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    return file_digest(path, "sha256")


def expected_files(holdout: str, with_features: bool = False) -> tuple[str, ...]:
    evaluation = ("valid.txt", "test.txt") if holdout == "valid_test" else ("test.txt",)
    return OUTPUT_FILES + evaluation + (("item_features.txt",) if with_features else ())


SESSION_FILES = ("vocab.txt", "item_counts.txt", "train_sessions.txt", "valid_sessions.txt", "test_sessions.txt",
                 "stats.json")


def provenance(opts: GenerateOptions, raw: RawInput, fingerprint: str, out_dir: Path,
               files: Sequence[str]) -> dict:
    """What ``stats.json`` records of where an output came from: ``is_up_to_date`` and the output-folder rules
    (``bert4rec.data.outdir``) read it back."""
    return {"format": raw.format, "input_file": str(Path(raw.path).resolve()), "input_member": raw.member,
            "input_sha256": fingerprint, "generator_version": GENERATOR_VERSION,
            "generation_options": opts.generation_options(),
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()},
            "output_dir": str(out_dir.resolve()), "files": list(files)}


def write_output(out_dir: Path, raw_path: Path, stats: dict, timings: dict, t_start: float,
                 write_files: Callable[[Path], None]) -> None:
    """Write a dataset atomically: ``write_files(tmp)`` writes its files, then ``stats.json``; the folder replaces
    ``out_dir`` only when everything was written (disk full, read-only...: one line, nothing replaced)."""
    check_output_dir(out_dir, [raw_path])  # again: the folder may have changed while we worked
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


def original_ids_and_metadata(opts: GenerateOptions, raw: RawInput, seq: SequenceData, log: Callable
                              ) -> tuple[np.ndarray, np.ndarray, list[str] | None, dict]:
    """The original item and user ids written to vocab.txt and users.txt (through the id maps when given),
    and the lines of item_features.txt when metadata is available (given, or next to the ratings)."""
    items, users = seq.item_original, seq.user_original
    info: dict = {"item_ids": "as in the input", "user_ids": "as in the input", "item_meta": None}
    if opts.item_id_map is not None:
        items = apply_id_map(items, read_id_map(Path(opts.item_id_map), "item"), Path(opts.item_id_map), "item")
        info["item_ids"] = f"original ids from {opts.item_id_map}"
    if opts.user_id_map is not None:
        users = apply_id_map(users, read_id_map(Path(opts.user_id_map), "user"), Path(opts.user_id_map), "user")
        info["user_ids"] = f"original ids from {opts.user_id_map}"
    if opts.item_meta is not None:
        if raw.format == "seq" and opts.item_id_map is None:
            raise UserError("--item_meta with a 'user item' sequence file needs --item_id_map: its item ids are "
                            "renumbered, so they are not the metadata's movie ids")
        found = (read_bytes(Path(opts.item_meta)), str(opts.item_meta), meta_format(Path(opts.item_meta)))
    else:
        found = find_item_meta(raw.path) if raw.format != "seq" or opts.item_id_map is not None else None
    if found is None:
        return items, users, None, info
    data, label, fmt = found
    lines, counts = item_features_rows(items, parse_item_meta(data, label, fmt))
    info.update(item_meta=label, item_features=counts)
    if counts["items_without_metadata"]:
        log(f"warning: {counts['items_without_metadata']:,} of {counts['items']:,} items have no line in {label} "
            "(their features are [UNK])")
    return items, users, lines, info


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
    duplicates = duplicate_interactions(inter) if raw.format != "seq" else np.zeros(len(inter.users), dtype=bool)
    num_duplicates = int(duplicates.sum())
    if num_duplicates:
        if opts.drop_duplicates:
            inter = inter.subset(~duplicates)
        what = "dropped" if opts.drop_duplicates else "kept as separate interactions; --drop_duplicates drops them"
        log(f"warning: {raw.label}: {num_duplicates:,} lines repeat an earlier (user, item, timestamp) ({what})")
    t = lap("parse", t)
    if opts.split == "date":
        sessions = build_sessions(inter, raw.format, opts.test_days, opts.valid_days, opts.min_session_len,
                                  opts.min_item_count)
        stats = {"dataset": opts.data_name, "split": "date", "num_items": int(len(sessions.item_original)),
                 "vocab_size": int(len(sessions.item_original)) + 1 + len(SPECIAL_TOKENS), **sessions.stats,
                 "duplicate_interactions": num_duplicates,
                 **provenance(opts, raw, fingerprint, out_dir, SESSION_FILES)}
        write_output(out_dir, raw_path, stats, timings, t_start, lambda tmp: write_sessions(tmp, sessions))
        return stats
    seq = build_sequences(inter, opts.min_item_count, min_user_length(opts.holdout))
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
        "dataset": opts.data_name,
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
        **provenance(opts, raw, fingerprint, out_dir, expected_files(opts.holdout, feature_lines is not None)),
        "input_file_sha256": sha256_file(raw.path) if raw.path.is_file() and raw.member else fingerprint,
        "ids_and_metadata": id_info,
        "sliding_step": step,
        "numpy_version": np.__version__,
        "python_version": sys.version.split()[0],
    }

    def write_files(tmp: Path) -> None:
        write_vocab(tmp / "vocab.txt", item_original)
        if feature_lines is not None:
            (tmp / "item_features.txt").write_text("\n".join(feature_lines) + "\n", encoding="utf-8")
        originals = np.asarray(user_original, dtype=np.int64)
        write_rows(tmp / "users.txt", [(user_ids.astype(np.int64), None), (originals, None)])
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
