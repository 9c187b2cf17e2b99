"""Own data in: CSV / TSV / Parquet / RecBole tables with string ids give the same generated files as the
MovieLens file they were made from (up to the id maps), whatever the separator, quoting, compression or row order;
columns, times and filters are detected / applied as documented; bad input is one error line and writes nothing."""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import GEN_SCRIPT, make_synthetic, ratings_text

from bert4rec.data import GenerateOptions, generate_dataset
from bert4rec.errors import UserError

ML100K = Path(__file__).resolve().parents[2] / "shared/data/ml-100k/u.data"
ID_FREE_FILES = ("train.txt", "train_windows.txt", "valid.txt", "test.txt", "item_counts.txt")


def generate(raw: Path, out: Path, **kw) -> dict:
    kw.setdefault("num_negatives", 10)
    return generate_dataset(GenerateOptions(raw_path=raw, output_dir=out, dupe_factor=2, **kw), progress=False,
                            log=lambda *_: None)


def originals(out: Path, name: str) -> list[str]:
    lines = (out / name).read_text(encoding="utf-8").splitlines()
    return [line.split("\t")[-1] for line in lines]


def ratings_frame(rows) -> pd.DataFrame:
    """``u<id>`` / ``m<id>`` string ids of (user, item, rating, timestamp) rows, in the same row order."""
    u, i, r, t = (list(c) for c in zip(*rows, strict=True))
    return pd.DataFrame({"user_id": [f"u{x}" for x in u], "item_id": [f"m{x}" for x in i], "rating": r,
                         "timestamp": t})


def write_recbole(frame: pd.DataFrame, folder: Path) -> Path:
    """RecBole atomic files of a frame: ``<name>/<name>.inter`` with a typed header."""
    folder.mkdir(parents=True)
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    body = "".join(f"{a}\t{b}\t{c}\t{d}\n" for a, b, c, d in frame.itertuples(index=False))
    (folder / f"{folder.name}.inter").write_text(header + body, encoding="utf-8")
    return folder


@pytest.fixture(params=["ml-100k", "synthetic"])
def source(request, tmp_path) -> tuple[Path, list[tuple[int, int, int, int]]]:
    """ML-100K's u.data (when the shared data is there) and synthetic ratings in its format."""
    if request.param == "ml-100k" and not ML100K.is_file():
        pytest.skip(f"{ML100K} not present (the synthetic case runs)")
    return source_rows(tmp_path, request.param)


def source_rows(tmp_path: Path, which: str) -> tuple[Path, list[tuple[int, int, int, int]]]:
    if which == "ml-100k":
        rows = [tuple(int(x) for x in line.split("\t")) for line in ML100K.read_text().splitlines()]
        return ML100K, rows
    data = make_synthetic(seed=3, n_users=60)
    path = tmp_path / "u.data"
    path.write_text(ratings_text(data, "ml-100k"))
    return path, data.rows


def assert_same_up_to_ids(a: Path, b: Path, prefix_users: str = "u", prefix_items: str = "m") -> None:
    for name in ID_FREE_FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert [prefix_items + x if x != "-" else x for x in originals(a, "vocab.txt")] == originals(b, "vocab.txt")
    assert [prefix_users + x for x in originals(a, "users.txt")] == originals(b, "users.txt")


def test_movielens_csv_parquet_and_recbole_give_the_same_files(tmp_path, source):
    udata, rows = source
    frame = ratings_frame(rows)
    frame.to_csv(tmp_path / "ratings.csv", index=False)
    frame.to_parquet(tmp_path / "ratings.parquet")
    recbole = write_recbole(frame, tmp_path / "ml100k")
    base = tmp_path / "out_udata"
    generate(udata, base, format="ml-100k")
    for name, raw in (("csv", tmp_path / "ratings.csv"), ("parquet", tmp_path / "ratings.parquet"),
                      ("recbole", recbole)):
        out = tmp_path / f"out_{name}"
        stats = generate(raw, out)
        assert stats["format"] == name
        assert_same_up_to_ids(base, out)


def test_the_same_metrics_for_the_same_seed(tmp_path):
    from conftest import options, tiny_config

    from bert4rec.train import train

    data = make_synthetic(seed=5, n_users=80)
    udata = tmp_path / "u.data"
    udata.write_text(ratings_text(data, "ml-100k"))
    ratings_frame(data.rows).to_csv(tmp_path / "mine.csv", index=False)
    results = []
    for name, raw in (("int", udata), ("str", tmp_path / "mine.csv")):
        out = tmp_path / f"data_{name}"
        generate(raw, out, min_item_count=1, num_negatives=10, max_seq_length=50)
        vocab_size = len(originals(out, "vocab.txt"))
        config = tiny_config(tmp_path / f"{name}.json", vocab_size=vocab_size, model="SASRec")
        results.append(train(options(tmp_path, out, f"run_{name}", config_path=config, num_train_steps=20,
                                     eval_every=10)))
    assert results[0]["test"] == results[1]["test"] and results[0]["test"]["full"]["NDCG@10"] > 0


def sequences_by_original(out: Path) -> dict[str, list[str]]:
    """Every user's whole sequence (test history + test target) in original ids."""
    from bert4rec.data import load_eval_set

    items, users = originals(out, "vocab.txt"), originals(out, "users.txt")
    test = load_eval_set(out / "test.txt")
    return {users[int(test.users[r]) - 1]: [items[i] for i in [*test.user_history(r), int(test.targets[r])]]
            for r in range(len(test))}


def test_shuffled_rows_give_the_same_sequences_but_for_ties(tmp_path, source):
    udata, rows = source
    frame = ratings_frame(rows)
    frame.to_csv(tmp_path / "a.csv", index=False)
    frame.sample(frac=1.0, random_state=1).to_csv(tmp_path / "b.csv", index=False)
    stats = [generate(tmp_path / f"{n}.csv", tmp_path / f"out_{n}") for n in "ab"]
    for key in ("num_users", "num_items", "num_interactions"):
        assert stats[0][key] == stats[1][key]
    a, b = (sequences_by_original(tmp_path / f"out_{n}") for n in "ab")
    assert a.keys() == b.keys()
    kept = {x for seq in a.values() for x in seq}
    events: dict[str, list[tuple[int, str]]] = {}
    for u, i, _r, t in frame.itertuples(index=False):
        if i in kept:
            events.setdefault(u, []).append((t, i))
    differ = 0
    for user in a:
        groups: dict[int, list[str]] = {}
        for t, i in sorted(events[user]):
            groups.setdefault(t, []).append(i)
        sizes = np.cumsum([0] + [len(g) for g in groups.values()])
        for seq in (a[user], b[user]):  # time order, any order among equal times
            chunks = [sorted(seq[lo:hi]) for lo, hi in zip(sizes[:-1], sizes[1:], strict=True)]
            assert chunks == [sorted(g) for g in groups.values()], user
        differ += a[user] != b[user]
    assert differ < len(a)  # only users with equal timestamps may differ


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def small_log(n_users: int = 6, n_items: int = 8, per_user: int = 6) -> list[tuple[str, str, int]]:
    rng = random.Random(0)
    users = [f"user {u:03d}" for u in range(n_users)]
    return [(u, f"SKU-{rng.randrange(n_items):04d}", 1_600_000_000 + 60 * k + j)
            for j, u in enumerate(users) for k in range(per_user)]


def test_ids_are_opaque_strings_kept_exactly(tmp_path):
    rows = [("007", "a", 1), ("7", "a", 2), ("007", "b", 3), ("7", "b", 4), ("007", "é, ü", 5), ("7", "é, ü", 6),
            ("007", "a", 7), ("7", "a", 8), ("x y", "a", 9), ("x y", "b", 10), ("x y", "é, ü", 11),
            ("zz", "d1", 12), ("zz", "d2", 13), ("zz", "d3", 14)]
    text = "user_id,item_id,timestamp\r\n" + "".join(f'"{u}","{i}",{t}\r\n' for u, i, t in rows)
    raw = write(tmp_path / "log.csv", "\ufeff" + text)
    stats = generate(raw, tmp_path / "out", min_item_count=1, num_negatives=1)
    assert originals(tmp_path / "out", "users.txt") == ["007", "7", "x y", "zz"]  # natural order; 007 is not 7
    assert sorted(originals(tmp_path / "out", "vocab.txt")[1:4]) == ["a", "b", "é, ü"]
    assert stats["num_interactions"] == len(rows) and stats["dataset"] == "log"


@pytest.mark.parametrize("sep", [",", ";", "|", "\t"])
def test_separator_is_sniffed_and_gzip_read_through(tmp_path, sep):
    rows = small_log()
    text = sep.join(["userId", "itemId", "ts"]) + "\n" + "".join(f"{u}{sep}{i}{sep}{t}\n" for u, i, t in rows)
    suffix = ".tsv.gz" if sep == "\t" else ".csv.gz"
    raw = tmp_path / f"log{suffix}"
    raw.write_bytes(gzip.compress(text.encode()))
    stats = generate(raw, tmp_path / "out", min_item_count=1, num_negatives=1)
    assert stats["num_interactions"] == len(rows) and stats["num_users"] == 6


def test_times_seconds_milliseconds_floats_and_iso_order_the_same(tmp_path):
    rows = small_log()
    rng = random.Random(1)
    rng.shuffle(rows)
    outputs = []
    for kind, fmt in (("s", lambda t: str(t)), ("ms", lambda t: str(t * 1000)), ("float", lambda t: f"{t}.25"),
                      ("iso", lambda t: pd.Timestamp(t, unit="s", tz="UTC").isoformat())):
        raw = write(tmp_path / f"{kind}.csv", "user,item,time\n" + "".join(f"{u},{i},{fmt(t)}\n" for u, i, t in rows))
        lines = []
        generate_dataset(GenerateOptions(raw_path=raw, output_dir=tmp_path / kind, min_item_count=1,
                                         num_negatives=1, dupe_factor=1), progress=False, log=lines.append)
        outputs.append((tmp_path / kind / "test.txt").read_bytes())
        expected = {"s": "integer epoch seconds", "ms": "integer epoch milliseconds",
                    "float": "fractional epoch seconds", "iso": "ISO-8601"}[kind]
        assert any(expected in line for line in lines), lines
    assert len(set(outputs)) == 1


def test_no_time_column_means_file_order(tmp_path):
    order = {1: (5, 3, 9, 1), 2: (1, 9, 3, 5), 3: (7, 8, 6)}
    raw = write(tmp_path / "log.csv", "user_id,item_id\n" + "".join(f"u{u},i{i}\n" for u, items in order.items()
                                                                     for i in items))
    generate(raw, tmp_path / "out", min_item_count=1, num_negatives=1)
    assert sequences_by_original(tmp_path / "out") == {f"u{u}": [f"i{i}" for i in items] for u, items in order.items()}
    with pytest.raises(UserError, match="no time column"):
        generate(raw, tmp_path / "out2", min_item_count=1, split="date")


def test_min_rating_and_iterated_k_core(tmp_path):
    # by hand: z is rare (1 event) -> u3 keeps 2 events (< 3) and goes -> c keeps 2 events and goes -> u1 and u2
    # keep 2 events each and go; a and b still have 3 (u4-u6). One pass would have kept u1, u2 and c.
    rows = [("u1", "a", 5), ("u1", "b", 5), ("u1", "c", 5), ("u1", "d", 1),
            ("u2", "a", 4), ("u2", "b", 4), ("u2", "c", 4),
            ("u3", "c", 4), ("u3", "a", 4), ("u3", "z", 4),
            ("u4", "a", 4), ("u4", "b", 4), ("u4", "e", 4), ("u5", "a", 4), ("u5", "b", 4), ("u5", "e", 4),
            ("u6", "a", 4), ("u6", "b", 4), ("u6", "e", 4),
            *[(f"u{u}", i, 4) for u in (7, 8, 9) for i in "fgh"]]
    raw = write(tmp_path / "r.csv", "user_id,item_id,rating,timestamp\n"
                + "".join(f"{u},{i},{r},{k}\n" for k, (u, i, r) in enumerate(rows)))
    stats = generate(raw, tmp_path / "out", min_item_count=3, min_rating=4, num_negatives=1)
    names = [f["filter"] for f in stats["filters"]]
    assert names == ["min_rating >= 4", "k-core (items >= 3, users >= 3)"]
    assert stats["filters"][0]["after"]["interactions"] == len(rows) - 1
    assert stats["filters"][1]["rounds"] == 3
    assert set(sequences_by_original(tmp_path / "out")) == {"u4", "u5", "u6", "u7", "u8", "u9"}
    assert set(originals(tmp_path / "out", "vocab.txt")[1:-3]) == set("abefgh")


def run_gen(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(GEN_SCRIPT), "--no_progress", *args], capture_output=True, text=True,
                          timeout=120)


def test_cli_prints_the_columns_and_filters_it_chose(tmp_path):
    rows = small_log()
    raw = write(tmp_path / "clicks.csv", "userId,movieId,datetime,extra\n"
                + "".join(f"{u},{i},{t},x\n" for u, i, t in rows))
    proc = run_gen("--raw_path", str(raw), "--output_dir", str(tmp_path / "out"), "--min_item_count", "1",
                   "--num_negatives", "1")
    assert proc.returncode == 0, proc.stderr
    assert "user = 'userId' (detected), item = 'movieId' (detected), time = 'datetime' (detected)" in proc.stdout
    assert "filter k-core (items >= 1, users >= 3)" in proc.stdout
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["format"] == "csv" and stats["time_unit"] == "seconds"


BAD_INPUTS = [
    ("empty.csv", "", [], "file is empty"),
    ("header.csv", "user_id,item_id,timestamp\n", [], "no data rows (only a header)"),
    ("nouser.csv", "who,item_id\na,b\n", [], "no user column"),
    ("ambiguous.csv", "user_id,userId,item_id\na,a,b\n", [], "choose one with --user_col"),
    ("flag.csv", "user_id,item_id\na,b\n", ["--time_col", "when"], "--time_col 'when': "),
    ("time.csv", "user_id,item_id,timestamp\na,b,1\na,c,yesterday\n", [], "time.csv:3: column 'timestamp'"),
    ("rating.csv", "user_id,item_id,rating\na,b,5\na,c,good\n", [], "rating.csv:3: column 'rating': rating"),
    ("fields.csv", "user_id,item_id\na,b\na,b,c\n", [], "fields.csv:3: expected 2 fields"),
    ("emptyid.csv", 'user_id,item_id\na,b\n"",c\n', [], "emptyid.csv:3: column 'user_id': the id '' is empty"),
    ("notype.inter", "user_id\titem_id:token\na\tb\n", [], "notype.inter:1: field 1 'user_id' has no type"),
    ("badtype.inter", "user_id:token\titem_id:str\na\tb\n", [], "unknown type 'str'"),
    ("rated.csv", "user_id,item_id,rating\na,b,1\na,c,2\n", ["--min_rating", "4"], "--min_rating 4 removed every"),
    ("kcore.csv", "user_id,item_id\na,b\na,c\n", [], "no user has the 3 interactions the split needs"),
    ("noratings.csv", "user_id,item_id\na,b\n", ["--min_rating", "4"], "has no rating column"),
]


@pytest.mark.parametrize("name,text,flags,needle", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_one_error_line_and_writes_nothing(tmp_path, name, text, flags, needle):
    raw = write(tmp_path / name, text)
    out = tmp_path / "out"
    proc = run_gen("--raw_path", str(raw), "--output_dir", str(out), *flags)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert needle in lines[0], lines[0]
    assert not out.exists()


def test_column_flags_are_refused_for_movielens_layouts(tmp_path):
    data = make_synthetic()
    raw = write(tmp_path / "u.data", ratings_text(data, "ml-100k"))
    proc = run_gen("--raw_path", str(raw), "--output_dir", str(tmp_path / "out"), "--user_col", "x")
    assert proc.returncode == 2 and "--user_col applies to CSV / TSV / Parquet / RecBole inputs" in proc.stderr


def test_frame_and_file_through_the_api_match_the_cli(tmp_path):
    import bert4rec as br

    rows = small_log(n_users=10)
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    frame.to_csv(tmp_path / "log.csv", index=False)
    proc = run_gen("--raw_path", str(tmp_path / "log.csv"), "--output_dir", str(tmp_path / "cli"),
                   "--min_item_count", "1", "--num_negatives", "2")
    assert proc.returncode == 0, proc.stderr
    br.Dataset.from_frame(frame, time="timestamp", min_item_count=1, num_negatives=2).save(tmp_path / "api",
                                                                                           progress=False)
    br.Dataset.from_file(tmp_path / "log.csv", min_item_count=1, num_negatives=2).save(tmp_path / "file",
                                                                                       progress=False)
    for out in ("api", "file"):
        for name in (*ID_FREE_FILES, "train.txt", "vocab.txt", "users.txt"):
            assert (tmp_path / out / name).read_bytes() == (tmp_path / "cli" / name).read_bytes(), (out, name)
    with pytest.raises(UserError, match="no column 'when'"):
        br.Dataset.from_frame(frame, time="when")
    with pytest.raises(UserError, match="unknown data option 'min_items'"):
        br.Dataset.from_frame(frame, min_items=3)
    assert np.array_equal(frame.to_numpy(), pd.read_csv(tmp_path / "log.csv").to_numpy())  # the frame is untouched
