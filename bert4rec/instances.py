"""Training windows and masked-item instances, as the original BERT4Rec ``gen_data_fin.py`` made them.

Pure numpy, no file I/O. Sequences are ragged arrays in CSR layout: ``items`` holds every sequence back
to back and ``offsets`` (``len(sequences) + 1`` entries, int64) marks where each one starts and ends.

Windows (``make_window_starts``): a training sequence of length ``n <= max_len`` is one window; a longer
one is cut into windows of ``max_len`` items starting at ``range(n - max_len, 0, -step)`` plus 0, i.e.
one window anchored at the end of the sequence, further ones stepping back by ``step`` items, and one
from the start. ``step = int(prop_sliding_window * max_len)``, or ``max_len`` when
``prop_sliding_window == -1``. A sequence's windows come in increasing start order (the original
iterated ``beg_idx[::-1]``).

Masking (``mask_windows``, ``mask_window``): each window gets
``k = min(max_predictions, max(1, round(len * masked_lm_prob)))`` distinct positions drawn uniformly
(the ``k`` smallest of ``len`` uniform keys); ``round`` rounds halves up, like the Python 2 ``round``
the original ran under. A chosen position becomes ``mask_id`` with probability ``mask_prob``;
otherwise, as in BERT, it keeps its item or becomes a uniformly random item ``1..num_items`` with
probability 1/2 each. Positions are increasing; labels are the original items at those positions.

Instances (``generate_instances``): every window is masked ``dupe_factor`` times, then once more with
only its last item masked. Order: window by window (users in order, each user's windows by increasing
start); for each window its ``dupe_factor`` random maskings, then the last-item copy. (The original
shuffled all instances once; any trainer shuffles again, so a stable documented order is kept instead.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# Upper bound on random keys drawn at once while masking (rows x window length); bounds peak memory.
_MASK_CHUNK_ELEMS = 4_000_000


@dataclass
class TrainInstances:
    """Masked training instances as ragged arrays (CSR): tokens and masked positions/labels per instance."""

    users: np.ndarray  # [n] int32
    tokens: np.ndarray  # flat int32 input ids after masking, all instances concatenated
    token_offsets: np.ndarray  # [n+1] int64; instance i = tokens[token_offsets[i]:token_offsets[i+1]]
    positions: np.ndarray  # flat int32 masked positions (0-based, increasing within an instance)
    labels: np.ndarray  # flat int32 original items at those positions
    mask_offsets: np.ndarray  # [n+1] int64; layout of positions and labels

    def __len__(self) -> int:
        return int(self.users.shape[0])

    @property
    def lengths(self) -> np.ndarray:
        """Number of tokens of each instance."""
        return np.diff(self.token_offsets)

    @property
    def num_masked(self) -> np.ndarray:
        """Number of masked positions of each instance."""
        return np.diff(self.mask_offsets)


def sliding_step(max_len: int, prop_sliding_window: float) -> int:
    """Window step in items: ``int(prop * max_len)``, or ``max_len`` (no overlap) when ``prop == -1``."""
    if prop_sliding_window == -1:
        return max_len
    return int(prop_sliding_window * max_len)


def make_window_starts(length: int, max_len: int, step: int) -> list[int]:
    """Start indices of the training windows of a sequence of ``length`` items, in increasing order."""
    if max_len < 1 or step < 1:
        raise ValueError(f"max_len and step must be >= 1, got {max_len}, {step}")
    if length <= max_len:
        return [0]
    starts = list(range(length - max_len, 0, -step)) + [0]
    return starts[::-1]


def ragged_index(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Indices ``starts[i], ..., starts[i]+lengths[i]-1`` for every i, concatenated (int64, vectorised)."""
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    nonempty = lengths > 0
    if not nonempty.all():
        starts, lengths = starts[nonempty], lengths[nonempty]
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    # step +1 inside a segment, a jump to the next start between segments; one cumsum
    idx = np.ones(total, dtype=np.int64)
    idx[0] = starts[0]
    seg_begin = np.cumsum(lengths[:-1])
    idx[seg_begin] = starts[1:] - (starts[:-1] + lengths[:-1] - 1)
    np.cumsum(idx, out=idx)
    return idx


def ragged_gather(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenate ``values[starts[i]:starts[i]+lengths[i]]`` for every i, vectorised."""
    return values[ragged_index(starts, lengths)]


def offsets_from_lengths(lengths: np.ndarray) -> np.ndarray:
    """CSR offsets (int64, one more entry than ``lengths``) for the given segment lengths."""
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


def build_windows(
    items: np.ndarray, offsets: np.ndarray, max_len: int, step: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut every sequence into windows.

    Returns ``(seq_index, window_items, window_offsets)``: for each window the index of its sequence, and the
    windows' items in CSR layout. Empty sequences give no window.
    """
    lengths = np.diff(offsets)
    seq_index: list[int] = []
    win_starts: list[int] = []
    for s, n in enumerate(lengths.tolist()):
        if n == 0:
            continue
        starts = make_window_starts(n, max_len, step)
        seq_index.extend([s] * len(starts))
        base = int(offsets[s])
        win_starts.extend(base + st for st in starts)
    seq_idx = np.asarray(seq_index, dtype=np.int64)
    starts_arr = np.asarray(win_starts, dtype=np.int64)
    win_len = np.minimum(lengths[seq_idx], max_len) if len(seq_idx) else np.zeros(0, dtype=np.int64)
    window_items = ragged_gather(items, starts_arr, win_len)
    return seq_idx, window_items, offsets_from_lengths(win_len)


def num_to_predict(lengths: np.ndarray, masked_lm_prob: float, max_predictions: int) -> np.ndarray:
    """Masked positions per window: ``min(max_predictions, max(1, round_half_up(len * masked_lm_prob)))``."""
    lengths = np.asarray(lengths, dtype=np.int64)
    k = np.floor(lengths * float(masked_lm_prob) + 0.5).astype(np.int64)
    k = np.minimum(max_predictions, np.maximum(1, k))
    return np.minimum(k, lengths)


def _mask_in_place(
    tokens: np.ndarray,
    starts: np.ndarray,
    lengths: np.ndarray,
    k: np.ndarray,
    out_starts: np.ndarray,
    positions: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    mask_prob: float,
    mask_id: int,
    num_items: int,
    progress: Callable[[int], object] | None,
    mask_last_prob: float = 0.0,
) -> None:
    """Mask windows ``tokens[starts[i]:starts[i]+lengths[i]]`` in place, ``k[i]`` positions each, writing
    positions/labels at ``out_starts[i]``. Draw order: by length (ascending), then by i.
    ``mask_last_prob``: chance that a window's last position is forced into its masked set."""
    order = np.argsort(lengths, kind="stable")
    bounds = np.flatnonzero(np.diff(lengths[order])) + 1
    for group in np.split(order, bounds) if len(order) else []:
        length = int(lengths[group[0]])
        kk = int(k[group[0]])
        rows_per_chunk = max(1, _MASK_CHUNK_ELEMS // length)
        for c0 in range(0, len(group), rows_per_chunk):
            rows = group[c0 : c0 + rows_per_chunk]
            if kk >= length:
                pos = np.broadcast_to(np.arange(length, dtype=np.int64), (len(rows), length))
            else:
                keys = rng.random((len(rows), length), dtype=np.float32)
                if mask_last_prob > 0:
                    keys[rng.random(len(rows)) < mask_last_prob, length - 1] = -1.0
                pos = np.argpartition(keys, kk - 1, axis=1)[:, :kk]
                pos.sort(axis=1)
            flat_tok = (starts[rows][:, None] + pos).ravel()
            out = (out_starts[rows][:, None] + np.arange(kk, dtype=np.int64)).ravel()
            orig = tokens[flat_tok]
            positions[out] = pos.ravel()
            labels[out] = orig
            if mask_prob >= 1.0:
                tokens[flat_tok] = mask_id
            else:
                m = len(flat_tok)
                u_mask = rng.random(m)
                u_keep = rng.random(m)
                random_items = rng.integers(1, num_items + 1, size=m)
                tokens[flat_tok] = np.where(
                    u_mask < mask_prob, mask_id, np.where(u_keep < 0.5, orig, random_items)
                )
            if progress is not None:
                progress(len(rows))


def mask_windows(
    items: np.ndarray,
    offsets: np.ndarray,
    rng: np.random.Generator,
    *,
    masked_lm_prob: float,
    max_predictions: int,
    mask_prob: float,
    mask_id: int,
    num_items: int,
    progress: Callable[[int], object] | None = None,
    mask_last_prob: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mask every window once (vectorised by window length).

    ``items``/``offsets``: the windows in CSR layout (item ids ``1..num_items``). Returns
    ``(tokens, positions, labels, mask_offsets)``: tokens share ``offsets``; positions/labels use
    ``mask_offsets``. ``progress(n)`` is called after each batch of ``n`` windows. ``mask_last_prob`` > 0
    forces a window's last position into its masked set with that probability: the test task (next item
    after the whole history, nothing to its right) then appears more often in training.
    Random draws happen in a fixed order (windows grouped by length, ascending; index order within a
    length), so the result depends only on the inputs and the generator's state.
    Handy for a trainer that re-masks ``train_windows.txt`` every epoch.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    lengths = np.diff(offsets)
    if len(lengths) and lengths.min() < 1:
        raise ValueError("cannot mask an empty window")
    k = num_to_predict(lengths, masked_lm_prob, max_predictions)
    mask_offsets = offsets_from_lengths(k)
    tokens = np.array(items[int(offsets[0]) : int(offsets[-1])], dtype=np.int32)
    positions = np.empty(int(mask_offsets[-1]), dtype=np.int32)
    labels = np.empty(int(mask_offsets[-1]), dtype=np.int32)
    _mask_in_place(
        tokens, offsets[:-1] - offsets[0], lengths, k, mask_offsets[:-1], positions, labels, rng,
        mask_prob, mask_id, num_items, progress, mask_last_prob,
    )  # fmt: skip
    return tokens, positions, labels, mask_offsets


def mask_window(
    window: np.ndarray,
    rng: np.random.Generator,
    *,
    masked_lm_prob: float,
    max_predictions: int,
    mask_prob: float,
    mask_id: int,
    num_items: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mask one window; returns ``(tokens, positions, labels)`` (same draws as ``mask_windows``)."""
    window = np.asarray(window, dtype=np.int32)
    tokens, positions, labels, _ = mask_windows(
        window,
        np.array([0, len(window)], dtype=np.int64),
        rng,
        masked_lm_prob=masked_lm_prob,
        max_predictions=max_predictions,
        mask_prob=mask_prob,
        mask_id=mask_id,
        num_items=num_items,
    )
    return tokens, positions, labels


def generate_instances(
    items: np.ndarray,
    offsets: np.ndarray,
    users: np.ndarray,
    rng: np.random.Generator,
    *,
    max_len: int,
    step: int,
    dupe_factor: int,
    masked_lm_prob: float,
    max_predictions: int,
    mask_prob: float,
    mask_id: int,
    num_items: int,
    progress: Callable[[int], object] | None = None,
) -> tuple[TrainInstances, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """All training instances for the given training sequences (one per entry of ``users``).

    Returns ``(instances, (window_users, window_items, window_offsets))``. ``progress(n)`` is called as
    windows are masked (``dupe_factor * num_windows`` in total).
    """
    seq_idx, win_items, win_offsets = build_windows(items, offsets, max_len, step)
    win_users = np.asarray(users, dtype=np.int32)[seq_idx]
    n_win = len(win_users)
    win_len = np.diff(win_offsets)
    per = dupe_factor + 1
    n_inst = n_win * per

    # instance w * per + d: window w, random masking d < dupe_factor, last-item copy for d == dupe_factor
    inst_win = np.repeat(np.arange(n_win, dtype=np.int64), per)
    is_last = np.zeros(n_inst, dtype=bool)
    is_last[dupe_factor::per] = True
    inst_len = win_len[inst_win]
    token_offsets = offsets_from_lengths(inst_len)
    inst_k = num_to_predict(inst_len, masked_lm_prob, max_predictions)
    inst_k[is_last] = 1
    mask_offsets = offsets_from_lengths(inst_k)
    tokens = ragged_gather(np.asarray(win_items, dtype=np.int32), win_offsets[inst_win], inst_len)
    positions = np.empty(int(mask_offsets[-1]), dtype=np.int32)
    labels = np.empty(int(mask_offsets[-1]), dtype=np.int32)

    last = np.flatnonzero(is_last)
    last_pos = token_offsets[last + 1] - 1
    labels[mask_offsets[last]] = tokens[last_pos]
    positions[mask_offsets[last]] = inst_len[last] - 1
    tokens[last_pos] = mask_id

    rand = np.flatnonzero(~is_last)
    _mask_in_place(
        tokens, token_offsets[rand], inst_len[rand], inst_k[rand], mask_offsets[rand], positions, labels,
        rng, mask_prob, mask_id, num_items, progress,
    )  # fmt: skip

    instances = TrainInstances(
        users=win_users[inst_win].astype(np.int32),
        tokens=tokens,
        token_offsets=token_offsets,
        positions=positions,
        labels=labels,
        mask_offsets=mask_offsets,
    )
    assert len(instances) == n_inst
    return instances, (win_users, win_items.astype(np.int32), win_offsets)


def length_stats(lengths: np.ndarray) -> dict[str, float]:
    """min / mean / median / max of a length array (zeros when empty), JSON-friendly."""
    lengths = np.asarray(lengths)
    if len(lengths) == 0:
        return {"min": 0, "mean": 0.0, "median": 0.0, "max": 0}
    return {
        "min": int(lengths.min()),
        "mean": round(float(lengths.mean()), 3),
        "median": float(np.median(lengths)),
        "max": int(lengths.max()),
    }

