"""Windows and masking (bert4rec.instances): the original BERT4Rec rules and their invariants."""

from __future__ import annotations

import numpy as np
import pytest

from bert4rec.instances import (
    build_windows,
    generate_instances,
    make_window_starts,
    mask_window,
    mask_windows,
    num_to_predict,
    offsets_from_lengths,
    ragged_gather,
    ragged_index,
    sliding_step,
)

MASK = 1001
N_ITEMS = 1000


def original_starts(length: int, max_len: int, step: int) -> list[int]:
    """The original gen_data_fin.py rule, in the order it emitted windows (beg_idx[::-1])."""
    if length <= max_len:
        return [0]
    beg_idx = list(range(length - max_len, 0, -step))
    beg_idx.append(0)
    return beg_idx[::-1]


@pytest.mark.parametrize(
    ("length", "max_len", "step", "expected"),
    [
        (1, 200, 100, [0]),
        (200, 200, 100, [0]),
        (201, 200, 100, [0, 1]),
        (250, 200, 100, [0, 50]),
        (300, 200, 100, [0, 100]),
        (301, 200, 100, [0, 1, 101]),
        (450, 200, 100, [0, 50, 150, 250]),
        (7, 3, 3, [0, 1, 4]),
    ],
)
def test_window_starts_examples(length, max_len, step, expected):
    assert make_window_starts(length, max_len, step) == expected


def test_window_starts_match_original_rule():
    rng = np.random.default_rng(0)
    for _ in range(300):
        max_len = int(rng.integers(2, 60))
        step = int(rng.integers(1, max_len + 1))
        length = int(rng.integers(1, 400))
        starts = make_window_starts(length, max_len, step)
        assert starts == original_starts(length, max_len, step)
        # the last window always ends at the end of the sequence, the first starts at 0
        assert starts[0] == 0 and min(length, starts[-1] + max_len) == length


def test_sliding_step():
    assert sliding_step(200, 0.5) == 100
    assert sliding_step(200, 0.1) == 20
    assert sliding_step(200, -1) == 200
    assert sliding_step(50, 1.0) == 50


def test_ragged_helpers():
    values = np.arange(100, 120)
    starts = np.array([3, 0, 10, 7])
    lengths = np.array([2, 0, 3, 1])
    assert ragged_index(starts, lengths).tolist() == [3, 4, 10, 11, 12, 7]
    assert ragged_gather(values, starts, lengths).tolist() == [103, 104, 110, 111, 112, 107]
    assert ragged_index(np.array([5]), np.array([0])).tolist() == []
    assert offsets_from_lengths(np.array([2, 0, 3])).tolist() == [0, 2, 2, 5]


def test_build_windows_layout():
    seqs = [list(range(1, 8)), [], [20, 21]]
    items = np.array([i for s in seqs for i in s], dtype=np.int32)
    offsets = offsets_from_lengths(np.array([len(s) for s in seqs]))
    seq_idx, win_items, win_offsets = build_windows(items, offsets, max_len=3, step=3)
    windows = [win_items[win_offsets[i] : win_offsets[i + 1]].tolist() for i in range(len(seq_idx))]
    assert seq_idx.tolist() == [0, 0, 0, 2]
    assert windows == [[1, 2, 3], [2, 3, 4], [5, 6, 7], [20, 21]]


def test_num_to_predict_rounds_half_up_like_python2():
    lengths = np.array([1, 2, 3, 5, 7, 100, 200, 400])
    # 0.5 * 5 = 2.5 -> 3 (Python 2 round), 0.5 * 7 = 3.5 -> 4; capped by max_predictions and length
    assert num_to_predict(lengths, 0.5, 40).tolist() == [1, 1, 2, 3, 4, 40, 40, 40]
    assert num_to_predict(lengths, 0.2, 40).tolist() == [1, 1, 1, 1, 1, 20, 40, 40]
    assert num_to_predict(np.array([3]), 1.0, 40).tolist() == [3]


def test_mask_window_invariants_mask_prob_one():
    rng = np.random.default_rng(1)
    for length in (1, 2, 5, 17, 60):
        window = rng.integers(1, N_ITEMS + 1, size=length)
        tokens, positions, labels = mask_window(
            window, rng, masked_lm_prob=0.2, max_predictions=8, mask_prob=1.0, mask_id=MASK, num_items=N_ITEMS
        )
        k = min(8, max(1, int(np.floor(length * 0.2 + 0.5))))
        assert len(positions) == len(labels) == k
        assert np.all(np.diff(positions) > 0)  # distinct and increasing
        assert np.all((positions >= 0) & (positions < length))
        assert labels.tolist() == window[positions].tolist()
        assert np.all(tokens[positions] == MASK)
        untouched = np.setdiff1d(np.arange(length), positions)
        assert tokens[untouched].tolist() == window[untouched].tolist()


def test_masked_positions_are_uniform():
    rng = np.random.default_rng(2)
    length, k, n = 20, 4, 4000
    windows = np.tile(np.arange(1, length + 1, dtype=np.int32), n)
    offsets = np.arange(0, n * length + 1, length, dtype=np.int64)
    _, positions, _, mask_offsets = mask_windows(
        windows, offsets, rng, masked_lm_prob=k / length, max_predictions=40, mask_prob=1.0,
        mask_id=MASK, num_items=N_ITEMS,
    )  # fmt: skip
    assert np.all(np.diff(mask_offsets) == k)
    freq = np.bincount(positions, minlength=length) / n
    assert np.allclose(freq, k / length, atol=0.03), freq  # every position equally likely (0.2)
    # all C(20, 4) subsets plausible: pairs co-occur at the uniform rate k(k-1)/(L(L-1))
    pos = positions.reshape(n, k)
    both = np.mean(np.any(pos == 0, axis=1) & np.any(pos == length - 1, axis=1))
    assert abs(both - k * (k - 1) / (length * (length - 1))) < 0.015


@pytest.mark.parametrize("mask_last_prob", [0.5, 1.0])
def test_mask_last_prob_forces_the_last_position(mask_last_prob):
    rng = np.random.default_rng(4)
    length, k, n = 20, 4, 4000
    windows = np.tile(np.arange(1, length + 1, dtype=np.int32), n)
    offsets = np.arange(0, n * length + 1, length, dtype=np.int64)
    tokens, positions, labels, _ = mask_windows(
        windows, offsets, rng, masked_lm_prob=k / length, max_predictions=40, mask_prob=1.0,
        mask_id=MASK, num_items=N_ITEMS, mask_last_prob=mask_last_prob,
    )  # fmt: skip
    pos = positions.reshape(n, k)
    assert np.all(np.diff(pos, axis=1) > 0)  # still k distinct positions per window
    has_last = np.any(pos == length - 1, axis=1)
    # forced with probability p, otherwise drawn like any other position (k / L)
    expected = mask_last_prob + (1 - mask_last_prob) * k / length
    assert abs(has_last.mean() - expected) < 0.03
    assert np.all(tokens.reshape(n, length)[has_last, length - 1] == MASK)
    assert labels.tolist() == windows[(np.arange(n)[:, None] * length + pos).ravel()].tolist()
    # the other positions stay uniform over the first L - 1
    others = pos[has_last][:, :-1].ravel()
    assert np.all(np.bincount(others, minlength=length - 1)[: length - 1] > 0)


def test_mask_prob_below_one_uses_bert_split():
    rng = np.random.default_rng(3)
    length, n = 50, 3000
    windows = rng.integers(1, N_ITEMS + 1, size=n * length).astype(np.int32)
    offsets = np.arange(0, n * length + 1, length, dtype=np.int64)
    tokens, positions, labels, mask_offsets = mask_windows(
        windows, offsets, rng, masked_lm_prob=0.2, max_predictions=40, mask_prob=0.6,
        mask_id=MASK, num_items=N_ITEMS,
    )  # fmt: skip
    flat = np.repeat(offsets[:-1], np.diff(mask_offsets)) + positions
    assert labels.tolist() == windows[flat].tolist()  # labels are always the original items
    out = tokens[flat]
    masked = np.mean(out == MASK)
    kept = np.mean(out == labels)
    random_item = np.mean((out != MASK) & (out != labels))
    assert abs(masked - 0.6) < 0.02
    assert abs(kept - 0.2) < 0.02  # half of the remaining 40% (plus the rare random == original)
    assert abs(random_item - 0.2) < 0.02
    assert out[out != MASK].min() >= 1 and out[out != MASK].max() <= N_ITEMS
    # positions not chosen are never changed
    untouched = np.ones(len(tokens), dtype=bool)
    untouched[flat] = False
    assert np.array_equal(tokens[untouched], windows[untouched])


def test_mask_window_matches_batch_and_seed():
    window = np.arange(1, 41, dtype=np.int32)
    kwargs = dict(masked_lm_prob=0.2, max_predictions=40, mask_prob=1.0, mask_id=MASK, num_items=N_ITEMS)
    a = mask_window(window, np.random.default_rng(7), **kwargs)
    b = mask_windows(window, np.array([0, 40]), np.random.default_rng(7), **kwargs)
    c = mask_window(window, np.random.default_rng(8), **kwargs)
    assert all(np.array_equal(x, y) for x, y in zip(a, b[:3], strict=True))
    assert not np.array_equal(a[1], c[1])


def _instances(seqs, seed=0, **overrides):
    params = dict(
        max_len=10, step=5, dupe_factor=3, masked_lm_prob=0.2, max_predictions=4, mask_prob=1.0,
        mask_id=MASK, num_items=N_ITEMS,
    )  # fmt: skip
    params.update(overrides)
    items = np.array([i for s in seqs for i in s], dtype=np.int32)
    offsets = offsets_from_lengths(np.array([len(s) for s in seqs]))
    users = np.arange(1, len(seqs) + 1)
    return generate_instances(items, offsets, users, np.random.default_rng(seed), **params)


def test_generate_instances_layout_and_invariants():
    rng = np.random.default_rng(4)
    seqs = [list(rng.integers(1, N_ITEMS + 1, size=n)) for n in (1, 4, 10, 11, 23, 37)]
    inst, (w_users, w_items, w_off) = _instances(seqs, dupe_factor=3)
    expected_windows = sum(len(make_window_starts(len(s), 10, 5)) for s in seqs)
    assert len(w_users) == expected_windows
    assert len(inst) == expected_windows * 4
    assert inst.users.tolist() == np.repeat(w_users, 4).tolist()
    for i in range(len(inst)):
        w = i // 4
        window = w_items[w_off[w] : w_off[w + 1]]
        tokens = inst.tokens[inst.token_offsets[i] : inst.token_offsets[i + 1]]
        pos = inst.positions[inst.mask_offsets[i] : inst.mask_offsets[i + 1]]
        lab = inst.labels[inst.mask_offsets[i] : inst.mask_offsets[i + 1]]
        assert len(tokens) == len(window)
        if i % 4 == 3:  # the last-item copy closes each window's group
            assert pos.tolist() == [len(window) - 1]
        else:
            assert len(pos) == min(4, max(1, int(np.floor(len(window) * 0.2 + 0.5))))
        assert lab.tolist() == window[pos].tolist()
        assert np.all(tokens[pos] == MASK)
        rest = np.setdiff1d(np.arange(len(window)), pos)
        assert tokens[rest].tolist() == window[rest].tolist()
    # windows: the user's windows in start order, the last one ending with the sequence's last item
    for u, s in enumerate(seqs, start=1):
        mine = np.flatnonzero(w_users == u)
        last = mine[-1]
        assert w_items[w_off[last] : w_off[last + 1]].tolist() == list(s[-10:])
        assert w_items[w_off[mine[0]] : w_off[mine[0] + 1]].tolist() == list(s[:10])


def test_generate_instances_deterministic_and_seeded():
    seqs = [list(range(1, 30)), list(range(5, 60))]
    a, _ = _instances(seqs, seed=5)
    b, _ = _instances(seqs, seed=5)
    c, _ = _instances(seqs, seed=6)
    assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.positions, b.positions)
    assert not np.array_equal(a.positions, c.positions)


def test_dupe_factor_zero_gives_only_last_item_copies():
    seqs = [list(range(1, 30))]
    inst, (w_users, _, _) = _instances(seqs, dupe_factor=0)
    assert len(inst) == len(w_users) == 5  # starts 0, 4, 9, 14, 19
    assert np.all(inst.num_masked == 1)
    assert inst.positions.tolist() == [9] * 5


def test_no_sliding_window():
    seqs = [list(range(1, 26))]
    _, (_, w_items, w_off) = _instances(seqs, step=sliding_step(10, -1), dupe_factor=1)
    windows = [w_items[w_off[i] : w_off[i + 1]].tolist() for i in range(len(w_off) - 1)]
    assert windows == [list(range(1, 11)), list(range(6, 16)), list(range(16, 26))]
