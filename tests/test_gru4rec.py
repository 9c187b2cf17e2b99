"""GRU4Rec and the session protocol: cleansing, the date split, session-parallel batches, evaluation against a
one-session-at-a-time reference, each loss by hand, learning, resume, bad inputs."""

from __future__ import annotations

import json

import numpy as np
import paddle
import pytest
from conftest import options, write_planted_sequences

from bert4rec.checkpoint import load_checkpoint
from bert4rec.data import GenerateOptions, generate_dataset
from bert4rec.data.files import Windows, load_windows
from bert4rec.data.sessions import DAY, Events, cleanse, split_by_date
from bert4rec.errors import UserError
from bert4rec.evaluate import evaluate_sessions
from bert4rec.instances import offsets_from_lengths
from bert4rec.metrics import metrics_from_ranks
from bert4rec.models.gru4rec import GRU4Rec, GRU4RecConfig, SessionStep, session_parallel_schedule
from bert4rec.train import train


def events(rows):
    s, i, t = (np.array(c, dtype=np.int64) for c in zip(*rows, strict=True))
    return Events(s, i, t, s)  # one session per user: the session key is the user


def test_cleansing_repeats_until_nothing_changes():
    # item 9 is rare (1 event); removing it leaves session 3 with one event; removing session 3 leaves item 7
    # with 2 events < 3; removing item 7 shortens session 2 to one event... until a fixed point
    rows = [(1, 5, 1), (1, 6, 2), (1, 5, 3), (1, 6, 4), (2, 5, 5), (2, 7, 6), (3, 9, 7), (3, 7, 8), (4, 6, 9),
            (4, 5, 10), (4, 6, 11), (4, 5, 12)]
    out, rounds = cleanse(events(rows), min_session_len=2, min_item_count=3)
    assert sorted(set(out.sessions.tolist())) == [1, 4] and set(out.items.tolist()) == {5, 6}
    assert rounds >= 3
    again, more = cleanse(out, 2, 3)
    assert len(again) == len(out) and more == 1  # a fixed point


def test_the_date_split_puts_every_event_in_one_part_by_its_sessions_end():
    end = 100 * DAY
    rows = [(1, 1, end - 40 * DAY), (1, 2, end - 30 * DAY),   # ends 30 days before: train
            (2, 1, end - 40 * DAY), (2, 2, end - 20 * DAY),   # ends 20 days before: valid (the 14 before the last 14)
            (3, 1, end - 50 * DAY), (3, 3, end - 1 * DAY),    # ends 1 day before: test (whole session)
            (4, 4, end - 14 * DAY), (4, 5, end)]              # the last event: test
    parts = split_by_date(events(rows), test_days=14, valid_days=14)
    assert sorted(set(parts["train"].sessions.tolist())) == [1]
    assert sorted(set(parts["valid"].sessions.tolist())) == [2]
    assert sorted(set(parts["test"].sessions.tolist())) == [3, 4]
    assert sum(len(p) for p in parts.values()) == len(rows)


def date_raw(path, n_users=240, items=30, seed=0):
    """ML-100K-style u.data: users walk a permutation of the items, one event per hour, starting on
    different days over 60 days."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(items) + 1
    lines = []
    for user in range(1, n_users + 1):
        t = 10**9 + int(rng.integers(0, 60)) * DAY
        item = int(rng.integers(1, items + 1))
        for _ in range(int(rng.integers(4, 9))):
            lines.append(f"{user}\t{item}\t4\t{t}")
            t += 3600
            item = int(perm[item - 1]) if rng.random() < 0.9 else int(rng.integers(1, items + 1))
    lines.append(f"9999\t{items + 5}\t4\t{10**9 + 59 * DAY}")  # an item only a test-time user has
    lines.append(f"9999\t1\t4\t{10**9 + 59 * DAY + 60}")
    lines.append(f"9999\t2\t4\t{10**9 + 59 * DAY + 120}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def session_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("sessions")
    raw = date_raw(root / "u.data")
    out = root / "data"
    stats = generate_dataset(GenerateOptions(raw_path=raw, output_dir=out, split="date", test_days=10,
                                             valid_days=10, min_item_count=2), progress=False,
                             log=lambda *a: None)
    return root, out, stats


def test_session_files_drop_unknown_items_and_document_the_parts(session_data):
    _, out, stats = session_data
    assert stats["split"] == "date" and set(stats["parts"]) == {"train", "valid", "test"}
    vocab = [line.split("\t") for line in (out / "vocab.txt").read_text().splitlines()]
    known = {int(v[2]) for v in vocab[1:-3]}
    assert 35 not in known  # never in training
    test = load_windows(out / "test_sessions.txt")
    assert 9999 in test.users.tolist() and test.lengths[test.users.tolist().index(9999)] == 2  # 35 dropped
    for part in ("train", "valid", "test"):
        assert stats["parts"][part]["sessions"] == len(load_windows(out / f"{part}_sessions.txt")) > 0
    assert stats["parts"]["train"]["last"] <= stats["parts"]["test"]["last"]


def test_bad_session_inputs_are_one_line(tmp_path):
    raw = tmp_path / "seq.txt"
    write_planted_sequences(raw, n_users=20)
    with pytest.raises(UserError, match="--split date needs timestamps"):
        generate_dataset(GenerateOptions(raw_path=raw, output_dir=tmp_path / "o", split="date"), progress=False,
                         log=lambda *a: None)
    late = date_raw(tmp_path / "u.data")
    with pytest.raises(UserError, match="the valid part is empty"):
        generate_dataset(GenerateOptions(raw_path=late, output_dir=tmp_path / "o2", split="date", test_days=0.5,
                                         valid_days=0.0001, min_item_count=2), progress=False, log=lambda *a: None)
    assert not (tmp_path / "o").exists() and not (tmp_path / "o2").exists()


def test_session_parallel_schedule_predicts_every_event_once_and_resets_at_session_starts():
    rng = np.random.default_rng(1)
    lengths = rng.integers(2, 9, size=23)
    items = rng.integers(1, 50, size=int(lengths.sum()))
    sessions = Windows(np.arange(23), items, offsets_from_lengths(lengths))
    order = rng.permutation(23)
    schedule = session_parallel_schedule(sessions, order, slots=4)
    # replay the schedule per slot and rebuild what each slot saw
    seen: list[list[tuple[int, int]]] = []
    current: dict[int, list[tuple[int, int]]] = {}
    for s in range(len(schedule)):
        for slot in range(4):
            if not schedule.active[s, slot]:
                continue
            if schedule.reset[s, slot]:
                if slot in current:
                    seen.append(current[slot])
                current[slot] = []
            current[slot].append((int(schedule.inputs[s, slot]), int(schedule.targets[s, slot])))
    seen.extend(current.values())
    expected = [[(int(a), int(b)) for a, b in zip(sessions.window(i)[:-1], sessions.window(i)[1:], strict=True)]
                for i in order]
    assert sorted(seen) == sorted(expected)  # every event predicted exactly once, sessions never mixed
    assert schedule.active.sum() == int((lengths - 1).sum())


def small_gru(loss="ce", **kw):
    paddle.seed(0)
    return GRU4Rec(GRU4RecConfig(vocab_size=14, hidden_size=8, loss=loss, n_sample=3, **kw), "plain")


def test_evaluation_equals_one_session_at_a_time():
    model = small_gru()
    model.eval()
    rng = np.random.default_rng(2)
    lengths = rng.integers(2, 7, size=9)
    sessions = Windows(np.arange(9), rng.integers(1, 11, size=int(lengths.sum())), offsets_from_lengths(lengths))
    fast = evaluate_sessions(model, sessions, 10, batch_size=2)["session"]
    ranks = []
    for i in range(len(sessions)):  # the reference: each prefix alone through the GRU from a zero state
        s = sessions.window(i)
        for t in range(1, len(s)):
            scores = model.predict([s[:t]])[0]
            target = int(s[t])
            ranks.append(int(((scores[1:11] >= scores[target]).sum()) - 1))
    reference = metrics_from_ranks(np.array(ranks), ("Recall@20", "MRR@20", "HR@10", "NDCG@10"))
    assert fast["predictions"] == len(ranks)
    for name, value in reference.items():
        assert fast[name] == pytest.approx(value)


def test_each_loss_by_hand():
    h = paddle.to_tensor(np.random.default_rng(3).normal(size=(3, 8)).astype("float32"))
    targets = paddle.to_tensor(np.array([2, 5, 2]))
    negatives = np.array([7, 5, 9])
    for loss in ("ce", "cross-entropy", "bpr-max"):
        model = small_gru(loss)
        table = model.item_embeddings.weight.numpy().astype(np.float64)
        bias = np.random.default_rng(4).normal(size=14).astype("float32")
        model.output_bias.set_value(bias)
        hh = h.numpy().astype(np.float64)
        if loss == "ce":
            logits = hh @ table[1:11].T + bias[1:11]
            expected = np.mean(np.log(np.exp(logits).sum(1)) - logits[np.arange(3), np.array([2, 5, 2]) - 1])
            assert float(model.loss_on(h, targets, None, in_batch=False)) == pytest.approx(expected, rel=1e-5)
            continue
        candidates = np.array([2, 5, 2, 7, 5, 9])  # in-batch targets, then the sampled ones
        scores = hh @ table[candidates].T + bias[candidates]
        total = 0.0
        for i, target in enumerate([2, 5, 2]):
            pos = scores[i, i]
            negs = np.array([scores[i, j] for j in range(6) if j != i and candidates[j] != target])
            if loss == "cross-entropy":
                z = np.concatenate([[pos], negs])
                total += np.log(np.exp(z).sum()) - pos
            else:
                w = np.exp(negs - negs.max())
                w /= w.sum()
                total += -np.log((w / (1 + np.exp(-(pos - negs)))).sum()) + model.config.bpreg * (w * negs**2).sum()
        got = float(model.loss_on(h, targets, negatives, in_batch=True))
        assert got == pytest.approx(total / 3, rel=1e-5), loss


def gru_config(root, name, **kw):
    path = root / f"{name}_gru.json"
    path.write_text(json.dumps({"model": "GRU4Rec", "hidden_size": 32, **kw}))
    return path


def test_gru4rec_learns_the_planted_pattern_on_leave_one_out_data(planted):
    from conftest import mostpop_results

    root, data_dir = planted
    results = train(options(root, data_dir, "gru_loo", config_path=gru_config(root, "loo"), num_train_steps=150,
                            eval_every=50, lr=1e-2))
    pop = mostpop_results(root, data_dir)
    assert results["model"] == "GRU4Rec"
    assert results["test"]["full"]["NDCG@10"] > pop["test"]["full"]["NDCG@10"] + 0.3


@pytest.mark.parametrize("loss", ["ce", "cross-entropy", "bpr-max"])
def test_session_parallel_training_learns_and_reports_session_metrics(session_data, loss):
    root, out, _ = session_data
    kw = dict(config_path=gru_config(root, f"sp_{loss}", loss=loss, n_sample=8), train_path=out / "train_sessions.txt",
              valid_path=out / "valid_sessions.txt", test_path=out / "test_sessions.txt", batch_size=16,
              num_train_steps=300, eval_every=100, lr=1e-2, warmup_steps=0)
    results = train(options(root, out, f"sp_{loss}", **kw))
    assert results["data"]["protocol"] == "session" and set(results["test"]) == {"session"}
    assert results["test"]["session"]["Recall@20"] > 0.6  # 30 items, a 90% deterministic successor


def test_session_parallel_resume_continues_exactly(session_data):
    root, out, _ = session_data
    kw = dict(config_path=gru_config(root, "sp_resume", hidden_dropout_prob=0.1), train_path=out / "train_sessions.txt",
              valid_path=out / "valid_sessions.txt", test_path=out / "test_sessions.txt", batch_size=8,
              num_train_steps=40, eval_every=10, warmup_steps=0)
    whole = train(options(root, out, "sp_whole", **kw))
    with pytest.raises(KeyboardInterrupt):
        train(options(root, out, "sp_split", stop_at_step=17, **kw))
    assert load_checkpoint(root / "sp_split" / "last.pdparams")["state"]["model_runtime"] is not None
    resumed = train(options(root, out, "sp_split", init_checkpoint=root / "sp_split" / "last.pdparams", **kw))
    assert resumed["test"] == whole["test"] and resumed["best_step"] == whole["best_step"]


def test_a_session_step_restarts_states_only_where_a_session_starts():
    model = small_gru()
    model.train()
    step = SessionStep(np.array([1, 2, 3]), np.array([2, 3, 4]), np.array([True, True, True]),
                       np.array([True, True, True]))
    model(step)
    carried = model._carried.numpy().copy()
    model(SessionStep(np.array([2, 3, 4]), np.array([3, 4, 5]), np.array([False, True, False]),
                      np.array([True, True, False])))
    after = model._carried.numpy()
    fresh = small_gru()
    fresh.load_training_state(None)
    fresh.train()
    fresh(SessionStep(np.array([3]), np.array([4]), np.array([True]), np.array([True])))
    np.testing.assert_allclose(after[:, 1], fresh._carried.numpy()[:, 0], rtol=1e-5, atol=1e-6)  # restarted slot
    assert not np.allclose(after[:, 0], 0) and np.allclose(after[:, 2], 0)  # carried on; emptied slot
    assert not np.allclose(carried[:, 0], after[:, 0])
