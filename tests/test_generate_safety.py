"""The generator never deletes or replaces anything it did not write (regression tests for data loss)."""

from __future__ import annotations

import errno
import json
import os

from conftest import SMALL_ARGS, assert_user_error, generate, run_cli_inprocess, write_raw


def snapshot(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def gen_cli(raw, out, capsys, *extra):
    return run_cli_inprocess(["--raw_path", str(raw), "--output_dir", str(out), *SMALL_ARGS, *extra], capsys)


def test_a_folder_of_the_users_own_files_is_refused_untouched(tmp_path, synthetic, capsys):
    raw = write_raw(synthetic, tmp_path / "in", "ml-1m")
    mine = tmp_path / "mine"
    (mine / "src").mkdir(parents=True)
    (mine / "notes.txt").write_text("my notes\n")
    (mine / "src" / "main.py").write_text("print('hi')\n")
    before = snapshot(mine)
    code, _, err = gen_cli(raw, mine, capsys)
    assert_user_error(code, err, "--output_dir", "not written by gen_data_fin.py")
    assert snapshot(mine) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "mine"]  # no temp or .old folders


def test_output_equal_to_the_input_folder_is_refused(tmp_path, synthetic, capsys):
    folder = write_raw(synthetic, tmp_path, "ml-100k", packaging="folder")
    (folder / "u.item").write_text("1|Toy Story|...\n")
    before = snapshot(folder)
    code, _, err = gen_cli(folder, folder, capsys)
    assert_user_error(code, err, "holds the input")
    assert snapshot(folder) == before


def test_output_containing_the_input_is_refused(tmp_path, synthetic, capsys):
    raw = write_raw(synthetic, tmp_path / "work" / "raw", "ml-1m")
    before = snapshot(tmp_path)
    code, _, err = gen_cli(raw, tmp_path / "work", capsys)
    assert_user_error(code, err, "holds the input")
    assert snapshot(tmp_path) == before


def test_a_regular_file_as_output_is_refused_and_kept(tmp_path, synthetic, capsys):
    raw = write_raw(synthetic, tmp_path / "in", "ml-1m")
    target = tmp_path / "results.csv"
    target.write_text("a,b\n")
    code, _, err = gen_cli(raw, target, capsys)
    assert_user_error(code, err, "is a file, not a folder")
    assert target.read_text() == "a,b\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "results.csv"]


def test_the_current_folder_is_refused(tmp_path, synthetic, capsys, monkeypatch):
    raw = write_raw(synthetic, tmp_path / "in", "ml-1m")
    work = tmp_path / "empty"
    work.mkdir()
    monkeypatch.chdir(work)
    code, _, err = gen_cli(raw, ".", capsys)
    assert_user_error(code, err, "current folder")
    assert work.is_dir() and list(work.iterdir()) == []


def test_a_parent_that_is_a_file_is_one_line(tmp_path, synthetic, capsys):
    raw = write_raw(synthetic, tmp_path / "in", "ml-1m")
    (tmp_path / "plain").write_text("x")
    code, _, err = gen_cli(raw, tmp_path / "plain" / "out", capsys)
    assert_user_error(code, err, "is a file, not a folder")
    assert (tmp_path / "plain").read_text() == "x"


def test_an_earlier_output_is_replaced_but_not_with_a_stranger_inside(tmp_path, synthetic, capsys):
    raw = write_raw(synthetic, tmp_path / "in", "ml-1m")
    out = tmp_path / "out"
    generate(raw, out)
    code, _, err = gen_cli(raw, out, capsys, "--force", "--random_seed", "7")
    assert code == 0, err
    (out / "my_analysis.ipynb").write_text("{}")
    before = snapshot(out)
    code, _, err = gen_cli(raw, out, capsys, "--force", "--random_seed", "8")
    assert_user_error(code, err, "'my_analysis.ipynb'")
    assert snapshot(out) == before


def test_an_empty_existing_folder_is_used(tmp_path, synthetic, capsys):
    raw = write_raw(synthetic, tmp_path / "in", "ml-1m")
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = gen_cli(raw, out, capsys)
    assert code == 0, err
    assert (out / "stats.json").is_file()


def test_disk_full_while_writing_is_one_line_and_keeps_the_previous_output(tmp_path, synthetic, capsys,
                                                                          monkeypatch):
    import bert4rec.data.generate as data

    raw = write_raw(synthetic, tmp_path / "in", "ml-1m")
    out = tmp_path / "out"
    generate(raw, out)
    before = snapshot(out)
    real = data.write_rows

    def full_disk(path, *args, **kwargs):
        if path.name == "train.txt":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(data, "write_rows", full_disk)
    code, _, err = gen_cli(raw, out, capsys, "--force")
    assert code == 3 and err.count("\n") == 1 and "No space left on device" in err and "train.txt" in err
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


def test_read_only_filesystem_is_one_line(tmp_path, synthetic, capsys, monkeypatch):
    import tempfile

    raw = write_raw(synthetic, tmp_path / "in", "ml-1m")

    def read_only(*args, dir=None, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    code, _, err = gen_cli(raw, tmp_path / "out", capsys)
    assert code == 3 and err.count("\n") == 1 and "Read-only file system" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_duplicate_lines_are_counted_warned_and_droppable(tmp_path, synthetic, capsys):
    rows = synthetic.rows + synthetic.rows  # u.data concatenated with itself
    seen, first = set(), []
    for row in rows:
        if (row[0], row[1], row[3]) not in seen:
            seen.add((row[0], row[1], row[3]))
            first.append(row)
    expected = len(rows) - len(first)
    twice = tmp_path / "twice" / "u.data"
    twice.parent.mkdir()
    twice.write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
    code, out, err = gen_cli(twice, tmp_path / "kept", capsys)
    assert code == 0, err
    assert f"{expected:,} lines repeat an earlier (user, item, timestamp)" in out
    assert expected > len(synthetic.rows) // 2
    stats = json.loads((tmp_path / "kept" / "stats.json").read_text())
    assert stats["duplicate_interactions"] == expected and not stats["duplicates_dropped"]
    code, out, err = gen_cli(twice, tmp_path / "dropped", capsys, "--drop_duplicates")
    assert code == 0, err
    unique = tmp_path / "unique" / "u.data"
    unique.parent.mkdir()
    unique.write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in first))
    reference = generate(unique, tmp_path / "reference")
    dropped = json.loads((tmp_path / "dropped" / "stats.json").read_text())
    assert dropped["duplicates_dropped"] and dropped["num_interactions"] == reference["num_interactions"]
    assert (tmp_path / "dropped" / "test.txt").read_text() == (tmp_path / "reference" / "test.txt").read_text()


def test_a_corrupt_zip_member_is_one_line(tmp_path, synthetic, capsys):
    import zipfile

    from conftest import ratings_text

    path = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ml-1m/ratings.dat", ratings_text(synthetic, "ml-1m") * 20)
    data = bytearray(path.read_bytes())
    start = 30 + len("ml-1m/ratings.dat")  # the local header, then the deflated bytes
    for k in range(start + 50, start + 400, 7):
        data[k] ^= 0x5A
    path.write_bytes(bytes(data))
    code, _, err = gen_cli(path, tmp_path / "out", capsys)
    assert_user_error(code, err, "ml-1m.zip", "cannot read the zip")
    assert not (tmp_path / "out").exists()
