"""Data pipeline (bert4rec.data and bert_train/gen_data_fin.py) on synthetic data in every format."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import importlib.util
import json
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import GEN_SCRIPT, ML1M_SAS, REPO_ROOT, ratings_text, write_raw

from bert4rec.data import (
    GenerateOptions,
    build_sequences,
    detect_format,
    download_file,
    generate_dataset,
    load_eval_set,
    load_item_counts,
    load_train_instances,
    load_vocab,
    load_windows,
    sample_popular_negatives,
)
from bert4rec.data.raw import Interactions
from bert4rec.errors import UserError

SMALL = dict(max_seq_length=12, dupe_factor=3, max_predictions_per_seq=5, num_negatives=3)
SMALL_ARGS = ["--max_seq_length", "12", "--dupe_factor", "3", "--max_predictions_per_seq", "5"]
SMALL_ARGS += ["--num_negatives", "3", "--no_progress"]
DATA_FILES = ("vocab.txt", "users.txt", "item_counts.txt", "train.txt", "train_windows.txt", "test.txt")


def generate(raw: Path, out: Path, **kw) -> dict:
    opts = GenerateOptions(raw_path=raw, output_dir=out, **{**SMALL, **kw})
    return generate_dataset(opts, progress=False, log=lambda msg: None)


def read_lines(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


@functools.lru_cache(maxsize=1)
def _cli_module():
    spec = importlib.util.spec_from_file_location("gen_data_fin", GEN_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_cli_inprocess(args: list[str], capsys) -> tuple[int, str, str]:
    """Run gen_data_fin.py's ``run_cli(main)`` in this process; returns (exit code, stdout, stderr)."""
    from bert4rec.errors import run_cli

    module = _cli_module()
    with pytest.raises(SystemExit) as exc:
        run_cli(lambda: module.main(args))
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def assert_user_error(code: int, err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


# ---------------------------------------------------------------------------------------------------------
# Acceptance on the real ML-1M sequence benchmark
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not ML1M_SAS.exists(), reason=f"{ML1M_SAS} not present")
def test_acceptance_ml1m_sas(tmp_path):
    out = tmp_path / "ml-1m"
    opts = GenerateOptions(raw_path=ML1M_SAS, output_dir=out, holdout="test")
    stats = generate_dataset(opts, progress=False, log=lambda msg: None)
    assert stats["format"] == "seq"
    assert stats["num_users"] == 6040
    assert stats["num_items"] == 3416
    assert stats["num_interactions"] == 999_611
    assert stats["num_train_windows"] == 10_272
    assert stats["num_train_instances"] == 112_992
    assert stats["vocab_size"] == 3420
    assert stats["dropped_short_users"] == 0
    inst = load_train_instances(out / "train.txt")
    assert len(inst) == 112_992 and inst.lengths.max() == 200
    assert inst.num_masked.max() == 40
    users, items, offsets = load_windows(out / "train_windows.txt")
    assert len(users) == 10_272
    vocab = load_vocab(out / "vocab.txt")
    assert (vocab.size, vocab.num_items, vocab.mask_id) == (3420, 3416, 3417)
    assert vocab.original_ids[1:4] == ["1", "2", "3"]  # renumbering is the identity on this file
    test = load_eval_set(out / "test.txt")
    assert len(test) == 6040 and test.negatives.shape == (6040, 100)
    assert not (out / "valid.txt").exists()
    # full history before the target (not truncated): lengths add up to every interaction
    assert len(test.history) + len(test.targets) == 999_611
    counts = load_item_counts(out / "item_counts.txt")
    assert counts.sum() == 999_611 and counts[0] == 0
    # negatives: distinct, never an item of the user
    for u in range(0, 6040, 97):
        seen = set(test.user_history(u).tolist()) | {int(test.targets[u])}
        neg = test.negatives[u].tolist()
        assert len(set(neg)) == 100 and not seen & set(neg)


# ---------------------------------------------------------------------------------------------------------
# Formats, detection, parsing
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "fmt"),
    [
        (b"1::1193::5::978300760\n", "ml-1m"),
        (b"196\t242\t3\t881250949\n", "ml-100k"),
        (b"userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n", "ml-20m"),
        (b"1 1\n1 2\n", "seq"),
    ],
)
def test_detect_format(line, fmt):
    assert detect_format(line, "x") == fmt


def test_detect_format_unknown():
    with pytest.raises(UserError, match=r"x:1: cannot detect the format"):
        detect_format(b"hello world again\n", "x")


def test_every_format_and_packaging_gives_identical_output(tmp_path, synthetic):
    """ml-1m / ml-100k / ml-20m files, folders and zips, and the seq format: same data -> same files."""
    reference = None
    cases = [(fmt, pack) for fmt in ("ml-1m", "ml-100k", "ml-20m") for pack in ("file", "folder", "zip")]
    cases.append(("seq", "file"))
    for fmt, pack in cases:
        raw = write_raw(synthetic, tmp_path / f"raw-{fmt}-{pack}", fmt, pack)
        out = tmp_path / f"out-{fmt}-{pack}"
        stats = generate(raw, out)
        assert stats["format"] == fmt, (fmt, pack)
        files = {name: (out / name).read_bytes() for name in DATA_FILES + ("valid.txt",)}
        if reference is None:
            reference = files
        else:
            for name in files:
                assert files[name] == reference[name], (fmt, pack, name)


def test_forced_format_matches_auto(tmp_path, synthetic):
    raw = write_raw(synthetic, tmp_path / "raw", "ml-100k")
    a = generate(raw, tmp_path / "a")
    b = generate(raw, tmp_path / "b", format="ml-100k")
    assert a["num_train_instances"] == b["num_train_instances"]
    assert (tmp_path / "a/train.txt").read_bytes() == (tmp_path / "b/train.txt").read_bytes()


def test_windows_line_endings_are_accepted(tmp_path, synthetic):
    path = tmp_path / "ratings.dat"
    path.write_bytes(ratings_text(synthetic, "ml-1m").replace("\n", "\r\n").encode())
    generate(path, tmp_path / "crlf")
    generate(write_raw(synthetic, tmp_path / "lf", "ml-1m"), tmp_path / "plain")
    assert (tmp_path / "crlf/train.txt").read_bytes() == (tmp_path / "plain/train.txt").read_bytes()


# ---------------------------------------------------------------------------------------------------------
# Sorting, filtering, renumbering, split
# ---------------------------------------------------------------------------------------------------------


def test_sort_is_stable_and_filters_rare_items():
    # user 7: items 5, 6, 5 at the same second (file order kept), item 9 earlier; item 8 is rare
    users = np.array([7, 7, 7, 7, 3, 3, 3, 7, 3])
    items = np.array([5, 6, 5, 9, 6, 9, 5, 8, 9])
    times = np.array([50, 50, 50, 10, 3, 2, 1, 60, 4])
    seq = build_sequences(Interactions(users, items, times), min_item_count=2, min_length=2)
    assert seq.user_original.tolist() == [3, 7]  # new ids follow the original id order
    bounds = seq.offsets.tolist()
    chrono = [seq.item_original[seq.items[a:b] - 1].tolist() for a, b in zip(bounds, bounds[1:], strict=False)]
    assert chrono == [[5, 9, 6, 9], [9, 5, 6, 5]]
    assert seq.item_original.tolist() == [5, 9, 6]  # first appearance, users in order
    assert seq.removed_by_item_filter == 1 and seq.items_removed_by_item_filter == 1
    assert seq.counts.tolist() == [0, 3, 3, 2]


def test_split_vocab_users_and_counts(tmp_path, synthetic):
    out = tmp_path / "out"
    stats = generate(write_raw(synthetic, tmp_path, "ml-1m"), out)
    expected = synthetic.filtered_sequences(min_len=3)
    vocab = load_vocab(out / "vocab.txt")
    users = read_lines(out / "users.txt")
    assert [int(u) for u, _ in users] == list(range(1, len(expected) + 1))
    assert [int(orig) for _, orig in users] == sorted(expected)
    assert vocab.size == stats["num_items"] + 4 == stats["vocab_size"]
    assert vocab.tokens[0] == "[PAD]" and vocab.tokens[-3:] == ["[MASK]", "[UNK]", "[RESERVED]"]
    assert vocab.original_ids[0] == "-" and vocab.original_ids[-3:] == ["-", "-", "-"]
    assert vocab.mask_id == stats["num_items"] + 1 == stats["mask_id"]
    to_orig = [int(x) if x != "-" else 0 for x in vocab.original_ids]
    assert not set(to_orig) & synthetic.rare_items
    assert stats["dropped_short_users"] == len(synthetic.short_users)
    assert stats["num_interactions"] == sum(len(s) for s in expected.values())

    valid = load_eval_set(out / "valid.txt")
    test = load_eval_set(out / "test.txt")
    for evalset, drop in ((valid, 2), (test, 1)):
        assert evalset.users.tolist() == list(range(1, len(expected) + 1))
        for i, orig_user in enumerate(sorted(expected)):
            seq = expected[orig_user]
            history = [to_orig[t] for t in evalset.user_history(i)]
            assert history == seq[:-drop]
            assert to_orig[evalset.targets[i]] == seq[-drop]
    counts = load_item_counts(out / "item_counts.txt")
    flat = [i for s in expected.values() for i in s]
    assert counts[1:].tolist() == [flat.count(to_orig[t]) for t in range(1, vocab.num_items + 1)]


def test_holdout_test_keeps_two_item_users_and_has_no_valid(tmp_path, synthetic):
    out = tmp_path / "out"
    stats = generate(write_raw(synthetic, tmp_path, "ml-1m"), out, holdout="test")
    assert stats["dropped_short_users"] == 0
    assert not (out / "valid.txt").exists()
    test = load_eval_set(out / "test.txt")
    assert len(test) == len(synthetic.filtered_sequences(min_len=2))


@pytest.mark.parametrize("holdout", ["valid_test", "test"])
def test_no_heldout_target_in_training_data(tmp_path, synthetic, holdout):
    out = tmp_path / "out"
    generate(write_raw(synthetic, tmp_path, "ml-100k"), out, holdout=holdout)
    vocab = load_vocab(out / "vocab.txt")
    orig = np.array([int(x) if x != "-" else -1 for x in vocab.original_ids])
    inst = load_train_instances(out / "train.txt")
    _, win_items, _ = load_windows(out / "train_windows.txt")
    seen_in_training = set(orig[inst.tokens[inst.tokens != vocab.mask_id]].tolist())
    seen_in_training |= set(orig[inst.labels].tolist()) | set(orig[win_items].tolist())
    assert not seen_in_training & synthetic.test_items
    if holdout == "valid_test":
        assert not seen_in_training & synthetic.valid_items
    else:  # the paper protocol trains on the validation items: the check above can fail
        assert synthetic.valid_items <= seen_in_training


def test_training_instances_on_disk(tmp_path, synthetic):
    out = tmp_path / "out"
    stats = generate(write_raw(synthetic, tmp_path, "seq"), out, dupe_factor=4)
    inst = load_train_instances(out / "train.txt")
    w_users, w_items, w_off = load_windows(out / "train_windows.txt")
    vocab = load_vocab(out / "vocab.txt")
    per = 5
    assert len(inst) == len(w_users) * per == stats["num_train_instances"]
    assert stats["num_train_windows"] == len(w_users)
    assert np.array_equal(inst.users, np.repeat(w_users, per))
    for i in range(len(inst)):
        w = i // per
        window = w_items[w_off[w] : w_off[w + 1]]
        tokens = inst.tokens[inst.token_offsets[i] : inst.token_offsets[i + 1]]
        pos = inst.positions[inst.mask_offsets[i] : inst.mask_offsets[i + 1]]
        lab = inst.labels[inst.mask_offsets[i] : inst.mask_offsets[i + 1]]
        k = 1 if i % per == per - 1 else min(5, max(1, int(np.floor(len(window) * 0.2 + 0.5))))
        assert len(pos) == k
        if i % per == per - 1:
            assert pos.tolist() == [len(window) - 1]
        assert np.array_equal(lab, window[pos])
        assert np.all(tokens[pos] == vocab.mask_id)
        keep = np.ones(len(window), dtype=bool)
        keep[pos] = False
        assert np.array_equal(tokens[keep], window[keep])
    # windows per user follow the sliding rule on the training sequence (all but the last two items)
    expected = synthetic.filtered_sequences(min_len=3)
    step = int(0.5 * 12)
    for u, orig_user in enumerate(sorted(expected), start=1):
        n = len(expected[orig_user]) - 2
        n_windows = 1 if n <= 12 else len(range(n - 12, 0, -step)) + 1
        assert np.count_nonzero(w_users == u) == n_windows


# ---------------------------------------------------------------------------------------------------------
# Popularity negatives
# ---------------------------------------------------------------------------------------------------------


def test_negatives_exclude_user_items_and_are_distinct(tmp_path, synthetic):
    out = tmp_path / "out"
    generate(write_raw(synthetic, tmp_path, "ml-1m"), out, num_negatives=4)
    for name in ("valid.txt", "test.txt"):
        ev = load_eval_set(out / name)
        test = load_eval_set(out / "test.txt")
        assert ev.negatives.shape == (len(ev), 4)
        for i in range(len(ev)):
            everything = set(test.user_history(i).tolist()) | {int(test.targets[i])}
            neg = ev.negatives[i].tolist()
            assert len(set(neg)) == 4
            assert not everything & set(neg)


def test_negative_sampling_follows_popularity():
    rng = np.random.default_rng(0)
    n_items, n_users = 50, 20000
    counts = np.concatenate([[0], rng.integers(1, 200, size=n_items)])
    # every user has item 1 in the history: it must never be sampled
    items = np.ones(n_users, dtype=np.int32)
    offsets = np.arange(n_users + 1, dtype=np.int64)
    neg = sample_popular_negatives(items, offsets, counts, 1, np.random.default_rng(1))
    assert neg.shape == (n_users, 1) and neg.min() >= 2
    freq = np.bincount(neg.ravel(), minlength=n_items + 1)[2:] / n_users
    expected = counts[2:] / counts[2:].sum()
    assert np.corrcoef(freq, expected)[0, 1] > 0.98
    assert np.abs(freq - expected).max() < 0.01
    # several per user: distinct, and popular items are sampled more often
    neg = sample_popular_negatives(items, offsets, counts, 10, np.random.default_rng(2))
    assert all(len(set(row)) == 10 for row in neg[:500].tolist())
    freq = np.bincount(neg.ravel(), minlength=n_items + 1)[2:]
    assert np.corrcoef(freq, counts[2:])[0, 1] > 0.9


def test_negative_sampling_needs_enough_candidates():
    counts = np.array([0, 5, 5, 5, 5])
    items = np.array([1, 2], dtype=np.int32)
    with pytest.raises(UserError, match="--num_negatives 3"):
        sample_popular_negatives(items, np.array([0, 2]), counts, 3, np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------------------
# Determinism, re-runs
# ---------------------------------------------------------------------------------------------------------


def test_same_seed_same_files_different_seed_different(tmp_path, synthetic):
    raw = write_raw(synthetic, tmp_path / "raw", "ml-1m")
    generate(raw, tmp_path / "a")
    generate(raw, tmp_path / "b")
    generate(raw, tmp_path / "c", random_seed=1)
    generate(raw, tmp_path / "d", eval_seed=1)
    for name in DATA_FILES + ("valid.txt",):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    a = {name: (tmp_path / "a" / name).read_bytes() for name in DATA_FILES + ("valid.txt",)}
    assert (tmp_path / "c/train.txt").read_bytes() != a["train.txt"]
    assert (tmp_path / "c/test.txt").read_bytes() == a["test.txt"]
    assert (tmp_path / "c/train_windows.txt").read_bytes() == a["train_windows.txt"]
    assert (tmp_path / "d/test.txt").read_bytes() != a["test.txt"]
    assert (tmp_path / "d/valid.txt").read_bytes() != a["valid.txt"]
    assert (tmp_path / "d/train.txt").read_bytes() == a["train.txt"]


def test_rerun_is_noop_and_force_regenerates(tmp_path, synthetic, capsys):
    raw = write_raw(synthetic, tmp_path / "raw", "ml-1m")
    out = tmp_path / "out"
    args = ["--raw_path", str(raw), "--output_dir", str(out), *SMALL_ARGS]
    code, stdout, _ = run_cli_inprocess(args, capsys)
    assert code == 0 and "instances" in stdout
    stamp = (out / "train.txt").stat().st_mtime_ns
    code, stdout, _ = run_cli_inprocess(args, capsys)
    assert code == 0 and "up to date" in stdout
    assert (out / "train.txt").stat().st_mtime_ns == stamp
    code, stdout, _ = run_cli_inprocess([*args, "--force"], capsys)
    assert code == 0 and "up to date" not in stdout
    assert (out / "train.txt").stat().st_mtime_ns != stamp
    stamp = (out / "train.txt").stat().st_mtime_ns
    code, stdout, _ = run_cli_inprocess([*args, "--dupe_factor", "2"], capsys)  # other options: redo
    assert code == 0 and "up to date" not in stdout
    assert json.loads((out / "stats.json").read_text())["num_train_instances"] == len(
        load_train_instances(out / "train.txt")
    )
    raw.write_text(raw.read_text() + "12::1000::3::5\n")  # other input bytes: redo
    code, stdout, _ = run_cli_inprocess([*args, "--dupe_factor", "2"], capsys)
    assert code == 0 and "up to date" not in stdout


def test_stats_json_contents(tmp_path, synthetic):
    raw = write_raw(synthetic, tmp_path / "raw", "ml-1m", "zip")
    stats = generate(raw, tmp_path / "out")
    on_disk = json.loads((tmp_path / "out/stats.json").read_text())
    for key in (
        "num_users", "num_items", "num_interactions", "num_train_instances", "num_train_windows",
        "vocab_size", "dropped_short_users", "sequence_lengths", "options", "format", "input_file",
        "input_sha256", "timings_seconds",
    ):  # fmt: skip
        assert key in on_disk, key
    assert on_disk["sequence_lengths"]["train_windows"]["max"] <= 12
    assert set(on_disk["sequence_lengths"]["users"]) == {"min", "mean", "median", "max"}
    member = zipfile.ZipFile(raw).read("ml-1m/ratings.dat")
    assert on_disk["input_sha256"] == hashlib.sha256(member).hexdigest()
    assert on_disk["input_file_sha256"] == hashlib.sha256(raw.read_bytes()).hexdigest()
    assert on_disk["input_member"] == "ml-1m/ratings.dat"
    assert on_disk["options"]["dupe_factor"] == 3 and on_disk["options"]["masked_lm_prob"] == 0.2
    assert stats["num_train_instances"] == on_disk["num_train_instances"]


# ---------------------------------------------------------------------------------------------------------
# Bad input: one line, exit code 2, nothing left behind
# ---------------------------------------------------------------------------------------------------------


def _bad_case(tmp_path: Path, synthetic, case: str) -> tuple[list[str], tuple[str, ...]]:
    """Arguments for one bad-input case and the substrings its error line must contain."""
    good = write_raw(synthetic, tmp_path / "good", "ml-1m")
    lines = ratings_text(synthetic, "ml-1m").splitlines(keepends=True)

    def raw_with(text: str, name: str = "ratings.dat") -> str:
        path = tmp_path / "bad" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        return str(path)

    if case == "field_count":
        return ["--raw_path", raw_with("".join(lines[:2]) + "1::1000::5\n" + "".join(lines[2:]))], (
            "ratings.dat:3:", "expected 4 fields",
        )  # fmt: skip
    if case == "non_integer":
        return ["--raw_path", raw_with("".join(lines[:4]) + "1::abc::5::3\n")], ("ratings.dat:5:", "item")
    if case == "negative_id":
        return ["--raw_path", raw_with("".join(lines[:4]) + "-1::1000::5::3\n")], ("ratings.dat:5:", "user")
    if case == "wrong_separator":
        tabbed = ratings_text(synthetic, "ml-100k")
        return ["--raw_path", raw_with(tabbed), "--format", "ml-1m"], ("ratings.dat:1:", "tabs", "--format")
    if case == "mixed_separator":
        return ["--raw_path", raw_with("".join(lines[:6]) + "1\t1000\t5\t3\n")], ("ratings.dat:7:",)
    if case == "empty_line":
        return ["--raw_path", raw_with("".join(lines[:3]) + "\n" + "".join(lines[3:]))], (
            "ratings.dat:4:", "empty line",
        )  # fmt: skip
    if case == "seq_three_fields":
        return ["--raw_path", raw_with("1 1\n1 2 3\n", "seq.txt")], ("seq.txt:2:", "expected 2 fields")
    if case == "csv_bad_rating":
        text = "userId,movieId,rating,timestamp\n1,2,3.5,100\n1,3,x,101\n"
        return ["--raw_path", raw_with(text, "ratings.csv")], ("ratings.csv:3:", "rating")
    if case == "csv_no_header":
        return ["--raw_path", raw_with("1,2,3.5,100\n", "ratings.csv"), "--format", "ml-20m"], (
            "ratings.csv:1:", "header",
        )  # fmt: skip
    if case == "empty_file":
        return ["--raw_path", raw_with("")], ("ratings.dat", "empty")
    if case == "blank_file":
        return ["--raw_path", raw_with("\n\n  \n")], ("ratings.dat", "empty")
    if case == "missing_file":
        return ["--raw_path", str(tmp_path / "nope.dat")], ("nope.dat", "no such file")
    if case == "zip_without_ratings":
        path = tmp_path / "bad.zip"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("ml-1m/README", "no ratings here")
        return ["--raw_path", str(path)], ("bad.zip", "no ratings file")
    if case == "corrupt_zip":
        path = tmp_path / "corrupt.zip"
        path.write_bytes(b"PK\x03\x04 this is not really a zip")
        return ["--raw_path", str(path)], ("corrupt.zip",)
    if case == "folder_without_ratings":
        (tmp_path / "emptydir").mkdir()
        return ["--raw_path", str(tmp_path / "emptydir")], ("emptydir", "no ratings file")
    if case == "unknown_format":
        return ["--raw_path", raw_with("hello world foo\n", "x.txt")], ("x.txt:1:", "cannot detect")
    if case == "bad_format_flag":
        return ["--raw_path", str(good), "--format", "ml-2m"], ("--format",)
    if case == "no_user_long_enough":
        return ["--raw_path", raw_with("1 1\n2 1\n3 1\n4 1\n5 1\n", "seq.txt")], ("no user",)
    if case == "too_many_negatives":
        return ["--raw_path", str(good), "--num_negatives", "45"], ("--num_negatives 45",)
    if case == "unknown_dataset_no_raw":
        return ["--data_name", "my-data"], ("--data_name my-data", "--raw_path")
    option_cases = {
        "masked_lm_prob_0": (["--masked_lm_prob", "0"], "--masked_lm_prob"),
        "masked_lm_prob_nan": (["--masked_lm_prob", "nan"], "--masked_lm_prob"),
        "max_seq_length_1": (["--max_seq_length", "1"], "--max_seq_length"),
        "max_seq_length_text": (["--max_seq_length", "abc"], "--max_seq_length"),
        "dupe_factor_negative": (["--dupe_factor", "-1"], "--dupe_factor"),
        "mask_prob_above_1": (["--mask_prob", "1.5"], "--mask_prob"),
        "mask_prob_negative": (["--mask_prob", "-0.1"], "--mask_prob"),
        "prop_sliding_window_0": (["--prop_sliding_window", "0"], "--prop_sliding_window"),
        "prop_sliding_window_above_1": (["--prop_sliding_window", "1.5"], "--prop_sliding_window"),
        "prop_sliding_window_tiny_step": (["--prop_sliding_window", "0.001"], "step of at least 1"),
        "min_item_count_0": (["--min_item_count", "0"], "--min_item_count"),
        "max_predictions_0": (["--max_predictions_per_seq", "0"], "--max_predictions_per_seq"),
        "negative_seed": (["--random_seed", "-3"], "--random_seed"),
        "holdout_unknown": (["--holdout", "all"], "--holdout"),
        "data_name_path": (["--data_name", "../x"], "--data_name"),
        "unknown_flag": (["--dupe", "3"], "--dupe"),
    }
    flags, needle = option_cases[case]
    return ["--raw_path", str(good), *flags], (needle,)


BAD_CASES = [
    "field_count", "non_integer", "negative_id", "wrong_separator", "mixed_separator", "empty_line",
    "seq_three_fields", "csv_bad_rating", "csv_no_header", "empty_file", "blank_file", "missing_file",
    "zip_without_ratings", "corrupt_zip", "folder_without_ratings", "unknown_format", "bad_format_flag",
    "no_user_long_enough", "too_many_negatives", "unknown_dataset_no_raw", "masked_lm_prob_0",
    "masked_lm_prob_nan", "max_seq_length_1", "max_seq_length_text", "dupe_factor_negative",
    "mask_prob_above_1", "mask_prob_negative", "prop_sliding_window_0", "prop_sliding_window_above_1",
    "prop_sliding_window_tiny_step", "min_item_count_0", "max_predictions_0", "negative_seed",
    "holdout_unknown", "data_name_path", "unknown_flag",
]  # fmt: skip


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_one_line_exit_2_no_output(tmp_path, synthetic, capsys, case):
    args, needles = _bad_case(tmp_path, synthetic, case)
    out = tmp_path / "out" / "ds"
    (tmp_path / "out").mkdir()
    raw_dir = tmp_path / "raw_cache"
    code, _, err = run_cli_inprocess(
        [*args, "--output_dir", str(out), "--raw_dir", str(raw_dir), "--no_progress",
         "--download_url", "http://127.0.0.1:9/"],
    capsys)  # fmt: skip
    assert_user_error(code, err, *needles)
    assert list((tmp_path / "out").iterdir()) == []  # no output dir, no temp dir
    assert not raw_dir.exists()


def test_bad_input_keeps_previous_output_intact(tmp_path, synthetic, capsys):
    good = write_raw(synthetic, tmp_path / "good", "ml-1m")
    out = tmp_path / "out"
    generate(good, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = tmp_path / "bad.dat"
    bad.write_text("1::2::3\n")
    code, _, err = run_cli_inprocess(["--raw_path", str(bad), "--output_dir", str(out), "--force"], capsys)
    assert_user_error(code, err, "bad.dat:1:")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.dat", "good", "out"]


def test_short_users_are_dropped_and_counted(tmp_path, synthetic):
    stats = generate(write_raw(synthetic, tmp_path, "ml-1m"), tmp_path / "out", holdout="valid_test")
    assert stats["dropped_short_users"] == 2
    assert stats["dropped_short_user_interactions"] == 4
    assert stats["num_users"] == len(synthetic.sequences) - 2


# ---------------------------------------------------------------------------------------------------------
# Loaders: malformed files
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loader", "text", "needle"),
    [
        (load_train_instances, "1\t1 2 3\t0\t1\n1\t1 2\t0\n", "train.txt:2: expected 4 tab-separated fields"),
        (load_train_instances, "1\t1 2 3\t0\t1\n1\t1 x\t0\t1\n", "train.txt:2: unexpected character 'x'"),
        (load_train_instances, "1\t1 2 3\t0 1\t1\n", "train.txt:1: masked_positions and masked_labels"),
        (load_train_instances, "1\t1 2 3\t0\t1\n1\t1 2\t5\t1\n", "train.txt:2: masked position outside"),
        (load_train_instances, "1\t1 2 3\t1 1\t1 2\n", "train.txt:1: masked positions must be strictly"),
        (load_train_instances, "1\t1 2  3\t0\t1\n", "train.txt:1: empty line or field"),
        (load_train_instances, "1 2\t1 2 3\t0\t1\n", "train.txt:1: the user field"),
        (load_train_instances, "1\t1 2 99999999999\t0\t1\n", "train.txt:1: number too large"),
        (load_train_instances, "", "train.txt: file is empty"),
        (load_windows, "1\t1 2 3\n2\n", "train.txt:2: expected 2 tab-separated fields"),
        (load_eval_set, "1\t1 2\t3\t4 5\n2\t1\t3\t4\n", "train.txt:2: expected 2 negatives"),
        (load_eval_set, "1\t1 2\t3 4\t4 5\n", "train.txt:1: the target field"),
        (load_item_counts, "1\t5\n3\t7\n", "train.txt:2: item ids must be"),
        (load_vocab, "0\t[PAD]\t-\n1\t1\t10\n", "train.txt: expected [PAD]"),
        (load_vocab, "0\t[PAD]\t-\n2\t1\t10\n", "train.txt:2: token id must be 1"),
        (load_vocab, "0\t[PAD]\n", "train.txt:1: expected 3 tab-separated fields"),
    ],
)
def test_loaders_reject_malformed_files(tmp_path, loader, text, needle):
    path = tmp_path / "train.txt"
    path.write_text(text)
    with pytest.raises(UserError) as exc:
        loader(path)
    assert needle in str(exc.value)
    assert "\n" not in str(exc.value)


def test_loaders_missing_file(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_train_instances(tmp_path / "missing.txt")


def test_loader_round_trip_and_line_numbers_across_chunks(tmp_path, monkeypatch):
    import bert4rec.data.files as data

    monkeypatch.setattr(data, "_PARSE_CHUNK_BYTES", 64)  # many chunks: line numbers must carry over
    lines = [f"{u}\t{' '.join(str(i) for i in range(1, u + 2))}\t{u}\t{u + 1}" for u in range(1, 60)]
    lines[44] += " 7"
    path = tmp_path / "valid.txt"
    path.write_text("\n".join(lines))
    with pytest.raises(UserError, match=r"valid\.txt:45: expected 1 negatives"):
        load_eval_set(path)
    lines = [f"{u}\t{' '.join(str(i) for i in range(1, u + 2))}\t{u}\t{u + 1} {u + 2}" for u in range(1, 60)]
    path.write_text("\n".join(lines))  # no final newline: still accepted
    ev = load_eval_set(path)
    assert ev.users.tolist() == list(range(1, 60))
    assert ev.user_history(41).tolist() == list(range(1, 44))
    assert ev.negatives[41].tolist() == [43, 44]
    lines[50] = lines[50].replace("\t", "\t\t", 1)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"valid\.txt:51: empty line or field"):
        load_eval_set(path)


# ---------------------------------------------------------------------------------------------------------
# Download (local HTTP server only)
# ---------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def serve_directory(directory: Path):
    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep stderr clean: errors must be one line
            pass

    handler = functools.partial(QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_download_file_verifies_md5(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    payload = os.urandom(300_000)
    (site / "blob.zip").write_bytes(payload)
    md5 = hashlib.md5(payload).hexdigest()
    with serve_directory(site) as url:
        dest = download_file(url + "blob.zip", tmp_path / "cache" / "blob.zip", md5=md5, progress=False)
        assert dest.read_bytes() == payload
        with pytest.raises(UserError, match="md5") as exc:
            download_file(url + "blob.zip", tmp_path / "cache2" / "blob.zip", md5="0" * 32, progress=False)
        assert "put it at" in str(exc.value)
        assert not (tmp_path / "cache2").exists()
        with pytest.raises(UserError, match=r"blob2\.zip failed"):
            download_file(url + "blob2.zip", tmp_path / "cache3" / "x.zip", progress=False)


def test_cli_downloads_caches_and_checks_md5(tmp_path, synthetic, capsys, monkeypatch):
    site = tmp_path / "site"
    zip_path = write_raw(synthetic, site, "ml-1m", "zip")  # site/ml-1m.zip
    md5 = hashlib.md5(zip_path.read_bytes()).hexdigest()
    raw_dir = tmp_path / "raw"
    out = tmp_path / "out"
    base = ["--raw_dir", str(raw_dir), "--output_dir", str(out), *SMALL_ARGS]
    with serve_directory(site) as url:
        # the published GroupLens md5 does not match the synthetic zip: refused, nothing kept
        code, _, err = run_cli_inprocess([*base, "--download_url", url], capsys)
        assert_user_error(code, err, "ml-1m.zip", "md5", "c4d9eecfca2ab87c1945afe126590906")
        assert not raw_dir.exists() and not out.exists()
        # the environment variable sets the base URL too; with the right md5 it downloads and generates
        monkeypatch.setenv("BERT4REC_DOWNLOAD_URL", url)
        code, stdout, err = run_cli_inprocess([*base, "--download_md5", md5], capsys)
        assert code == 0, err
        assert (raw_dir / "ml-1m.zip").read_bytes() == zip_path.read_bytes()
        assert load_vocab(out / "vocab.txt").num_items == 46
    # server gone: the cached zip is used, no download attempted, but its md5 is checked again
    monkeypatch.setenv("BERT4REC_DOWNLOAD_URL", "http://127.0.0.1:9/")
    code, stdout, _ = run_cli_inprocess([*base, "--force", "--download_md5", md5], capsys)
    assert code == 0 and "downloading" not in stdout
    code, _, err = run_cli_inprocess([*base, "--force"], capsys)  # GroupLens's md5: not this synthetic zip
    assert_user_error(code, err, str(raw_dir / "ml-1m.zip"), "does not match", "delete it to download again")
    damaged = bytearray((raw_dir / "ml-1m.zip").read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    (raw_dir / "ml-1m.zip").write_bytes(bytes(damaged))
    code, _, err = run_cli_inprocess([*base, "--force", "--download_md5", md5], capsys)
    assert_user_error(code, err, "md5", "does not match")
    assert (raw_dir / "ml-1m.zip").read_bytes() == bytes(damaged)  # the user's file is never deleted
    # offline with nothing cached: one line naming the URL and where to put the zip
    code, _, err = run_cli_inprocess(["--raw_dir", str(tmp_path / "empty"), "--output_dir", str(out)], capsys)
    assert_user_error(code, err, "http://127.0.0.1:9/ml-1m.zip", str(tmp_path / "empty" / "ml-1m.zip"))


# ---------------------------------------------------------------------------------------------------------
# The CLI as users run it
# ---------------------------------------------------------------------------------------------------------


def _subprocess(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "gen_data_fin.py", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=120
    )


def test_cli_from_bert_train_directory(tmp_path, synthetic):
    raw = write_raw(synthetic, tmp_path / "raw", "ml-100k", "zip")
    name = f"pytest-{os.getpid()}"
    default_out = REPO_ROOT / "data" / name  # default output: <repo>/data/<data_name>, not the cwd
    try:
        result = _subprocess(["--raw_path", str(raw), "--data_name", name, *SMALL_ARGS], GEN_SCRIPT.parent)
        assert result.returncode == 0, result.stderr
        assert "instances" in result.stdout and str(default_out) in result.stdout
        assert (default_out / "train.txt").is_file() and (default_out / "valid.txt").is_file()
        assert not (GEN_SCRIPT.parent / "data").exists()
    finally:
        import shutil

        shutil.rmtree(default_out, ignore_errors=True)
    bad = _subprocess(["--raw_path", str(tmp_path / "missing.zip"), "--data_name", name], GEN_SCRIPT.parent)
    assert_user_error(bad.returncode, bad.stderr, "missing.zip")
    assert not default_out.exists()
