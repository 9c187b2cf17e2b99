"""The generated files' loaders (bert4rec.data.files): malformed files, line numbers, round trips."""

from __future__ import annotations

import pytest

from bert4rec.data import (
    load_eval_set,
    load_item_counts,
    load_train_instances,
    load_vocab,
    load_windows,
)
from bert4rec.errors import UserError

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
