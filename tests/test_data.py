"""Data pipeline (bert4rec.data): the real ML-1M benchmark file, sorting, filtering, renumbering and the
leave-one-out split, popularity negatives, determinism and stats, on synthetic data."""

from __future__ import annotations

import hashlib
import json
import zipfile

import numpy as np
import pytest
from conftest import (
    DATA_FILES,
    ML1M_SAS,
    SMALL_ARGS,
    generate,
    read_lines,
    run_cli_inprocess,
    write_raw,
)

from bert4rec.data import (
    GenerateOptions,
    build_sequences,
    generate_dataset,
    load_eval_set,
    load_item_counts,
    load_train_instances,
    load_vocab,
    load_windows,
    sample_popular_negatives,
)
from bert4rec.data.raw import Interactions
from bert4rec.errors import UserError

# ---------------------------------------------------------------------------------------------------------
# Acceptance on the real ML-1M sequence benchmark
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not ML1M_SAS.exists(), reason=f"{ML1M_SAS} not present")
def test_acceptance_ml1m_sas(tmp_path):
    out = tmp_path / "ml-1m"
    opts = GenerateOptions(raw_path=ML1M_SAS, output_dir=out, holdout="test")
    stats = generate_dataset(opts, progress=False, log=lambda msg: None)
    assert stats["format"] == "seq"
    assert stats["num_users"] == 6040
    assert stats["num_items"] == 3416
    assert stats["num_interactions"] == 999_611
    assert stats["num_train_windows"] == 10_272
    assert stats["num_train_instances"] == 112_992
    assert stats["vocab_size"] == 3420
    assert stats["dropped_short_users"] == 0
    inst = load_train_instances(out / "train.txt")
    assert len(inst) == 112_992 and inst.lengths.max() == 200
    assert inst.num_masked.max() == 40
    users, items, offsets = load_windows(out / "train_windows.txt")
    assert len(users) == 10_272
    vocab = load_vocab(out / "vocab.txt")
    assert (vocab.size, vocab.num_items, vocab.mask_id) == (3420, 3416, 3417)
    assert vocab.original_ids[1:4] == ["1", "2", "3"]  # renumbering is the identity on this file
    test = load_eval_set(out / "test.txt")
    assert len(test) == 6040 and test.negatives.shape == (6040, 100)
    assert not (out / "valid.txt").exists()
    # full history before the target (not truncated): lengths add up to every interaction
    assert len(test.history) + len(test.targets) == 999_611
    counts = load_item_counts(out / "item_counts.txt")
    assert counts.sum() == 999_611 and counts[0] == 0
    # negatives: distinct, never an item of the user
    for u in range(0, 6040, 97):
        seen = set(test.user_history(u).tolist()) | {int(test.targets[u])}
        neg = test.negatives[u].tolist()
        assert len(set(neg)) == 100 and not seen & set(neg)




# ---------------------------------------------------------------------------------------------------------
# Sorting, filtering, renumbering, split
# ---------------------------------------------------------------------------------------------------------


def test_sort_is_stable_and_filters_rare_items():
    # user 7: items 5, 6, 5 at the same second (file order kept), item 9 earlier; item 8 is rare
    users = np.array([7, 7, 7, 7, 3, 3, 3, 7, 3])
    items = np.array([5, 6, 5, 9, 6, 9, 5, 8, 9])
    times = np.array([50, 50, 50, 10, 3, 2, 1, 60, 4])
    seq = build_sequences(Interactions(users, items, times), min_item_count=2, min_length=2)
    assert seq.user_original.tolist() == [3, 7]  # new ids follow the original id order
    bounds = seq.offsets.tolist()
    chrono = [seq.item_original[seq.items[a:b] - 1].tolist() for a, b in zip(bounds, bounds[1:], strict=False)]
    assert chrono == [[5, 9, 6, 9], [9, 5, 6, 5]]
    assert seq.item_original.tolist() == [5, 9, 6]  # first appearance, users in order
    assert seq.removed_by_item_filter == 1 and seq.items_removed_by_item_filter == 1
    assert seq.counts.tolist() == [0, 3, 3, 2]


def test_split_vocab_users_and_counts(tmp_path, synthetic):
    out = tmp_path / "out"
    stats = generate(write_raw(synthetic, tmp_path, "ml-1m"), out)
    expected = synthetic.filtered_sequences(min_len=3)
    vocab = load_vocab(out / "vocab.txt")
    users = read_lines(out / "users.txt")
    assert [int(u) for u, _ in users] == list(range(1, len(expected) + 1))
    assert [int(orig) for _, orig in users] == sorted(expected)
    assert vocab.size == stats["num_items"] + 4 == stats["vocab_size"]
    assert vocab.tokens[0] == "[PAD]" and vocab.tokens[-3:] == ["[MASK]", "[UNK]", "[RESERVED]"]
    assert vocab.original_ids[0] == "-" and vocab.original_ids[-3:] == ["-", "-", "-"]
    assert vocab.mask_id == stats["num_items"] + 1 == stats["mask_id"]
    to_orig = [int(x) if x != "-" else 0 for x in vocab.original_ids]
    assert not set(to_orig) & synthetic.rare_items
    assert stats["dropped_short_users"] == len(synthetic.short_users)
    assert stats["num_interactions"] == sum(len(s) for s in expected.values())

    valid = load_eval_set(out / "valid.txt")
    test = load_eval_set(out / "test.txt")
    for evalset, drop in ((valid, 2), (test, 1)):
        assert evalset.users.tolist() == list(range(1, len(expected) + 1))
        for i, orig_user in enumerate(sorted(expected)):
            seq = expected[orig_user]
            history = [to_orig[t] for t in evalset.user_history(i)]
            assert history == seq[:-drop]
            assert to_orig[evalset.targets[i]] == seq[-drop]
    counts = load_item_counts(out / "item_counts.txt")
    flat = [i for s in expected.values() for i in s]
    assert counts[1:].tolist() == [flat.count(to_orig[t]) for t in range(1, vocab.num_items + 1)]


def test_holdout_test_keeps_two_item_users_and_has_no_valid(tmp_path, synthetic):
    out = tmp_path / "out"
    stats = generate(write_raw(synthetic, tmp_path, "ml-1m"), out, holdout="test")
    assert stats["dropped_short_users"] == 0
    assert not (out / "valid.txt").exists()
    test = load_eval_set(out / "test.txt")
    assert len(test) == len(synthetic.filtered_sequences(min_len=2))


@pytest.mark.parametrize("holdout", ["valid_test", "test"])
def test_no_heldout_target_in_training_data(tmp_path, synthetic, holdout):
    out = tmp_path / "out"
    generate(write_raw(synthetic, tmp_path, "ml-100k"), out, holdout=holdout)
    vocab = load_vocab(out / "vocab.txt")
    orig = np.array([int(x) if x != "-" else -1 for x in vocab.original_ids])
    inst = load_train_instances(out / "train.txt")
    _, win_items, _ = load_windows(out / "train_windows.txt")
    seen_in_training = set(orig[inst.tokens[inst.tokens != vocab.mask_id]].tolist())
    seen_in_training |= set(orig[inst.labels].tolist()) | set(orig[win_items].tolist())
    assert not seen_in_training & synthetic.test_items
    if holdout == "valid_test":
        assert not seen_in_training & synthetic.valid_items
    else:  # the paper protocol trains on the validation items: the check above can fail
        assert synthetic.valid_items <= seen_in_training


def test_training_instances_on_disk(tmp_path, synthetic):
    out = tmp_path / "out"
    stats = generate(write_raw(synthetic, tmp_path, "seq"), out, dupe_factor=4)
    inst = load_train_instances(out / "train.txt")
    w_users, w_items, w_off = load_windows(out / "train_windows.txt")
    vocab = load_vocab(out / "vocab.txt")
    per = 5
    assert len(inst) == len(w_users) * per == stats["num_train_instances"]
    assert stats["num_train_windows"] == len(w_users)
    assert np.array_equal(inst.users, np.repeat(w_users, per))
    for i in range(len(inst)):
        w = i // per
        window = w_items[w_off[w] : w_off[w + 1]]
        tokens = inst.tokens[inst.token_offsets[i] : inst.token_offsets[i + 1]]
        pos = inst.positions[inst.mask_offsets[i] : inst.mask_offsets[i + 1]]
        lab = inst.labels[inst.mask_offsets[i] : inst.mask_offsets[i + 1]]
        k = 1 if i % per == per - 1 else min(5, max(1, int(np.floor(len(window) * 0.2 + 0.5))))
        assert len(pos) == k
        if i % per == per - 1:
            assert pos.tolist() == [len(window) - 1]
        assert np.array_equal(lab, window[pos])
        assert np.all(tokens[pos] == vocab.mask_id)
        keep = np.ones(len(window), dtype=bool)
        keep[pos] = False
        assert np.array_equal(tokens[keep], window[keep])
    # windows per user follow the sliding rule on the training sequence (all but the last two items)
    expected = synthetic.filtered_sequences(min_len=3)
    step = int(0.5 * 12)
    for u, orig_user in enumerate(sorted(expected), start=1):
        n = len(expected[orig_user]) - 2
        n_windows = 1 if n <= 12 else len(range(n - 12, 0, -step)) + 1
        assert np.count_nonzero(w_users == u) == n_windows




# ---------------------------------------------------------------------------------------------------------
# Popularity negatives
# ---------------------------------------------------------------------------------------------------------


def test_negatives_exclude_user_items_and_are_distinct(tmp_path, synthetic):
    out = tmp_path / "out"
    generate(write_raw(synthetic, tmp_path, "ml-1m"), out, num_negatives=4)
    for name in ("valid.txt", "test.txt"):
        ev = load_eval_set(out / name)
        test = load_eval_set(out / "test.txt")
        assert ev.negatives.shape == (len(ev), 4)
        for i in range(len(ev)):
            everything = set(test.user_history(i).tolist()) | {int(test.targets[i])}
            neg = ev.negatives[i].tolist()
            assert len(set(neg)) == 4
            assert not everything & set(neg)


@pytest.fixture(params=["keys", "rejection"])
def sampler(request, monkeypatch):
    """Both negative samplers (the rejection one is used above KEYS_LIMIT users x items)."""
    import bert4rec.data.negatives as negatives

    monkeypatch.setattr(negatives, "KEYS_LIMIT", 10**18 if request.param == "keys" else 0)
    return request.param


def test_both_samplers_draw_the_exact_sequential_distribution(sampler, monkeypatch):
    """P(first = i, second = j) = w_i / W * w_j / (W - w_i) over the unseen items, for both samplers; users who
    saw almost everything (the rejection sampler's fallback) too."""
    import bert4rec.data.negatives as negatives

    monkeypatch.setattr(negatives, "MAX_ROUNDS", 1)
    counts = np.array([0, 1, 2, 3, 4, 50, 60])  # items 5 and 6 dominate; user rows see them
    n_users = 30000
    items = np.tile(np.array([5, 6], dtype=np.int32), n_users)
    offsets = np.arange(0, 2 * n_users + 1, 2, dtype=np.int64)
    neg = sample_popular_negatives(items, offsets, counts, 2, np.random.default_rng(3))
    assert not np.isin(neg, [5, 6]).any() and (neg[:, 0] != neg[:, 1]).all()
    w = {i: float(counts[i]) for i in (1, 2, 3, 4)}
    total = sum(w.values())
    for i in w:
        for j in w:
            if i != j:
                p = w[i] / total * w[j] / (total - w[i])
                got = np.mean((neg[:, 0] == i) & (neg[:, 1] == j))
                assert abs(got - p) < 4 * np.sqrt(p * (1 - p) / n_users) + 1e-3, (sampler, i, j, got, p)


def test_negative_sampling_follows_popularity(sampler):
    rng = np.random.default_rng(0)
    n_items, n_users = 50, 20000
    counts = np.concatenate([[0], rng.integers(1, 200, size=n_items)])
    # every user has item 1 in the history: it must never be sampled
    items = np.ones(n_users, dtype=np.int32)
    offsets = np.arange(n_users + 1, dtype=np.int64)
    neg = sample_popular_negatives(items, offsets, counts, 1, np.random.default_rng(1))
    assert neg.shape == (n_users, 1) and neg.min() >= 2
    freq = np.bincount(neg.ravel(), minlength=n_items + 1)[2:] / n_users
    expected = counts[2:] / counts[2:].sum()
    assert np.corrcoef(freq, expected)[0, 1] > 0.98
    assert np.abs(freq - expected).max() < 0.01
    # several per user: distinct, and popular items are sampled more often
    neg = sample_popular_negatives(items, offsets, counts, 10, np.random.default_rng(2))
    assert all(len(set(row)) == 10 for row in neg[:500].tolist())
    freq = np.bincount(neg.ravel(), minlength=n_items + 1)[2:]
    assert np.corrcoef(freq, counts[2:])[0, 1] > 0.9


def test_negative_sampling_needs_enough_candidates(sampler):
    counts = np.array([0, 5, 5, 5, 5])
    items = np.array([1, 2], dtype=np.int32)
    with pytest.raises(UserError, match="--num_negatives 3"):
        sample_popular_negatives(items, np.array([0, 2]), counts, 3, np.random.default_rng(0))




# ---------------------------------------------------------------------------------------------------------
# Determinism, re-runs
# ---------------------------------------------------------------------------------------------------------


def test_same_seed_same_files_different_seed_different(tmp_path, synthetic):
    raw = write_raw(synthetic, tmp_path / "raw", "ml-1m")
    generate(raw, tmp_path / "a")
    generate(raw, tmp_path / "b")
    generate(raw, tmp_path / "c", random_seed=1)
    generate(raw, tmp_path / "d", eval_seed=1)
    for name in DATA_FILES + ("valid.txt",):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    a = {name: (tmp_path / "a" / name).read_bytes() for name in DATA_FILES + ("valid.txt",)}
    assert (tmp_path / "c/train.txt").read_bytes() != a["train.txt"]
    assert (tmp_path / "c/test.txt").read_bytes() == a["test.txt"]
    assert (tmp_path / "c/train_windows.txt").read_bytes() == a["train_windows.txt"]
    assert (tmp_path / "d/test.txt").read_bytes() != a["test.txt"]
    assert (tmp_path / "d/valid.txt").read_bytes() != a["valid.txt"]
    assert (tmp_path / "d/train.txt").read_bytes() == a["train.txt"]


def test_rerun_is_noop_and_force_regenerates(tmp_path, synthetic, capsys):
    raw = write_raw(synthetic, tmp_path / "raw", "ml-1m")
    out = tmp_path / "out"
    args = ["--raw_path", str(raw), "--output_dir", str(out), *SMALL_ARGS]
    code, stdout, _ = run_cli_inprocess(args, capsys)
    assert code == 0 and "instances" in stdout
    stamp = (out / "train.txt").stat().st_mtime_ns
    code, stdout, _ = run_cli_inprocess(args, capsys)
    assert code == 0 and "up to date" in stdout
    assert (out / "train.txt").stat().st_mtime_ns == stamp
    code, stdout, _ = run_cli_inprocess([*args, "--force"], capsys)
    assert code == 0 and "up to date" not in stdout
    assert (out / "train.txt").stat().st_mtime_ns != stamp
    stamp = (out / "train.txt").stat().st_mtime_ns
    code, stdout, _ = run_cli_inprocess([*args, "--dupe_factor", "2"], capsys)  # other options: redo
    assert code == 0 and "up to date" not in stdout
    assert json.loads((out / "stats.json").read_text())["num_train_instances"] == len(
        load_train_instances(out / "train.txt")
    )
    raw.write_text(raw.read_text() + "12::1000::3::5\n")  # other input bytes: redo
    code, stdout, _ = run_cli_inprocess([*args, "--dupe_factor", "2"], capsys)
    assert code == 0 and "up to date" not in stdout


def test_stats_json_contents(tmp_path, synthetic):
    raw = write_raw(synthetic, tmp_path / "raw", "ml-1m", "zip")
    stats = generate(raw, tmp_path / "out")
    on_disk = json.loads((tmp_path / "out/stats.json").read_text())
    for key in (
        "num_users", "num_items", "num_interactions", "num_train_instances", "num_train_windows",
        "vocab_size", "dropped_short_users", "sequence_lengths", "options", "format", "input_file",
        "input_sha256", "timings_seconds",
    ):  # fmt: skip
        assert key in on_disk, key
    assert on_disk["sequence_lengths"]["train_windows"]["max"] <= 12
    assert set(on_disk["sequence_lengths"]["users"]) == {"min", "mean", "median", "max"}
    member = zipfile.ZipFile(raw).read("ml-1m/ratings.dat")
    assert on_disk["input_sha256"] == hashlib.sha256(member).hexdigest()
    assert on_disk["input_file_sha256"] == hashlib.sha256(raw.read_bytes()).hexdigest()
    assert on_disk["input_member"] == "ml-1m/ratings.dat"
    assert on_disk["options"]["dupe_factor"] == 3 and on_disk["options"]["masked_lm_prob"] == 0.2
    assert stats["num_train_instances"] == on_disk["num_train_instances"]
