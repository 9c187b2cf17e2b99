"""Item features from any item table: a RecBole ``.item`` next to the ``.inter`` (RecBole's ``class`` on an
ml-100k-like dataset), a CSV given with --item_table; SASRecF trains on the named columns; titles reach recommend."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import GEN_SCRIPT

import bert4rec as br
from bert4rec.data import GenerateOptions, generate_dataset
from bert4rec.errors import UserError

CLASSES = ("Action", "Comedy", "Drama", "Sci-Fi")


def walk_rows(n_users: int = 200, num_items: int = 150, seed: int = 0) -> list[tuple[str, str, int]]:
    rng = np.random.default_rng(seed)
    perm = rng.permutation(num_items)
    rows = []
    for user in range(n_users):
        item = int(rng.integers(num_items))
        for k in range(int(rng.integers(8, 20))):
            rows.append((str(user + 1), str(item + 1), 880_000_000 + 3600 * k + user))
            item = int(perm[item]) if rng.random() < 0.9 else int(rng.integers(num_items))
    return rows


def recbole_dataset(root: Path, num_items: int = 150, with_item: bool = True) -> Path:
    folder = root / "ml-100k"
    folder.mkdir(parents=True)
    inter = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    inter += "".join(f"{u}\t{i}\t4\t{t}\n" for u, i, t in walk_rows(num_items=num_items))
    (folder / "ml-100k.inter").write_text(inter)
    if with_item:
        item = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        item += "".join(f"{i}\tFilm number {i}\t{1990 + i % 10}\t{CLASSES[i % 4]} {CLASSES[(i * 7) % 4]}\n"
                        for i in range(1, num_items + 6))  # 5 rows for items never rated
        (folder / "ml-100k.item").write_text(item)
    return folder


def test_recbole_item_file_gives_named_features_and_titles(tmp_path):
    out = tmp_path / "data"
    stats = generate_dataset(GenerateOptions(raw_path=recbole_dataset(tmp_path), output_dir=out, min_item_count=1,
                                             num_negatives=10, max_seq_length=30, dupe_factor=1),
                             progress=False, log=lambda *_: None)
    info = stats["ids_and_metadata"]["item_table"]
    assert info["title_column"] == "movie_title" and info["feature_columns"] == ["release_year", "class"]
    assert info["rows_not_in_dataset"] == 5 and info["items_without_a_row"] == 0
    lines = (out / "item_features.tsv").read_text().splitlines()
    assert lines[0] == "item_id\toriginal_id\ttitle\trelease_year\tclass"
    vocab = {int(r.split("\t")[0]): r.split("\t")[2] for r in (out / "vocab.txt").read_text().splitlines()[1:-3]}
    for line in lines[1:]:
        item, original, title, year, classes = line.split("\t")
        assert original == vocab[int(item)] and title == f"Film number {original}"
        i = int(original)
        assert year == str(1990 + i % 10) and classes.split("|") == [CLASSES[i % 4], CLASSES[(i * 7) % 4]]


def test_sasrecf_trains_on_recbole_class(tmp_path):
    out = tmp_path / "data"
    generate_dataset(GenerateOptions(raw_path=recbole_dataset(tmp_path), output_dir=out, min_item_count=1,
                                     num_negatives=10, max_seq_length=30, dupe_factor=1),
                     progress=False, log=lambda *_: None)
    config = tmp_path / "sasrecf.json"
    config.write_text(json.dumps({"model": "SASRecF", "hidden_size": 16, "intermediate_size": 32,
                                  "max_position_embeddings": 30, "selected_features": ["class"]}))
    run = br.fit(out, config=config, checkpoints=tmp_path / "run", num_train_steps=30, eval_every=15, max_len=30,
                 batch_size=32, progress=False)
    saved = run.results["config"]
    assert sorted(saved["feature_vocab"]["class"]) == sorted(CLASSES)  # most frequent first
    assert saved["feature_width"] == {"class": 2}
    tokens = run.trained.model.class_tokens.numpy()
    assert (tokens[1:run.trained.vocab.num_items + 1] >= 2).all()  # every item has two known class tokens
    again = br.load_run(tmp_path / "run")  # the checkpoint rebuilds the model without the data's features
    assert np.allclose(again.trained.model.class_tokens.numpy(), tokens)
    recs = again.recommend(users=["1"], k=3)
    assert list(recs.columns) == ["user", "rank", "item", "score", "title"]
    assert all(t == f"Film number {i}" for i, t in zip(recs["item"], recs["title"], strict=True))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model": "SASRecF", "selected_features": ["genre"]}))
    with pytest.raises(UserError, match="selected_features 'genre' is not a feature of the data"):
        br.fit(out, config=bad, checkpoints=tmp_path / "run2", num_train_steps=1, progress=False)


def test_csv_item_table_with_named_columns_and_errors(tmp_path):
    rows = walk_rows(n_users=60, num_items=120)
    log = tmp_path / "log.csv"
    log.write_text("user_id,item_id,timestamp\n" + "".join(f"u{u},sku{i},{t}\n" for u, i, t in rows))
    table = tmp_path / "items.csv"
    table.write_text("sku,name,tags,brand\n" + "".join(f'sku{i},"Thing, {i}",a|b{i % 3},B{i % 5}\n'
                                                        for i in range(1, 121)))
    out = tmp_path / "data"
    generate_dataset(GenerateOptions(raw_path=log, output_dir=out, item_table=table, item_table_id_col="sku",
                                     item_feature_cols="tags,brand", min_item_count=1, num_negatives=5,
                                     dupe_factor=1), progress=False, log=lambda *_: None)
    header, first = (out / "item_features.tsv").read_text().splitlines()[:2]
    assert header == "item_id\toriginal_id\ttitle\ttags\tbrand"
    _, original, title, tags, brand = first.split("\t")
    i = int(original[3:])
    assert title == f"Thing, {i}" and tags == f"a|b{i % 3}" and brand == f"B{i % 5}"
    cases = [
        ({"item_table_id_col": "item_id"}, "--item_table_id_col 'item_id': "),
        ({"item_table_id_col": "sku", "item_feature_cols": "colour"}, "--item_feature_cols 'colour': "),
        ({"item_table_id_col": "name"}, "none of its 120 item ids"),
        ({"item_table_id_col": "brand"}, "item .B1. has a second row"),
    ]
    for kw, needle in cases:
        with pytest.raises(UserError, match=needle):
            generate_dataset(GenerateOptions(raw_path=log, output_dir=tmp_path / "x", item_table=table,
                                             min_item_count=1, num_negatives=5, dupe_factor=1, **kw),
                             progress=False, log=lambda *_: None)
        assert not (tmp_path / "x").exists()


def test_cli_item_table_flags(tmp_path):
    folder = recbole_dataset(tmp_path, with_item=False)
    table = tmp_path / "items.tsv"
    table.write_text("item_id\tgenre\n" + "".join(f"{i}\tg{i % 3}\n" for i in range(1, 151)))
    proc = subprocess.run([sys.executable, str(GEN_SCRIPT), "--raw_path", str(folder), "--output_dir",
                           str(tmp_path / "out"), "--item_table", str(table), "--item_feature_cols", "genre",
                           "--min_item_count", "1", "--num_negatives", "5", "--no_progress"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "item table" in proc.stdout and "features ['genre']" in proc.stdout
    assert (tmp_path / "out" / "item_features.tsv").read_text().splitlines()[0].endswith("\tgenre")
