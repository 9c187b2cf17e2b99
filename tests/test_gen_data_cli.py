"""bert_train/gen_data_fin.py as users run it: bad input is one line with exit code 2 and nothing left
behind, and the CLI from its own folder."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import (
    GEN_SCRIPT,
    REPO_ROOT,
    SMALL_ARGS,
    assert_user_error,
    generate,
    ratings_text,
    run_cli_inprocess,
    write_raw,
)

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
