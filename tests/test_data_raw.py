"""Raw inputs (bert4rec.data.raw): every format and packaging, detection, and the checksum-verified download
(local HTTP server only)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import os
import threading
from pathlib import Path

import pytest
from conftest import (
    DATA_FILES,
    SMALL_ARGS,
    assert_user_error,
    generate,
    ratings_text,
    run_cli_inprocess,
    write_raw,
)

from bert4rec.data import (
    detect_format,
    download_file,
    load_vocab,
)
from bert4rec.errors import UserError

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
