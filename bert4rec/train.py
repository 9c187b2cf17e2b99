"""Training: masked-item training of BERT4Rec, validation-based model selection, one final test.

The flow of ``train(opts)``:
1. load the model config and the files written by ``bert_train/gen_data_fin.py`` (vocabulary, training
   instances or windows, validation and test sets) and check they fit together;
2. AdamW (decoupled weight decay, none on LayerNorm weights and biases), linear warmup then linear decay,
   global gradient-norm clipping;
3. every ``eval_every`` steps: FULL and POP100 metrics on the *validation* set, a checkpoint (``last``, and
   ``best`` when validation FULL NDCG@10 improved), an event-log line and a refreshed plot; stop early after
   ``patience`` evaluations without improvement;
4. the best checkpoint (or, with ``--holdout test`` data and no validation set, the final weights) is scored on
   the *test* set exactly once; ``results.json`` records everything.

Nothing about the test set is ever looked at before step 4. Training is resumable: a checkpoint holds the
position in the epoch, so resuming replays exactly the batches and dropout masks an uninterrupted run would.
"""

from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import paddle
from tqdm import tqdm

from bert4rec.batches import collate, epoch_batches
from bert4rec.bert4rec import BERT4Rec
from bert4rec.checkpoint import load_checkpoint, restore, save_checkpoint
from bert4rec.config import DEFAULT_TRAIN_STEPS, BertConfig, TrainOptions, load_config
from bert4rec.data import EvalSet, Vocab, load_eval_set, load_train_instances, load_vocab, load_windows
from bert4rec.errors import UserError
from bert4rec.evaluate import bert4rec_scorer, evaluate
from bert4rec.fileio import atomic_path, atomic_write_text
from bert4rec.instances import TrainInstances, mask_windows

SELECT_METRIC = ("full", "NDCG@10")
GENERATE_HINT = "(generate the data with `cd bert_train && python gen_data_fin.py`)"
# BERT4Rec paper, Table 2, ML-1m row (POP100 protocol: 100 popularity-sampled negatives)
ML1M_ITEMS = 3416
PAPER_ML1M_POP100 = {"HR@1": 0.2863, "HR@5": 0.5876, "HR@10": 0.6970, "NDCG@10": 0.4818, "MRR": 0.4254}


@dataclass
class TrainState:
    """Where training is; saved in every checkpoint so a resumed run continues exactly."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_metric: float = -1.0
    best_step: int = 0
    evals_since_best: int = 0
    train_seconds: float = 0.0
    sequences: int = 0
    finished: bool = False


# ------------------------------------------------------------------------------------------------ data


@dataclass
class TrainingData:
    vocab: Vocab
    instances: TrainInstances | None      # fixed masking
    windows: tuple | None                 # dynamic masking: (users, items, offsets)
    valid: EvalSet | None
    test: EvalSet

    @property
    def num_instances(self) -> int:
        """Training sequences per epoch: fixed instances, or windows (each masked once per epoch)."""
        return len(self.instances) if self.instances is not None else len(self.windows[0])

    def epoch_instances(self, opts: TrainOptions, epoch: int) -> TrainInstances:
        """The instances of one epoch: the fixed file, or every window freshly masked from (seed, epoch)."""
        if self.instances is not None:
            return self.instances
        users, items, offsets = self.windows
        rng = np.random.default_rng([opts.seed, epoch, 1])
        tokens, positions, labels, mask_offsets = mask_windows(
            items, offsets, rng, masked_lm_prob=opts.masked_lm_prob, max_predictions=opts.max_predictions,
            mask_prob=1.0, mask_id=self.vocab.mask_id, num_items=self.vocab.num_items,
            mask_last_prob=opts.mask_last_prob)
        return TrainInstances(users=users, tokens=tokens, token_offsets=np.asarray(offsets, dtype=np.int64),
                              positions=positions, labels=labels, mask_offsets=mask_offsets)


def load_training_data(opts: TrainOptions, config: BertConfig) -> TrainingData:
    """Read and cross-check the generated files; every mismatch is a one-line UserError."""
    vocab = load_vocab(opts.vocab_path)
    if config.vocab_size != vocab.size:
        raise UserError(f"{opts.config_path}: vocab_size is {config.vocab_size} but {opts.vocab_path} has "
                        f"{vocab.size} tokens; set \"vocab_size\": {vocab.size}")
    if opts.max_len > config.max_position_embeddings:
        raise UserError(f"--MAX_LEN {opts.max_len} exceeds max_position_embeddings "
                        f"{config.max_position_embeddings} in {opts.config_path}")
    instances = windows = None
    if opts.masking == "fixed":
        instances = load_train_instances(opts.train_path)
        longest = int(instances.lengths.max()) if len(instances) else 0
        if len(instances) == 0:
            raise UserError(f"{opts.train_path}: no training instances")
    else:
        windows_path = opts.train_path.with_name("train_windows.txt")
        windows = load_windows(windows_path)
        longest = int(np.diff(windows[2]).max()) if len(windows[0]) else 0
        if len(windows[0]) == 0:
            raise UserError(f"{windows_path}: no training windows")
    if longest > opts.max_len:
        raise UserError(f"{opts.train_path}: instances of length {longest} exceed --MAX_LEN {opts.max_len} "
                        "(regenerate with a smaller --max_seq_length or raise --MAX_LEN)")
    valid = load_eval_set(opts.valid_path) if opts.valid_path is not None else None
    test = load_eval_set(opts.test_path)
    for name, eval_set in (("validation", valid), ("test", test)):
        if eval_set is not None and len(eval_set) and int(eval_set.targets.max()) > vocab.num_items:
            raise UserError(f"{name} set has item ids beyond the vocabulary ({vocab.num_items} items)")
    return TrainingData(vocab, instances, windows, valid, test)


# ------------------------------------------------------------------------------------------- optimiser


def learning_rate(step: int, opts: TrainOptions, total_steps: int) -> float:
    """Linear warmup to ``opts.lr`` over ``warmup_steps``, then linear decay to 0 at ``total_steps``."""
    if opts.warmup_steps and step < opts.warmup_steps:
        return opts.lr * (step + 1) / opts.warmup_steps
    remaining = max(total_steps - step, 0) / max(total_steps - opts.warmup_steps, 1)
    return opts.lr * remaining


def make_optimizer(model: paddle.nn.Layer, opts: TrainOptions) -> paddle.optimizer.AdamW:
    """AdamW as in BERT: decoupled weight decay on weight matrices and embeddings only."""
    no_decay = {p.name for n, p in model.named_parameters() if "norm" in n or n.endswith("bias") or p.ndim == 1}
    return paddle.optimizer.AdamW(
        learning_rate=opts.lr, parameters=model.parameters(), weight_decay=opts.weight_decay,
        beta1=0.9, beta2=0.999, epsilon=1e-6, grad_clip=paddle.nn.ClipGradByGlobalNorm(opts.clip_norm),
        apply_decay_param_fun=lambda name: name not in no_decay)


def total_steps_for(opts: TrainOptions, num_instances: int) -> int:
    per_epoch = math.ceil(num_instances / opts.batch_size)
    if opts.num_train_steps is not None:
        return opts.num_train_steps
    if opts.epochs is None:
        return DEFAULT_TRAIN_STEPS
    return max(1, math.ceil(opts.epochs * per_epoch))


# ------------------------------------------------------------------------------------------- reporting


class EventLog:
    """JSON-lines event log plus a PNG of the curves, both in the checkpoint directory (rank 0 only)."""

    def __init__(self, directory: Path, enabled: bool) -> None:
        self.path = directory / "events.jsonl"
        self.plot_path = directory / "training.png"
        self.enabled = enabled

    def write(self, event: dict) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(event) + "\n")

    def events(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line]

    def plot(self) -> None:
        if self.enabled:
            plot_training_curves(self.events(), self.plot_path)


def plot_training_curves(events: list[dict], path: Path) -> None:
    """Training loss and validation FULL NDCG@10 / POP100 HR@10 against steps and wall time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [e for e in events if e.get("event") == "train"]
    valid = [e for e in events if e.get("event") == "valid" and "full" in e]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for col, xkey, xlabel in ((0, "step", "step"), (1, "minutes", "training wall time (min)")):
        ax = axes[0][col]
        ax.plot([e[xkey] for e in train], [e["loss"] for e in train], lw=0.8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3)
        ax = axes[1][col]
        ax.plot([e[xkey] for e in valid], [e["full"]["NDCG@10"] for e in valid], "o-", label="FULL NDCG@10")
        ax.plot([e[xkey] for e in valid], [e["full"]["HR@10"] for e in valid], "s-", label="FULL HR@10")
        ax.plot([e[xkey] for e in valid], [e["pop100"]["HR@10"] for e in valid], "^-", label="POP100 HR@10")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def results_table(test: dict, num_items: int) -> str:
    """Test metrics, next to the paper's ML-1M row (POP100 protocol) when the data is ML-1M (3,416 items)."""
    with_paper = num_items == ML1M_ITEMS

    def cell(value: float | None, width: int = 10) -> str:
        return f"{value:>{width}.4f}" if value is not None else f"{'-':>{width}}"

    lines = [f"{'metric':<14}{'POP100':>10}{'paper ML-1m' if with_paper else '':>12}{'FULL':>10}"]
    for name in ("HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR", "Recall@10", "Precision@10"):
        paper = cell(PAPER_ML1M_POP100.get(name), 12) if with_paper else " " * 12
        lines.append(f"{name:<14}{cell(test['pop100'].get(name))}{paper}{cell(test['full'].get(name))}")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------- training


class StopFlag:
    """First Ctrl-C/SIGTERM asks the loop to stop after the current step and save; a second one aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = {}

    def __enter__(self) -> StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        tqdm.write("stopping after this step and saving a resumable checkpoint (Ctrl-C again to abort)")

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def setup_device(device: str) -> tuple[int, int]:
    """Select the device and, under ``paddle.distributed.launch``, join the process group."""
    if device == "gpu":
        if not paddle.is_compiled_with_cuda():
            raise UserError("--DEVICE gpu: this Paddle build has no CUDA support (install paddlepaddle-gpu)")
        paddle.set_device("gpu")
    elif device == "cpu":
        paddle.set_device("cpu")
    else:
        raise UserError(f"--DEVICE must be cpu or gpu, got {device!r}")
    import paddle.distributed as dist

    if dist.get_world_size() > 1:
        dist.init_parallel_env()
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def validate_options(opts: TrainOptions) -> BertConfig:
    """Check flags, then the model config, then that the data files exist; returns the config."""
    checks = [
        (opts.batch_size >= 1, f"--BATCH_SIZE must be >= 1, got {opts.batch_size}"),
        (opts.lr > 0, f"--LR_RATE must be > 0, got {opts.lr}"),
        (opts.warmup_steps >= 0, f"--WARMUP_STEPS must be >= 0, got {opts.warmup_steps}"),
        (opts.weight_decay >= 0, f"--WEIGHT_DECAY must be >= 0, got {opts.weight_decay}"),
        (opts.max_len >= 2, f"--MAX_LEN must be >= 2, got {opts.max_len}"),
        (opts.num_train_steps is None or opts.num_train_steps >= 1,
         f"--NUM_TRAIN_STEPS must be >= 1, got {opts.num_train_steps}"),
        (opts.epochs is None or opts.epochs > 0, f"--EPOCHS must be > 0, got {opts.epochs}"),
        (opts.eval_every >= 1, f"--EVAL_EVERY must be >= 1, got {opts.eval_every}"),
        (opts.patience >= 1, f"--PATIENCE must be >= 1, got {opts.patience}"),
        (opts.masking in ("fixed", "dynamic"), f"--MASKING must be fixed or dynamic, got {opts.masking!r}"),
        (0 < opts.masked_lm_prob <= 1, f"--MASKED_LM_PROB must be in (0, 1], got {opts.masked_lm_prob}"),
        (opts.max_predictions >= 1, f"--MAX_PREDICTIONS must be >= 1, got {opts.max_predictions}"),
        (0 <= opts.mask_last_prob <= 1, f"--MASK_LAST_PROB must be in [0, 1], got {opts.mask_last_prob}"),
        (opts.clip_norm > 0, f"--CLIP_NORM must be > 0, got {opts.clip_norm}"),
        (opts.max_minutes is None or opts.max_minutes > 0, f"--MAX_MINUTES must be > 0, got {opts.max_minutes}"),
        (opts.kernels in ("auto", "fused", "plain"), "--KERNELS must be auto, fused or plain"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
    config = load_config(opts.config_path)
    for flag, path in (("--VOCAB_PATH", opts.vocab_path), ("--TEST_DATA_DIR", opts.test_path)):
        if not Path(path).is_file():
            raise UserError(f"{flag} {path}: file not found {GENERATE_HINT}")
    train_file = opts.train_path if opts.masking == "fixed" else opts.train_path.with_name("train_windows.txt")
    if not train_file.is_file():
        raise UserError(f"--TRAIN_DATA_DIR {train_file}: file not found {GENERATE_HINT}")
    if opts.valid_path is not None and not Path(opts.valid_path).is_file():
        raise UserError(f"--VALIDATION_DATA_DIR {opts.valid_path}: file not found")
    return config


def train(opts: TrainOptions) -> dict:
    """Train, select on validation, test once; returns the results dict (also written to results.json)."""
    config = validate_options(opts)
    rank, world = setup_device(opts.device)
    is_main = rank == 0
    data = load_training_data(opts, config)
    opts.checkpoints.mkdir(parents=True, exist_ok=True)
    log = EventLog(opts.checkpoints, enabled=is_main)

    paddle.seed(opts.seed)
    model = BERT4Rec(config, kernels=opts.kernels)
    kernels = "fused CPU kernels" if model.uses_kernels() else "plain Paddle ops"  # builds them once, untimed
    if is_main:
        print(f"model: {config.hidden_size} hidden, {config.num_hidden_layers} layers, {kernels}, "
              f"{sum(int(p.size) for p in model.parameters()):,} parameters")
    optimizer = make_optimizer(model, opts)
    state = TrainState()
    if opts.init_checkpoint is not None:
        payload = load_checkpoint(opts.init_checkpoint)
        if payload["config"] != config.to_dict():
            raise UserError(f"{opts.init_checkpoint}: checkpoint was trained with a different model config "
                            f"than {opts.config_path}")
        state = TrainState(**restore(payload, model, optimizer))
        if is_main:
            print(f"resumed from {opts.init_checkpoint} at step {state.step}")
    elif is_main and log.path.exists():
        log.path.unlink()  # a fresh run starts a fresh log
    train_model = paddle.DataParallel(model) if world > 1 else model

    total_steps = total_steps_for(opts, data.num_instances)
    deadline = time.time() + opts.max_minutes * 60 if opts.max_minutes else None
    scorer = bert4rec_scorer(model, data.vocab.mask_id, data.vocab.num_items, opts.max_len)
    started_wall = time.time() - state.train_seconds

    def run_validation() -> bool:
        """Evaluate on validation, checkpoint; returns True when training should stop early."""
        stop = False
        if is_main:
            model.eval()
            event = {"event": "valid", "step": state.step, "epoch": state.epoch,
                     "minutes": round(state.train_seconds / 60, 3)}
            if data.valid is not None:
                metrics = evaluate(scorer, data.valid, data.vocab.num_items, opts.eval_batch_size)
                event.update(pop100=metrics["pop100"], full=metrics["full"], eval_seconds=metrics["seconds"])
                value = metrics[SELECT_METRIC[0]][SELECT_METRIC[1]]
                if value > state.best_metric:
                    state.best_metric, state.best_step, state.evals_since_best = value, state.step, 0
                    save_checkpoint(opts.checkpoints / "best.pdparams", model, None, asdict(state),
                                    config.to_dict())
                else:
                    state.evals_since_best += 1
                stop = state.evals_since_best >= opts.patience
                tqdm.write(f"step {state.step}: valid FULL NDCG@10 {value:.4f} HR@10 "
                           f"{metrics['full']['HR@10']:.4f} | POP100 HR@10 {metrics['pop100']['HR@10']:.4f} "
                           f"NDCG@10 {metrics['pop100']['NDCG@10']:.4f} (best {state.best_metric:.4f} "
                           f"@ {state.best_step})")
            log.write(event)
            save_checkpoint(opts.checkpoints / "last.pdparams", model, optimizer, asdict(state), config.to_dict())
            log.plot()
            model.train()
        if world > 1:
            flag = paddle.to_tensor([1 if stop else 0], dtype="int64")
            paddle.distributed.broadcast(flag, src=0)
            stop = bool(int(flag.item()))
        return stop

    model.train()
    progress = tqdm(total=total_steps, initial=state.step, disable=not (opts.progress and is_main),
                    unit="step", dynamic_ncols=True, desc="train")
    interrupted = False
    window_seqs, window_start = 0, time.perf_counter()
    with StopFlag() as stop_flag:
        while state.step < total_steps and not state.finished:
            instances = data.epoch_instances(opts, state.epoch)
            batches = epoch_batches(instances.lengths, opts.batch_size,
                                    np.random.default_rng([opts.seed, state.epoch]), bucket=opts.bucket)
            while state.batch_in_epoch < len(batches) and state.step < total_steps:
                step_start = time.perf_counter()
                global_batch = batches[state.batch_in_epoch]
                idx = global_batch[rank::world]
                batch = collate(instances.tokens, instances.token_offsets, instances.positions,
                                instances.labels, instances.mask_offsets, idx)
                lr = learning_rate(state.step, opts, total_steps)
                loss_value = train_step(train_model, optimizer, batch, lr)
                state.step += 1
                state.batch_in_epoch += 1
                state.sequences += len(global_batch)
                state.train_seconds += time.perf_counter() - step_start
                window_seqs += len(global_batch)
                if is_main and (state.step % 10 == 0 or state.step == total_steps):
                    rate = window_seqs / max(time.perf_counter() - window_start, 1e-9)
                    progress.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}", seq_s=f"{rate:.0f}",
                                         epoch=state.epoch)
                    log.write({"event": "train", "step": state.step, "epoch": state.epoch, "loss": loss_value,
                               "lr": lr, "seq_per_s": round(rate, 1),
                               "minutes": round(state.train_seconds / 60, 3)})
                    window_seqs, window_start = 0, time.perf_counter()
                progress.update(1)
                out_of_time = deadline is not None and time.time() >= deadline
                if state.step % opts.eval_every == 0 or state.step == total_steps or out_of_time:
                    eval_start = time.perf_counter()
                    if run_validation():
                        state.finished = True
                        if is_main:
                            tqdm.write(f"early stop: no validation improvement in {opts.patience} evaluations")
                        break
                    window_start += time.perf_counter() - eval_start
                if out_of_time:
                    state.finished = True
                    if is_main:
                        tqdm.write(f"time budget of {opts.max_minutes} min reached")
                    break
                if stop_flag.requested or state.step == opts.stop_at_step:
                    interrupted = True
                    break
            if interrupted or state.finished:
                break
            state.epoch += 1
            state.batch_in_epoch = 0
    progress.close()

    if interrupted:
        if is_main:
            save_checkpoint(opts.checkpoints / "last.pdparams", model, optimizer, asdict(state), config.to_dict())
            last = opts.checkpoints / "last.pdparams"
            print(f"interrupted at step {state.step}; resume with --INIT_CHECKPOINT {last}")
        raise KeyboardInterrupt
    if not state.finished and state.step % opts.eval_every != 0:
        run_validation()
    return finish(opts, model, data, config, state, log, scorer, time.time() - started_wall) if is_main else {}


def train_step(net, optimizer, batch, lr: float) -> float:
    """One optimisation step on one batch; returns the loss."""
    optimizer.set_lr(lr)
    loss = batch_loss(net, batch)
    loss.backward()
    optimizer.step()
    optimizer.clear_grad()
    return float(loss)


def batch_loss(net, batch) -> paddle.Tensor:
    """Masked-item cross-entropy of one batch; ``net`` may be the model or its DataParallel wrapper."""
    tensors = [paddle.to_tensor(x) for x in (batch.input_ids, batch.flat_positions, batch.labels)]
    if not isinstance(net, paddle.DataParallel):
        return net.loss(*tensors)  # the model's own (fused) loss
    logits = net(tensors[0], tensors[1])  # through the wrapper, so gradients are all-reduced
    return paddle.nn.functional.cross_entropy(logits, tensors[2].unsqueeze(-1)).mean()


def finish(opts: TrainOptions, model, data: TrainingData, config: BertConfig, state: TrainState, log: EventLog,
           scorer, wall_seconds: float) -> dict:
    """Restore the selected weights, score the test set once, write results.json and print the table."""
    best_path = opts.checkpoints / "best.pdparams"
    if data.valid is not None and best_path.exists():
        restore(load_checkpoint(best_path), model, rng=False)
        selected = state.best_step
    else:
        selected = state.step  # --holdout test: no validation set, the final weights are the model
    model.eval()
    results = {
        "model": "BERT4Rec",
        "config": config.to_dict(),
        "options": opts.to_json(),
        "data": {"dataset": opts.test_path.parent.name, "holdout": "valid_test" if data.valid else "test",
                 "num_users": len(data.test), "num_items": data.vocab.num_items},
        "valid": None,
        "test": None,
        "num_eval_users": len(data.test),
        "steps": state.step,
        "best_step": selected,
        "train_seconds": round(state.train_seconds, 1),
        "wall_seconds": round(wall_seconds, 1),
        "sequences_seen": state.sequences,
    }
    if data.valid is not None:
        valid = evaluate(scorer, data.valid, data.vocab.num_items, opts.eval_batch_size)
        results["valid"] = {"pop100": valid["pop100"], "full": valid["full"]}
    test = evaluate(scorer, data.test, data.vocab.num_items, opts.eval_batch_size)
    results["test"] = {"pop100": test["pop100"], "full": test["full"]}
    log.write({"event": "test", "step": selected, "pop100": test["pop100"], "full": test["full"],
               "minutes": round(state.train_seconds / 60, 3)})
    atomic_write_text(opts.checkpoints / "results.json", json.dumps(results, indent=2) + "\n")
    log.plot()
    print(f"\nTest ({len(data.test)} users, weights from step {selected}; training {state.train_seconds / 60:.1f} min)")
    print(results_table(results["test"], data.vocab.num_items))
    print(f"results: {opts.checkpoints / 'results.json'}")
    return results
