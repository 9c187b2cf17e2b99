"""The training batches every speed measurement of ``bench.py`` uses, chosen once and saved for the children.

They are batches of the trainer's first epoch (``epoch_batches`` with the trainer's seed, length-bucketed, full
batches only): for BERT4Rec the masked instances of ``train.txt``, for SASRec the windows of
``train_windows.txt`` with at least 2 items (what its trainer trains on). The timed ones are a *stratified* sample
by padded width (every n-th batch in order of width), so the sample pads like the whole epoch; the naive ports
get the same sequences reshuffled into unbucketed batches padded to 200. numpy only: the children import this
before deciding how Paddle is loaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

BATCH_SIZE = 256
SEED = 42


def stratified(n_total: int, k: int) -> np.ndarray:
    """``k`` indices spread evenly over ``range(n_total)`` (the middle of each of ``k`` equal strata)."""
    if not 0 < k <= n_total:
        raise ValueError(f"cannot pick {k} of {n_total}")
    return ((np.arange(k) + 0.5) * n_total / k).astype(np.int64)


def choose_batches(lengths: np.ndarray, timed_batches: int, warmup: int, what: str, seed: int = SEED
                   ) -> tuple[np.ndarray, dict]:
    """[warmup + timed, BATCH_SIZE] example ids: warm-up batches, then the stratified timed ones."""
    from bert4rec.batches import epoch_batches

    batches = epoch_batches(lengths, BATCH_SIZE, np.random.default_rng([seed, 0]), bucket=True)
    full = [b for b in batches if len(b) == BATCH_SIZE]
    if len(full) < timed_batches + warmup:
        raise ValueError(f"only {len(full)} full batches of {BATCH_SIZE} in {what}")
    widths = np.array([lengths[b].max() for b in full])
    timed = np.argsort(widths, kind="stable")[stratified(len(full), timed_batches)]  # ascending width
    chosen = set(timed.tolist())
    warm = [i for i in range(len(full)) if i not in chosen][:warmup]
    rows = np.stack([full[i] for i in [*warm, *timed.tolist()]])
    info = {
        "how": f"the trainer's epoch-0 length-bucketed batches (seed {seed}), full ones only, a stratified "
               "sample by padded width; the naive port gets the same sequences shuffled, padded to 200",
        "examples": int(len(lengths)),
        "epoch_batches": len(batches),
        "epoch_mean_padded_width": round(float(widths.mean()), 1),
        "sample_batches": int(timed_batches),
        "sample_mean_padded_width": round(float(widths[timed].mean()), 1),
        "mean_length": round(float(lengths.mean()), 1),
    }
    return rows, info


def ragged_subset(values: np.ndarray, offsets: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows ``ids`` of a CSR table, as a new CSR table."""
    starts, ends = offsets[ids], offsets[ids + 1]
    flat = np.concatenate([values[a:b] for a, b in zip(starts, ends, strict=True)])
    return flat, np.concatenate([[0], np.cumsum(ends - starts)]).astype(np.int64)


def write_sample(data_dir: Path, path: Path, timed_batches: int, warmup: int, seed: int = SEED) -> dict:
    """BERT4Rec's sample: the masked instances of ``train.txt`` the chosen batches need, and the batches."""
    from bert4rec.data import load_train_instances

    instances = load_train_instances(data_dir / "train.txt")
    rows, info = choose_batches(instances.lengths, timed_batches, warmup, str(data_dir / "train.txt"), seed)
    used, inverse = np.unique(rows, return_inverse=True)
    tokens, token_offsets = ragged_subset(instances.tokens, instances.token_offsets, used)
    positions, mask_offsets = ragged_subset(instances.positions, instances.mask_offsets, used)
    labels, _ = ragged_subset(instances.labels, instances.mask_offsets, used)
    inverse = inverse.reshape(rows.shape)
    np.savez(path, tokens=tokens, token_offsets=token_offsets, positions=positions, labels=labels,
             mask_offsets=mask_offsets, warmup=inverse[:warmup], timed=inverse[warmup:], instance_ids=used)
    info["mean_masked_per_instance"] = round(float(np.diff(instances.mask_offsets).mean()), 2)
    return {"train_instances": len(instances), **info}


def write_window_sample(data_dir: Path, path: Path, timed_batches: int, warmup: int, seed: int = SEED) -> dict:
    """SASRec's sample: the training windows (>= 2 items) the chosen batches need, and the batches."""
    from bert4rec.data import load_windows

    windows = load_windows(data_dir / "train_windows.txt")
    keep = np.flatnonzero(windows.lengths >= 2)
    lengths = windows.lengths[keep]
    rows, info = choose_batches(lengths, timed_batches, warmup, str(data_dir / "train_windows.txt"), seed)
    used, inverse = np.unique(rows, return_inverse=True)
    items, offsets = ragged_subset(windows.items, windows.offsets, keep[used])
    inverse = inverse.reshape(rows.shape)
    np.savez(path, items=items, offsets=offsets, warmup=inverse[:warmup], timed=inverse[warmup:],
             window_ids=keep[used])
    info["mean_predictions_per_window"] = round(float((lengths - 1).mean()), 2)
    return {"train_windows": int(len(keep)), **info}


def load_sample(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def sample_batches(sample: dict[str, np.ndarray], steps: int, naive: bool, seed: int = SEED) -> list[np.ndarray]:
    """The ``steps`` timed batches of a measurement: a stratified subset of the sample, in random order; for the
    naive port the same sequences shuffled into unbucketed batches."""
    timed = sample["timed"][stratified(len(sample["timed"]), steps)]
    rng = np.random.default_rng([seed, steps, 7])
    if naive:
        return list(rng.permutation(timed.reshape(-1)).reshape(timed.shape))
    return list(timed[rng.permutation(len(timed))])


def masked_batch(sample: dict[str, np.ndarray], idx: np.ndarray, pad_to: int | None):
    """BERT4Rec's batch of the sample's instances ``idx``, exactly as the trainer collates it."""
    from bert4rec.instances import TrainInstances
    from bert4rec.models.bert4rec import collate_masked

    instances = TrainInstances(users=np.zeros(len(sample["token_offsets"]) - 1, dtype=np.int32),
                               tokens=sample["tokens"], token_offsets=sample["token_offsets"],
                               positions=sample["positions"], labels=sample["labels"],
                               mask_offsets=sample["mask_offsets"])
    return collate_masked(instances, idx, pad_to=pad_to)


def next_item_batch(sample: dict[str, np.ndarray], idx: np.ndarray, pad_to: int | None):
    """SASRec's batch of the sample's windows ``idx``, exactly as the trainer collates it (ce: no negatives)."""
    from bert4rec.data.files import Windows
    from bert4rec.models.sasrec import collate_next_items

    windows = Windows(np.zeros(len(sample["offsets"]) - 1, dtype=np.int32), sample["items"], sample["offsets"])
    return collate_next_items(windows, idx, pad_to=pad_to)
