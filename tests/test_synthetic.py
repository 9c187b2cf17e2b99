"""bench/synthetic.py: the promised shape (exact sizes, long tails, learnable order), byte-for-byte
determinism, atomic writes, and one-line errors with exit status 2 for user mistakes."""

from __future__ import annotations

import gzip
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "synthetic.py"
USERS, ITEMS, ROWS = 400, 600, 30_000


def _load():
    spec = importlib.util.spec_from_file_location("bench_synthetic", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


synthetic = _load()


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def sized(out: Path, seed: int = 0, users: int = USERS, items: int = ITEMS, rows: int = ROWS) -> list[str]:
    return ["--users", str(users), "--items", str(items), "--interactions", str(rows), "--seed", str(seed),
            "--output", str(out)]


@pytest.fixture(scope="module")
def log_file(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "log.csv"
    assert synthetic.main([*sized(out), "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def frame(log_file) -> pd.DataFrame:
    return pd.read_csv(log_file, dtype={"user_id": str, "item_id": str, "timestamp": np.int64})


def test_same_seed_same_bytes_across_processes_other_seed_differs(tmp_path, log_file):
    for name in ("a.csv", "b.csv"):
        proc = run(*sized(tmp_path / name), "--quiet")
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes() == log_file.read_bytes()
    assert synthetic.main([*sized(tmp_path / "c.csv", seed=1), "--quiet"]) == 0
    assert (tmp_path / "c.csv").read_bytes() != log_file.read_bytes()


def test_gzip_is_deterministic_and_holds_the_same_csv(tmp_path, log_file):
    for name in ("a.csv.gz", "b.csv.gz"):
        assert synthetic.main([*sized(tmp_path / name), "--quiet"]) == 0
    packed = (tmp_path / "a.csv.gz").read_bytes()
    assert packed[:2] == b"\x1f\x8b" and packed == (tmp_path / "b.csv.gz").read_bytes()
    assert packed[3] == 0 and packed[4:8] == bytes(4)  # no file name, mtime 0: not just the same second
    assert gzip.decompress(packed) == log_file.read_bytes()


def test_header_ids_and_exact_sizes(log_file, frame):
    assert log_file.read_text().splitlines()[0] == "user_id,item_id,timestamp"
    assert len(frame) == ROWS
    assert frame.user_id.nunique() == USERS and frame.item_id.nunique() == ITEMS
    assert set(frame.user_id) == {f"u{n}" for n in range(1, USERS + 1)}
    assert set(frame.item_id) == {f"i{n}" for n in range(1, ITEMS + 1)}
    assert frame.groupby("user_id").size().min() >= synthetic.MIN_LEN


def test_timestamps_increase_per_user_and_globally(frame):
    t = frame.timestamp.to_numpy()
    assert np.all(np.diff(t) >= 0)  # the file is one global event log, in time order
    assert frame.groupby("user_id").timestamp.apply(lambda s: bool(np.all(np.diff(s.to_numpy()) > 0))).all()
    assert t.min() >= synthetic.START  # 2000-01-01
    gaps = frame.groupby("user_id").timestamp.diff().dropna()
    assert gaps.median() < 600 and gaps.max() > 86_400  # seconds within sessions, days between them
    assert frame.groupby("user_id").timestamp.min().nunique() > USERS * 0.9  # users start at different times


def test_long_tails_of_popularity_and_user_lengths(frame):
    counts = frame.item_id.value_counts().to_numpy()
    assert counts[: ITEMS // 10].sum() / ROWS > 0.4
    lengths = frame.user_id.value_counts().to_numpy()
    assert lengths.max() > 5 * np.median(lengths)


def test_previous_item_predicts_next_far_better_than_most_popular(frame):
    d = frame.assign(u=frame.user_id.str[1:].astype(int), i=frame.item_id.str[1:].astype(int))
    d = d.sort_values(["u", "timestamp"], kind="stable")
    pos, size = d.groupby("u").cumcount().to_numpy(), d.groupby("u").u.transform("size").to_numpy()
    users, items = d.u.to_numpy(), d.i.to_numpy()
    pair = users[1:] == users[:-1]
    train = pair & (pos[1:] < 0.8 * size[1:])
    pairs = pd.DataFrame({"prev": items[:-1][train], "next": items[1:][train]})
    best = pairs.groupby(["prev", "next"]).size().sort_values(ascending=False, kind="stable").reset_index()
    successor = best.drop_duplicates("prev").set_index("prev")["next"]
    popular = np.bincount(items[pos < 0.8 * size]).argmax()
    last = pair & (pos[1:] == size[1:] - 1)
    prev, target = items[:-1][last], items[1:][last]
    markov = np.mean(successor.reindex(prev).to_numpy() == target)
    mostpop = np.mean(target == popular)
    assert markov > 3 * max(mostpop, 1 / len(target)), (markov, mostpop)
    assert np.mean(items[1:][pair] == items[:-1][pair]) < 0.01  # (almost) no immediate repeats


def test_lengths_sum_exactly_and_catalogue_is_covered():
    for users, rows in [(1, 20), (1, 21), (7, 140), (50, 1_003), (999, 54_321)]:
        lengths = synthetic.user_lengths(np.random.default_rng(3), users, rows)
        assert lengths.sum() == rows and lengths.min() >= synthetic.MIN_LEN
    log = synthetic.generate(50, 3_000, 3_000, seed=5)  # a walk alone would miss many of these items
    assert sorted(np.unique(log["item_id"])) == list(range(1, 3_001))
    log = synthetic.generate(10, 5_000, 200, seed=5)  # too few rows to cover: still exact, no failure
    assert len(log["item_id"]) == 200 and log["item_id"].max() <= 5_000


def test_pandas_writer_gives_the_same_bytes_as_pyarrow(monkeypatch):
    pytest.importorskip("pyarrow.csv")
    log = synthetic.generate(30, 50, 900, seed=2)
    fast = b"".join(synthetic.csv_chunks(log))
    for name in ("pyarrow", "pyarrow.compute", "pyarrow.csv"):
        monkeypatch.setitem(sys.modules, name, None)  # importing it now raises ImportError
    assert b"".join(synthetic.csv_chunks(log)) == fast
    assert fast.splitlines()[0].decode().count(",") == 2 and b'"' not in fast


def test_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    out = tmp_path / "log.csv"
    out.write_text("old\n")

    def broken(log):
        yield b"u1,i1,1\n"
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(synthetic, "csv_chunks", broken)
    assert synthetic.main([*sized(out, users=5, rows=100), "--force", "--quiet"]) == 1
    assert out.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["log.csv"]


def test_presets_and_explicit_flags_override_them(tmp_path):
    out = str(tmp_path / "x.csv")
    args = synthetic.parse(["--preset", "ml20m", "--output", out])
    assert (args.users, args.items, args.interactions, args.seed) == (138_493, 26_744, 20_000_000, 0)
    args = synthetic.parse(["--preset", "catalog1m", "--users", "7", "--seed", "3", "--output", out])
    assert (args.users, args.items, args.interactions, args.seed) == (7, 1_000_000, 30_000_000, 3)


def test_progress_summary_unless_quiet(tmp_path, capsys):
    assert synthetic.main(sized(tmp_path / "a.csv", users=5, rows=100)) == 0
    err = capsys.readouterr().err
    assert "100 rows" in err and "5 users" in err and " s " in err
    assert synthetic.main([*sized(tmp_path / "a.csv", users=5, rows=100), "--force", "--quiet"]) == 0
    assert capsys.readouterr().err == ""


BAD = {
    "users_zero": (["--users", "0", "--items", "5", "--interactions", "100"], "--users"),
    "users_negative": (["--users", "-3", "--items", "5", "--interactions", "100"], "--users"),
    "items_one": (["--users", "5", "--items", "1", "--interactions", "100"], "--items"),
    "too_few_rows": (["--users", "5", "--items", "5", "--interactions", "99"], "--interactions"),
    "rows_not_a_number": (["--users", "5", "--items", "5", "--interactions", "1e5"], "--interactions"),
    "missing_sizes": (["--users", "5"], "--items"),
    "unknown_preset": (["--preset", "ml1b"], "--preset"),
    "unknown_flag": (["--preset", "small", "--colour"], "--colour"),
    "negative_seed": (["--preset", "small", "--seed", "-1"], "--seed"),
    "preset_override_too_few_rows": (["--preset", "small", "--interactions", "1000"], "--interactions"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_user_mistakes_one_error_line_exit_2_nothing_written(tmp_path, case):
    args, flag = BAD[case]
    proc = run(*args, "--output", str(tmp_path / "out.csv"))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and flag in lines[0] and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case", ["exists", "missing_folder", "not_csv", "no_output", "folder"])
def test_output_mistakes(tmp_path, case):
    existing = tmp_path / "old.csv"
    existing.write_text("keep\n")
    (tmp_path / "dir.csv").mkdir()
    out = {"exists": existing, "missing_folder": tmp_path / "nope" / "x.csv", "not_csv": tmp_path / "x.txt",
           "folder": tmp_path / "dir.csv"}.get(case)
    proc = run("--preset", "small", *(["--output", str(out)] if out else []))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "--output" in lines[0] and "Traceback" not in proc.stderr
    assert existing.read_text() == "keep\n" and sorted(p.name for p in tmp_path.iterdir()) == ["dir.csv", "old.csv"]
