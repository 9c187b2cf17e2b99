"""The child side of ``bench.py``: each measurement runs in a fresh process whose CPU environment is fixed before
Paddle loads (ours: ``bert4rec``'s CPU settings and fused kernels; naive: Paddle's defaults, Paddle imported
before anything of ``bert4rec``). Prints one JSON line per job.

Jobs: ``ours_64``, ``ours_256``, ``ours_sasrec`` (the trainer's own path: its batches, ``train_step``, AdamW of
``make_optimizer``, the model with its default kernels), ``naive_64``, ``naive_256``, ``naive_sasrec`` (the
straightforward ports of ``naive_ports.py``) and ``eval`` (every test user, FULL and POP100).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np
from samples import SEED, load_sample, masked_batch, next_item_batch, sample_batches

MAX_LEN = 200
EVAL_BATCH_SIZE = 256


def batch_counts(batch) -> tuple[int, int, int]:
    """(sequences, predicted items, padded width) of a batch; a session-parallel step: its events, width 1."""
    if hasattr(batch, "labels"):
        return batch.num_sequences, len(batch.labels), batch.input_ids.shape[1]
    events = int(np.asarray(batch.active).sum())
    return events, events, 1


def timed_loop(batches: list[np.ndarray], warmup: int, step) -> dict:
    """Run ``step(i, idx) -> batch`` on every batch; the first ``warmup`` are not timed. A step is timed whole
    (collation, forward, backward, optimizer update; the loss is read back, so the step has finished)."""
    times, sequences, predicted, widths = [], 0, 0, []
    warm_seconds = 0.0
    timed_steps = len(batches) - warmup
    for i, idx in enumerate(batches):
        start = time.perf_counter()
        batch = step(i, idx)
        elapsed = time.perf_counter() - start
        if i < warmup:
            warm_seconds += elapsed
            continue
        times.append(elapsed)
        counted = batch_counts(batch)
        sequences += counted[0]
        predicted += counted[1]
        widths.append(counted[2])
        if len(times) % 10 == 0 or len(times) == timed_steps:
            print(f"  step {len(times)}/{timed_steps}: {elapsed:.3f} s", file=sys.stderr, flush=True)
    seconds = sum(times)
    return {
        "steps": len(times),
        "warmup_steps": warmup,
        "warmup_seconds": round(warm_seconds, 3),
        "seconds": round(seconds, 3),
        "sequences": sequences,
        "masked_items": predicted,
        "seq_per_s": round(sequences / seconds, 1),
        "masked_items_per_s": round(predicted / seconds, 1),
        "median_step_seconds": round(statistics.median(times), 4),
        "mean_padded_width": round(float(np.mean(widths)), 1),
    }


def cpu_defaults() -> dict[str, str]:
    """Import ``bert4rec``, which applies its CPU defaults; must happen before Paddle is imported."""
    if "paddle" in sys.modules:
        raise RuntimeError("bert4rec's CPU defaults must be applied before paddle is imported")
    import bert4rec

    return dict(bert4rec.CPU_SETTINGS)


def resolved_config(path: Path, data_dir: Path):
    from bert4rec.data import load_vocab
    from bert4rec.models import load_config

    return load_config(path).with_vocab(load_vocab(data_dir / "vocab.txt").size, str(path), "vocab.txt")


def bench_options(config_path: Path, ctx: dict, batch: int):
    """The trainer's options of a measurement (its optimizer and schedule are built from them)."""
    from bert4rec.config import TrainOptions

    data = ctx["data_dir"]
    return TrainOptions(config_path=config_path, train_path=data / "train.txt", valid_path=None,
                        test_path=data / "test.txt", vocab_path=data / "vocab.txt",
                        checkpoints=ctx["work_dir"] / "checkpoints", batch_size=batch, max_len=MAX_LEN,
                        progress=False)


def job_train_ours(config_path: Path, spec: dict, ctx: dict, sample: dict) -> dict:
    import paddle

    from bert4rec.models import build_model
    from bert4rec.train import learning_rate, make_optimizer, train_step

    paddle.seed(SEED)
    config = resolved_config(config_path, ctx["data_dir"])
    model = build_model(config, max_len=MAX_LEN)  # default: fused kernels when available
    model.train()
    opts = bench_options(config_path, ctx, spec["batch"])
    optimizer = make_optimizer(model, opts)
    batches = [*sample["warmup"][: spec["warmup"]], *sample_batches(sample, spec["steps"], naive=False)]
    batches = [b[: spec["batch"]] for b in batches]
    collate = masked_batch if config.MODEL == "BERT4Rec" else next_item_batch

    def step(i, idx):
        batch = collate(sample, idx, None)  # padded to its own longest sequence, as in the trainer
        train_step(model, optimizer, batch, learning_rate(i, opts, len(batches)))
        return batch

    result = timed_loop(batches, spec["warmup"], step)
    result["fused"] = model.uses_kernels()
    return result


def naive_update(optimizer, loss) -> None:
    """What a port's training loop does with a loss: backward, step, clear; reading it back ends the step."""
    loss.backward()
    optimizer.step()
    optimizer.clear_grad()
    float(loss)


def job_train_naive(config_path: Path, spec: dict, ctx: dict, sample: dict) -> dict:
    import paddle
    from naive_ports import NaiveBERT4Rec, NaiveSASRec, naive_optimizer

    paddle.seed(SEED)
    cfg = json.loads(config_path.read_text(encoding="utf-8"))
    vocab = sum(1 for _ in open(ctx["data_dir"] / "vocab.txt", encoding="utf-8"))
    sasrec = cfg.get("model") == "SASRec"
    model = (NaiveSASRec if sasrec else NaiveBERT4Rec)(cfg, vocab)
    model.train()
    optimizer = naive_optimizer(model)
    batches = [*sample["warmup"][: spec["warmup"]], *sample_batches(sample, spec["steps"], naive=True)]
    batches = [b[: spec["batch"]] for b in batches]
    width = cfg["max_position_embeddings"]

    def step(i, idx):
        if sasrec:
            batch = next_item_batch(sample, idx, width)  # every batch padded to 200
            targets = np.zeros(batch.input_ids.size, dtype=np.int64)
            targets[batch.flat_positions] = batch.labels
            loss = model.loss(paddle.to_tensor(batch.input_ids), paddle.to_tensor(targets.reshape(len(idx), -1)))
        else:
            batch = masked_batch(sample, idx, width)
            loss = model.loss(paddle.to_tensor(batch.input_ids), paddle.to_tensor(batch.flat_positions),
                              paddle.to_tensor(batch.labels))
        naive_update(optimizer, loss)
        return batch

    return timed_loop(batches, spec["warmup"], step)


def sample_sessions(sample: dict):
    """The sample's windows as sessions, and the order both GRU4Rec jobs feed them in."""
    from bert4rec.data.files import Windows

    sessions = Windows(np.zeros(len(sample["offsets"]) - 1, dtype=np.int32), sample["items"], sample["offsets"])
    return sessions, np.random.default_rng([SEED, 5]).permutation(len(sessions))


def job_train_ours_gru(config_path: Path, spec: dict, ctx: dict, sample: dict) -> dict:
    import paddle

    from bert4rec.models import build_model
    from bert4rec.models.gru4rec import SessionStep, session_parallel_schedule
    from bert4rec.train import learning_rate, make_optimizer, train_step

    paddle.seed(SEED)
    model = build_model(resolved_config(config_path, ctx["data_dir"]))
    model.train()
    opts = bench_options(config_path, ctx, spec["batch"])
    optimizer = make_optimizer(model, opts)
    schedule = session_parallel_schedule(*sample_sessions(sample), spec["batch"])
    steps = list(range(spec["warmup"] + spec["steps"]))

    def step(i, s):
        batch = SessionStep(schedule.inputs[s], schedule.targets[s], schedule.reset[s], schedule.active[s])
        train_step(model, optimizer, batch, learning_rate(i, opts, len(steps)))
        return batch

    result = timed_loop(steps, spec["warmup"], step)
    result["fused"] = model.kernels != "plain"
    return result


def job_train_naive_gru(config_path: Path, spec: dict, ctx: dict, sample: dict) -> dict:
    import paddle
    from naive_ports import NaiveGRU4Rec, naive_optimizer

    paddle.seed(SEED)
    cfg = json.loads(config_path.read_text(encoding="utf-8"))
    vocab = sum(1 for _ in open(ctx["data_dir"] / "vocab.txt", encoding="utf-8"))
    model = NaiveGRU4Rec(cfg, vocab)
    model.train()
    optimizer = naive_optimizer(model)
    feeder = model.session_feeder(*sample_sessions(sample), spec["batch"])
    steps = list(range(spec["warmup"] + spec["steps"]))

    def step(i, _):
        batch, loss = feeder()
        naive_update(optimizer, loss)
        return batch

    return timed_loop(steps, spec["warmup"], step)


def job_eval(config_path: Path, spec: dict, ctx: dict) -> dict:
    import paddle

    from bert4rec.data import load_eval_set
    from bert4rec.evaluate import evaluate
    from bert4rec.models import build_model

    paddle.seed(SEED)
    model = build_model(resolved_config(config_path, ctx["data_dir"]), max_len=MAX_LEN)
    model.eval()
    test = load_eval_set(ctx["data_dir"] / "test.txt")
    start = time.perf_counter()
    offsets = test.history_offsets
    model.predict([test.history[offsets[i]:offsets[i + 1]] for i in range(min(16, len(test)))])  # warm
    result = {"num_users": len(test), "batch": EVAL_BATCH_SIZE, "repeats": spec["repeats"],
              "warmup_seconds": round(time.perf_counter() - start, 3), "fused": model.uses_kernels()}
    for protocol in ("full", "pop100"):
        runs = []
        for r in range(spec["repeats"]):
            start = time.perf_counter()
            evaluate(model.predict, test, model.num_items, EVAL_BATCH_SIZE, protocols=(protocol,))
            runs.append(round(time.perf_counter() - start, 3))
            print(f"  {protocol} run {r + 1}/{spec['repeats']}: {runs[-1]:.2f} s", file=sys.stderr, flush=True)
        result[f"{protocol}_runs_seconds"] = runs
        result[f"{protocol}_seconds"] = round(statistics.median(runs), 3)
    return result


def run_job(name: str, spec: dict, worker: str, ctx: dict, configs: dict[str, Path]) -> dict:
    """One measurement in this child (``worker``: ours or naive); ``{"error": ...}`` when it fails."""
    try:
        if name == "eval":
            return job_eval(configs["64"], spec, ctx)
        impl, config = name.split("_")
        if impl != worker:
            raise ValueError(f"job {name} in a {worker} child")
        sample = load_sample(ctx["work_dir"] / ("sample.npz" if config in ("64", "256") else "windows.npz"))
        if config == "gru4rec":
            run = job_train_ours_gru if impl == "ours" else job_train_naive_gru
        else:
            run = job_train_ours if impl == "ours" else job_train_naive
        return {"batch": spec["batch"], **run(configs[config], spec, ctx, sample)}
    except Exception as err:  # noqa: BLE001 - reported, and the other jobs still run
        traceback.print_exc()
        return {"error": f"{type(err).__name__}: {err}"}
