"""Sessions without time leakage: the global cut (default of --split date) evaluates nothing that precedes
training; the notebook's rule (--date_rule session_end) is kept and measured; gap sessions split exactly at
gaps; the leakage audit equals hand-computed counts; leave-one-out data is audited too."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bert4rec.data import GenerateOptions, generate_dataset
from bert4rec.data.sessions import parse_gap, session_keys
from bert4rec.errors import UserError

DAY = 86400
# user: [(item, day)] -- the example worked by hand in the comments below (test: last 5 days, valid: 10 before)
EVENTS = {
    1: [(1, 0), (2, 1), (3, 2), (4, 3), (1, 20), (2, 21), (3, 29)],
    2: [(2, 5), (3, 6), (4, 7), (3, 17), (4, 18), (1, 28), (4, 29.5)],
    3: [(1, 1), (2, 2), (4, 4)],
    4: [(1, 3), (2, 16)],
}


def udata(tmp_path: Path) -> Path:
    path = tmp_path / "u.data"
    path.write_text("".join(f"{u}\t{i}\t4\t{int(d * DAY)}\n" for u, ev in EVENTS.items() for i, d in ev))
    return path


def sessions_file(out: Path, part: str) -> list[tuple[int, list[int]]]:
    lines = (out / f"{part}_sessions.txt").read_text().splitlines()
    return [(int(u), [int(x) for x in items.split()]) for u, items in (line.split("\t") for line in lines)]


def generate(raw: Path, out: Path, **kw) -> dict:
    opts = GenerateOptions(raw_path=raw, output_dir=out, split="date", test_days=5, valid_days=10,
                           min_item_count=1, **kw)
    return generate_dataset(opts, progress=False, log=lambda *_: None)


def test_global_cut_by_hand(tmp_path):
    # cuts: test after day 24.5, validation after day 14.5. Training: user 1 days 0-3, user 2 days 5-7, user 3,
    # user 4's day-3 event alone (a piece of 1: dropped). Validation: user 1 (days 20, 21), user 2 (17, 18); user
    # 4's day 16 alone: dropped. Test: user 2 (28, 29.5); user 1's day 29 alone: dropped.
    stats = generate(udata(tmp_path), tmp_path / "out")
    out = tmp_path / "out"
    assert sessions_file(out, "train") == [(1, [1, 2, 3, 4]), (2, [2, 3, 4]), (3, [1, 2, 4])]
    assert sessions_file(out, "valid") == [(1, [1, 2]), (2, [3, 4])]
    assert sessions_file(out, "test") == [(2, [1, 4])]
    audit = stats["leakage"]
    assert audit["eval_targets_before_train_end"] == 0 and audit["eval_targets"] == 3
    assert audit["users_in_train_and_test"] == 1 and audit["eval_items_unseen_in_train"] == 0
    assert stats["eval_events_dropped_in_short_pieces"] == {"valid": 1, "test": 1}
    assert stats["cut_times"] == {"valid_start": "1970-01-15 12:00:01", "test_start": "1970-01-25 12:00:01"}


def test_notebook_rule_by_hand_and_its_leak(tmp_path):
    # whole users by their last event: 1 and 2 end in test, 3 in training, 4 in validation. Items are those of
    # training (user 3: 1, 2, 4): the 3s of users 1 and 2 are removed (4 events). Test targets (all but the
    # first of a session) earlier than training's last event (day 4): user 1's days 1 and 3 -> 2.
    stats = generate(udata(tmp_path), tmp_path / "out", date_rule="session_end")
    out = tmp_path / "out"
    vocab = [line.split("\t")[2] for line in (out / "vocab.txt").read_text().splitlines()[1:4]]
    original = {int(v): i + 1 for i, v in enumerate(vocab)}
    assert sessions_file(out, "train") == [(3, [original[1], original[2], original[4]])]
    assert sessions_file(out, "valid") == [(4, [original[1], original[2]])]
    assert sessions_file(out, "test") == [(1, [original[i] for i in (1, 2, 4, 1, 2)]),
                                          (2, [original[i] for i in (2, 4, 4, 1, 4)])]
    audit = stats["leakage"]
    assert audit["eval_targets_before_train_end"] == 2 and audit["eval_items_unseen_in_train"] == 4
    assert audit["users_in_train_and_test"] == 0


def test_gap_sessions_split_exactly_at_gaps(tmp_path):
    users = np.array([7, 7, 7, 7, 8, 8])
    times = np.array([0, 100, 3800, 3900, 50, 10_000])
    assert session_keys(users, times, 3600).tolist() == [0, 0, 1, 1, 2, 3]  # a gap of exactly 3600 s: same session
    assert session_keys(users, times, None).tolist() == users.tolist()
    assert (parse_gap("30m"), parse_gap("2h"), parse_gap("1d"), parse_gap("900"), parse_gap("user")) == \
        (1800, 7200, 86400, 900, None)
    with pytest.raises(UserError, match="--session_gap 'soon'"):
        parse_gap("soon")
    rows = [(1, i % 3 + 1, h * 3600) for i, h in enumerate([0, 0.5, 1, 5, 5.5, 6])]  # pauses of 4 h
    rows += [(2, i % 3 + 1, h * 3600) for i, h in enumerate([0, 0.25, 8, 8.5])]
    rows += [(4, i % 3 + 1, 390 * 86400 + h * 3600) for i, h in enumerate([0, 1])]  # validation (from 1971)
    rows += [(3, i % 3 + 1, 400 * 86400 + h * 3600) for i, h in enumerate([0, 1, 2])]  # test: the last 5 days
    raw = tmp_path / "u.data"
    raw.write_text("".join(f"{u}\t{i}\t4\t{int(t)}\n" for u, i, t in rows))
    generate_dataset(GenerateOptions(raw_path=raw, output_dir=tmp_path / "out", split="date", test_days=5,
                                     valid_days=5, min_item_count=1, session_gap="2h",
                                     valid_start="1971-01-01"), progress=False, log=lambda *_: None)
    train = sessions_file(tmp_path / "out", "train")
    assert [len(items) for _u, items in train] == [3, 3, 2, 2] and [u for u, _ in train] == [1, 1, 2, 2]


def test_leave_one_out_data_is_audited(tmp_path):
    raw = udata(tmp_path)
    raw.write_text(raw.read_text() + "".join(f"5\t{i}\t4\t{int(d * DAY)}\n" for i, d in ((5, .1), (6, .2), (5, .3))))
    stats = generate_dataset(GenerateOptions(raw_path=raw, output_dir=tmp_path / "loo",
                                             min_item_count=1, num_negatives=1), progress=False,
                             log=lambda *_: None)
    # user 4 has 2 events (< 3: dropped); the others' last two are the targets (8); training ends on day 20
    # (user 1's fifth event); targets before it: user 3's days 2 and 4, user 5's days 0.2 and 0.3
    audit = stats["leakage"]
    assert audit["eval_targets"] == 8 and audit["eval_targets_before_train_end"] == 4
    assert audit["users_in_train_and_test"] == 4
    seq = tmp_path / "seq.txt"
    seq.write_text("".join(f"{u} {i}\n" for u, items in ((1, (1, 2, 3, 4)), (2, (5, 4, 3, 2))) for i in items))
    stats = generate_dataset(GenerateOptions(raw_path=seq, format="seq", output_dir=tmp_path / "s",
                                             min_item_count=1, num_negatives=1), progress=False,
                             log=lambda *_: None)
    assert stats["leakage"]["eval_targets_before_train_end"] is None  # no timestamps: order only
    assert json.loads((tmp_path / "s" / "stats.json").read_text())["leakage"]["eval_targets"] == 4


def test_a_table_without_time_refuses_the_date_split(tmp_path):
    raw = tmp_path / "log.csv"
    raw.write_text("user_id,item_id\n" + "".join(f"u{u},i{i}\n" for u in range(3) for i in range(4)))
    with pytest.raises(UserError, match="the input has no time column"):
        generate_dataset(GenerateOptions(raw_path=raw, output_dir=tmp_path / "out", split="date",
                                         min_item_count=1), progress=False, log=lambda *_: None)


def test_report_warns_when_a_runs_data_leaks(tmp_path):
    from bert4rec.config import TrainOptions
    from bert4rec.report import write_report
    from bert4rec.train import train

    config = tmp_path / "pop.json"
    config.write_text('{"model": "MostPop"}')
    texts = {}
    for rule in ("session_end", "global"):
        data = tmp_path / rule
        generate(udata(tmp_path), data, date_rule=rule)
        train(TrainOptions.for_data(data, config, tmp_path / f"run_{rule}", progress=False))
        texts[rule] = write_report([tmp_path / f"run_{rule}"], tmp_path / f"{rule}.md")[0].read_text()
    assert "WARNING: 2 of 9 targets precede training's end" in texts["session_end"]
    assert "| none |" in texts["global"] and "WARNING" not in texts["global"]
