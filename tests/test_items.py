"""Item metadata and id maps: parsing every GroupLens format, the decade rule, unknown items, bad files."""

from __future__ import annotations

import pytest
from conftest import SMALL_ARGS, assert_user_error, run_cli_inprocess

from bert4rec.data.items import ItemMeta, parse_item_meta, read_id_map
from bert4rec.errors import UserError

MOVIES_DAT = "1::Toy Story (1995)::Animation|Children's|Comedy\n2::Café au lait (1993)::Drama\n3::Untitled::Drama\n"


def test_movies_dat_multi_genre_year_from_title_and_latin1():
    meta = parse_item_meta(MOVIES_DAT.encode("iso-8859-1"), "movies.dat", "ml-1m")
    assert meta[1] == ItemMeta("Toy Story (1995)", ("Animation", "Children's", "Comedy"), 1995)
    assert meta[2].title == "Café au lait (1993)" and meta[2].decade == "1990s"
    assert meta[3].year is None and meta[3].decade == "[UNK]"


def test_u_item_genre_flags_and_release_date():
    flags = ["0"] * 19
    flags[1] = flags[15] = "1"  # Action, Sci-Fi
    lines = [f"7|Star Film (1977)|01-Jan-2001||http://x|{'|'.join(flags)}",  # release date wins over title
             f"8|No Date (1965)|||http://x|{'|'.join(['1'] + ['0'] * 18)}",  # 'unknown' flag only: no genre
             f"9|Nothing||||{'|'.join(['0'] * 19)}"]
    meta = parse_item_meta("\n".join(lines).encode("iso-8859-1"), "u.item", "ml-100k")
    assert meta[7].genres == ("Action", "Sci-Fi") and meta[7].year == 2001 and meta[7].decade == "2000s"
    assert meta[8].genres == () and meta[8].year == 1965
    assert meta[9].year is None


def test_movies_csv_quotes_and_no_genres():
    text = 'movieId,title,genres\n1,"American President, The (1995)",Comedy|Drama|Romance\n2,Heat (1995),' \
           "(no genres listed)\n"
    meta = parse_item_meta(text.encode(), "movies.csv", "ml-20m")
    assert meta[1].title == "American President, The (1995)" and meta[1].genres == ("Comedy", "Drama", "Romance")
    assert meta[2].genres == ()


@pytest.mark.parametrize("fmt,data,needle", [
    ("ml-1m", b"1::Toy Story (1995)\n", "movies.dat:1: expected 3 fields, found 2"),
    ("ml-1m", b"1::A (1990)::Drama\nx::B (1991)::Drama\n", "movies.dat:2: the movie id must be a non-negative"),
    ("ml-1m", b"1::A (1990)::Drama\n1::B (1991)::Drama\n", "movies.dat:2: movie id 1 is listed twice"),
    ("ml-20m", b"movieId,title,genres\n1,\xff\xfe,Drama\n", "movies.dat:2: not utf-8 text"),
    ("ml-20m", b"id,name\n", "movies.dat:1: expected the header movieId,title,genres"),
    ("ml-100k", b"1|A|||x|0|0\n", "movies.dat:1: expected 24 fields"),
])
def test_malformed_metadata_names_file_and_line(fmt, data, needle):
    with pytest.raises(UserError, match=needle):
        parse_item_meta(data, "movies.dat", fmt)


@pytest.mark.parametrize("text,needle", [
    ("1 10\n2 20\n2 30\n", "map.txt:3: item 2 is mapped twice"),
    ("1 10\n2 10\n", "map.txt:2: original id 10 is the image of items 1 and 2"),
    ("1 10 5\n", "map.txt:1: expected 2 fields"),
    ("1 ten\n", "map.txt:1: the item id must be a non-negative integer"),
])
def test_malformed_id_maps(tmp_path, text, needle):
    path = tmp_path / "map.txt"
    path.write_text(text)
    with pytest.raises(UserError, match=needle):
        read_id_map(path, "item")


def seq_with_maps(tmp_path):
    """Sequence ids 1..4 mapping to MovieLens ids 10, 20, 30, 40; metadata for 10, 20, 40 and 99 (not in the
    data): item 3 (MovieLens 30) has no metadata line."""
    raw = tmp_path / "seq.txt"
    walks = {1: (1, 2, 3, 1, 2, 3), 2: (1, 2, 4, 1, 2, 4), 3: (3, 4, 1, 3, 4, 1)}  # each misses one item
    raw.write_text("".join(f"{u} {i}\n" for u, items in walks.items() for i in items))
    (tmp_path / "items.txt").write_text("1 10\n2 20\n3 30\n4 40\n")
    (tmp_path / "users.txt").write_text("1 501\n2 502\n3 503\n")
    movies = "10::Ten (1991)::Drama|War\n20::Twenty (2004)::Comedy\n40::Forty::Horror\n99::Other (1950)::Drama\n"
    (tmp_path / "movies.dat").write_bytes(movies.encode("iso-8859-1"))
    return raw


def test_sequence_file_with_maps_and_metadata(tmp_path, capsys):
    raw = seq_with_maps(tmp_path)
    out = tmp_path / "out"
    code, stdout, err = run_cli_inprocess(
        ["--raw_path", str(raw), "--output_dir", str(out), "--min_item_count", "1", "--item_meta",
         str(tmp_path / "movies.dat"), "--item_id_map", str(tmp_path / "items.txt"), "--user_id_map",
         str(tmp_path / "users.txt"), *SMALL_ARGS[:-3], "--num_negatives", "1", "--no_progress"], capsys)
    assert code == 0, err
    assert "1 of 4 items have no line in" in stdout
    rows = [line.split("\t") for line in (out / "item_features.txt").read_text().splitlines()]
    by_original = {r[1]: r for r in rows}
    assert by_original["10"][2:] == ["Drama|War", "1990s", "Ten (1991)"]
    assert by_original["30"][2:] == ["[UNK]", "[UNK]", ""]
    assert by_original["40"][2:4] == ["Horror", "[UNK]"]
    vocab = [line.split("\t") for line in (out / "vocab.txt").read_text().splitlines()]
    assert {v[2] for v in vocab[1:5]} == {"10", "20", "30", "40"}
    assert [line.split("\t")[1] for line in (out / "users.txt").read_text().splitlines()] == ["501", "502", "503"]
    import json

    stats = json.loads((out / "stats.json").read_text())
    features = stats["ids_and_metadata"]["item_features"]
    assert features["items_without_metadata"] == 1 and features["metadata_lines_not_in_dataset"] == 1
    assert "item_features.txt" in stats["files"]


def test_metadata_for_a_sequence_file_needs_the_item_map(tmp_path, capsys):
    raw = seq_with_maps(tmp_path)
    code, _, err = run_cli_inprocess(["--raw_path", str(raw), "--output_dir", str(tmp_path / "out"),
                                      "--item_meta", str(tmp_path / "movies.dat"), "--min_item_count", "1"], capsys)
    assert_user_error(code, err, "--item_meta with a 'user item' sequence file needs --item_id_map")
    assert not (tmp_path / "out").exists()


def test_an_id_map_missing_an_item_is_one_line_and_writes_nothing(tmp_path, capsys):
    raw = seq_with_maps(tmp_path)
    (tmp_path / "items.txt").write_text("1 10\n2 20\n4 40\n")
    code, _, err = run_cli_inprocess(["--raw_path", str(raw), "--output_dir", str(tmp_path / "out"),
                                      "--item_id_map", str(tmp_path / "items.txt"), "--min_item_count", "1",
                                      "--num_negatives", "1"], capsys)
    assert_user_error(code, err, "items.txt: no line for item 3")
    assert not (tmp_path / "out").exists()
