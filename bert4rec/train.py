"""The trainer, written once for every model (``bert4rec.models``): select on validation, test once.

The flow of ``train(opts)``:
1. check the flags, load the model config (its ``"model"`` picks the module) and the files written by
   ``bert_train/gen_data_fin.py`` (vocabulary, shared training windows, validation and test sets), every item id
   checked against the vocabulary;
2. the model turns the training data into batches (``model.training_batches``) and gives the loss of a batch
   (``model(batch)``); AdamW (decoupled weight decay, none on LayerNorm weights and biases), linear warmup then
   linear decay, global gradient-norm clipping; data-parallel under ``paddle.distributed.launch``;
3. every ``eval_every`` steps: FULL and POP100 metrics on the *validation* set through ``model.predict``, a
   checkpoint (``last``, and ``best`` when validation FULL NDCG@10 improved), an event-log line and a refreshed
   plot; stop early after ``patience`` evaluations without improvement;
4. the best checkpoint (or, with ``--holdout test`` data and no validation set, the final weights) is scored on the
   *test* set exactly once; ``results.json`` records everything.

A model without gradient training (MostPop) is set up from the data (``model.prepare``) and goes straight to 3
and 4. Nothing about the
test set is looked at before step 4. Training is resumable: a checkpoint holds the position in the epoch, so
resuming replays exactly the batches and dropout masks an uninterrupted run would.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import paddle
from tqdm import tqdm

from bert4rec.checkpoint import data_fingerprint, load_checkpoint, restore, resume, save_checkpoint
from bert4rec.config import DEFAULT_TRAIN_STEPS, ModelConfig, TrainOptions
from bert4rec.cpu import describe_machine
from bert4rec.data.dataset import is_session_data, load_training_data, protocol_metrics
from bert4rec.errors import EnvironmentFailure, TrainingDiverged, UserError
from bert4rec.fileio import atomic_write_text
from bert4rec.models import build_model, load_config
from bert4rec.models.base import collate_rng
from bert4rec.reporting import EventLog, results_table, validation_summary
from bert4rec.rundir import check_run_dir, claim_run_dir

GENERATE_HINT = "(generate the data with `cd bert_train && python gen_data_fin.py`)"


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
    warmup_seconds: float = 0.0  # training time when the warmup ended (``--LR_SCHEDULE budget`` decays from it)
    sequences: int = 0
    finished: bool = False
    stopped_by: str = ""  # why the run ended: "steps", "patience", "max_minutes" or "no training"
    final_lr: float | None = None  # the learning rate of the last step (0 only when the linear decay ran out)
    model_runtime: dict | None = None  # what the model carries between batches (``model.training_state()``)


# ------------------------------------------------------------------------------------------- optimiser


def learning_rate(step: int, opts: TrainOptions, total_steps: int, seconds: float = 0.0,
                  warmup_seconds: float = 0.0) -> float:
    """Linear warmup to ``opts.lr`` over ``warmup_steps``, then linear decay to 0 at ``total_steps`` (or, with
    ``--LR_SCHEDULE constant``, ``opts.lr`` from there on). ``budget`` decays to 0 at whichever runs out first,
    the steps or ``--MAX_MINUTES`` of training time (``seconds`` so far, ``warmup_seconds`` when the warmup
    ended): a run its time budget cuts short still ends annealed, not at whatever rate the step schedule had
    reached."""
    if opts.warmup_steps and step < opts.warmup_steps:
        return opts.lr * (step + 1) / opts.warmup_steps
    if opts.lr_schedule == "constant":
        return opts.lr
    remaining = max(total_steps - step, 0) / max(total_steps - opts.warmup_steps, 1)
    if opts.lr_schedule == "budget":
        budget = opts.max_minutes * 60
        remaining = min(remaining, max(budget - seconds, 0.0) / max(budget - warmup_seconds, 1e-9))
    return opts.lr * remaining


def make_optimizer(model: paddle.nn.Layer, opts: TrainOptions) -> paddle.optimizer.AdamW:
    """AdamW as in BERT: decoupled weight decay on weight matrices and embeddings only."""
    no_decay = {p.name for n, p in model.named_parameters() if "norm" in n or n.endswith("bias") or p.ndim == 1}
    return paddle.optimizer.AdamW(
        learning_rate=opts.lr, parameters=model.parameters(), weight_decay=opts.weight_decay,
        beta1=0.9, beta2=0.999, epsilon=1e-6,
        grad_clip=paddle.nn.ClipGradByGlobalNorm(opts.clip_norm) if opts.clip_norm > 0 else None,
        apply_decay_param_fun=lambda name: name not in no_decay)


def total_steps_for(opts: TrainOptions, num_examples: int) -> int:
    per_epoch = math.ceil(num_examples / opts.batch_size)
    if opts.num_train_steps is not None:
        return opts.num_train_steps
    if opts.epochs is None:
        return DEFAULT_TRAIN_STEPS
    return max(1, math.ceil(opts.epochs * per_epoch))


def train_step(net, optimizer, batch, lr: float) -> float:
    """One optimisation step on one batch (``net``: a model or its DataParallel wrapper); returns the loss.
    A loss that is not a finite number raises ``TrainingDiverged`` before the weights are touched."""
    optimizer.set_lr(lr)
    loss = net(batch)
    value = float(loss)
    if not math.isfinite(value):
        optimizer.clear_grad()
        raise TrainingDiverged(f"the training loss became {value}")
    loss.backward()
    optimizer.step()
    optimizer.clear_grad()
    return value


# --------------------------------------------------------------------------------------------- set-up


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


def option_problems(opts: TrainOptions) -> list[str]:
    """Every flag out of range, as messages naming the flag."""
    def finite(x) -> bool:
        return isinstance(x, int | float) and math.isfinite(x)

    checks = [
        (opts.batch_size >= 1, f"--BATCH_SIZE must be >= 1, got {opts.batch_size}"),
        (finite(opts.lr) and opts.lr > 0, f"--LR_RATE must be > 0, got {opts.lr}"),
        (opts.warmup_steps >= 0, f"--WARMUP_STEPS must be >= 0, got {opts.warmup_steps}"),
        (finite(opts.weight_decay) and opts.weight_decay >= 0, f"--WEIGHT_DECAY must be >= 0, got {opts.weight_decay}"),
        (opts.max_len >= 2, f"--MAX_LEN must be >= 2, got {opts.max_len}"),
        (opts.num_train_steps is None or opts.num_train_steps >= 1,
         f"--NUM_TRAIN_STEPS must be >= 1, got {opts.num_train_steps}"),
        (opts.epochs is None or (finite(opts.epochs) and opts.epochs > 0),
         f"--EPOCHS must be a finite number > 0, got {opts.epochs}"),
        (opts.eval_every >= 1, f"--EVAL_EVERY must be >= 1, got {opts.eval_every}"),
        (opts.patience >= 1, f"--PATIENCE must be >= 1, got {opts.patience}"),
        (opts.eval_batch_size >= 1, f"--EVAL_BATCH_SIZE must be >= 1, got {opts.eval_batch_size}"),
        (0 <= opts.seed < 2**32, f"--SEED must be in [0, 2^32), got {opts.seed}"),
        (finite(opts.clip_norm) and opts.clip_norm >= 0, f"--CLIP_NORM must be >= 0 (0: no clipping), got "
         f"{opts.clip_norm}"),
        (opts.lr_schedule in ("linear", "constant", "budget"), f"--LR_SCHEDULE must be linear, constant or "
         f"budget, got {opts.lr_schedule!r}"),
        (opts.lr_schedule != "budget" or opts.max_minutes is not None,
         "--LR_SCHEDULE budget decays to the time budget: give --MAX_MINUTES"),
        (opts.max_minutes is None or (finite(opts.max_minutes) and opts.max_minutes > 0),
         f"--MAX_MINUTES must be a finite number > 0, got {opts.max_minutes}"),
        (opts.kernels in ("auto", "fused", "plain"), "--KERNELS must be auto, fused or plain"),
    ]
    return [message for ok, message in checks if not ok]


def validate_options(opts: TrainOptions) -> ModelConfig:
    """Check flags, then the model config, then that the data files exist; returns the config."""
    problems = option_problems(opts)
    if problems:
        raise UserError(problems[0])
    config = load_config(opts.config_path, opts.config_overrides)
    sessions = is_session_data(opts.train_path)
    windows = opts.train_path if sessions else opts.train_path.with_name("train_windows.txt")
    required = [("--VOCAB_PATH", opts.vocab_path), ("--TEST_DATA_DIR", opts.test_path),
                ("--TRAIN_DATA_DIR", windows)]
    required += config.training_files(opts, sessions)
    for flag, path in required:
        if not Path(path).is_file():
            raise UserError(f"{flag} {path}: file not found {GENERATE_HINT}")
    if opts.valid_path is not None and not Path(opts.valid_path).is_file():
        raise UserError(f"--VALIDATION_DATA_DIR {opts.valid_path}: file not found")
    check_run_dir(opts.checkpoints)
    return config


# -------------------------------------------------------------------------------------------- training


def train(opts: TrainOptions, on_validation: Callable[[int, float, dict], None] | None = None) -> dict:
    """Train, select on validation, test once; returns the results dict (also written to results.json).

    ``on_validation(step, value, metrics)`` sees every validation: the selection metric (FULL NDCG@10; session
    data: MRR@20) and every metric of its protocol; it may raise to stop the run (pruning).
    """
    config = validate_options(opts)
    rank, world = setup_device(opts.device)
    with claim_run_dir(opts.checkpoints, enabled=rank == 0):
        return Trainer(opts, config, rank, world, on_validation).run()


class Throughput:
    """Sequences per second over the steps since the last reading; validation time does not count."""

    def __init__(self) -> None:
        self.sequences, self.start = 0, time.perf_counter()

    def add(self, sequences: int) -> None:
        self.sequences += sequences

    def read(self) -> float:
        rate = self.sequences / max(time.perf_counter() - self.start, 1e-9)
        self.sequences, self.start = 0, time.perf_counter()
        return rate

    @contextmanager
    def paused(self):
        started = time.perf_counter()
        yield
        self.start += time.perf_counter() - started


class Trainer:
    """One run of ``train``, in the order it happens: set up (data, config, model, batches, optimizer, resume),
    ``run`` (train steps with validations and checkpoints, or set up a model that has no training), ``finish``
    (test the selected weights once)."""

    def __init__(self, opts: TrainOptions, config: ModelConfig, rank: int, world: int,
                 on_validation: Callable[[int, float, dict], None] | None) -> None:
        self.opts, self.rank, self.world, self.on_validation = opts, rank, world, on_validation
        self.is_main = rank == 0
        self.data = load_training_data(opts.vocab_path, opts.train_path, opts.valid_path, opts.test_path,
                                       opts.max_len)
        self.config = config.with_data(self.data, str(opts.config_path), str(opts.vocab_path))
        self.data_id = data_fingerprint(opts)
        self.config.check_run(opts.max_len, str(opts.config_path))
        paddle.seed(opts.seed)
        self.model = build_model(self.config, kernels=opts.kernels, max_len=opts.max_len)
        self.batches = self.model.training_batches(self.data, opts) if self.model.trainable else None
        description = self.model.describe()  # builds the fused kernels once, before any timing
        self.log = EventLog(opts.checkpoints, enabled=self.is_main)
        self.say(f"model: {self.config.MODEL}, {description}")
        self.optimizer = make_optimizer(self.model, opts) if self.model.trainable else None
        self.state = self.start_or_resume()
        self.started_wall = time.time() - self.state.train_seconds
        self.throughput: Throughput | None = None  # set by train_steps, with the progress bar
        self.progress: tqdm | None = None

    def say(self, message: str) -> None:
        if self.is_main:
            tqdm.write(message)

    def start_or_resume(self) -> TrainState:
        """A fresh state (and a fresh event log), or the state of ``--INIT_CHECKPOINT`` with its weights."""
        opts = self.opts
        if opts.init_checkpoint is None:
            if self.is_main and self.log.path.exists():
                self.log.path.unlink()
            return TrainState()
        state = TrainState(**resume(opts, self.model, self.optimizer, self.config, self.data_id))
        self.model.load_training_state(state.model_runtime)
        self.log.cut_after(state.step)  # the steps after the checkpoint are run (and logged) again
        self.say(f"resumed from {opts.init_checkpoint} at step {state.step}")
        return state

    def run(self) -> dict:
        """Train (or set up an untrained model), then test the selected weights once; the results dict."""
        if self.opts.init_checkpoint is None:
            self.model.prepare(self.data)  # a resumed run restores it with the weights
        if not self.model.trainable:
            self.state.finished, self.state.stopped_by = True, "no training"
            self.validate()
        elif self.train_steps():
            if self.is_main:
                self.checkpoint("last.pdparams")
                print(f"interrupted at step {self.state.step}; resume with --INIT_CHECKPOINT "
                      f"{self.opts.checkpoints / 'last.pdparams'}")
            raise KeyboardInterrupt
        return self.finish() if self.is_main else {}

    # ------------------------------------------------------------------------------------------ the loop

    def train_steps(self) -> bool:
        """Steps until the budget, patience or ``--MAX_MINUTES`` ends the run; True when it was interrupted."""
        opts, state, batches = self.opts, self.state, self.batches
        if self.world > 1 and batches.carries_state:
            raise UserError(f"{self.config.MODEL} on this data trains in a fixed order of steps that carry state "
                            "from one to the next: run it in one process (./train.sh -local y)")
        net = paddle.DataParallel(self.model) if self.world > 1 else self.model
        total_steps = total_steps_for(opts, batches.num_examples)
        self.model.train()
        # into a log file (not a terminal) the bar is redrawn once a minute, not a few times a second
        self.progress = tqdm(total=total_steps, initial=state.step, disable=not (opts.progress and self.is_main),
                             unit="step", dynamic_ncols=True, desc="train",
                             mininterval=0.1 if sys.stderr.isatty() else 60)
        self.throughput = Throughput()
        with StopFlag() as stop_flag, self.progress:
            while state.step < total_steps and not state.finished:
                examples = batches.examples(state.epoch)
                order = batches.order(examples, np.random.default_rng([opts.seed, state.epoch]), opts.batch_size,
                                      opts.bucket, self.world)
                while state.batch_in_epoch < len(order) and state.step < total_steps and not state.finished:
                    self.step(net, examples, order[state.batch_in_epoch], total_steps)
                    if not state.finished and (stop_flag.requested or state.step == opts.stop_at_step):
                        return True
                if not state.finished:
                    state.epoch += 1
                    state.batch_in_epoch = 0
        return False

    def step(self, net, examples, global_batch: np.ndarray, total_steps: int) -> None:
        """One optimisation step on this process's share of ``global_batch``, then what follows it: the log line,
        a validation when due, the end of the run when patience or the time budget says so."""
        opts, state = self.opts, self.state
        started = time.perf_counter()
        rng = collate_rng(opts.seed, state.epoch, state.batch_in_epoch, self.rank, self.batches.shared_draws)
        batch = self.batches.collate(examples, global_batch[self.rank::self.world], rng)
        lr = learning_rate(state.step, opts, total_steps, state.train_seconds, state.warmup_seconds)
        try:
            loss = train_step(net, self.optimizer, batch, lr)
        except TrainingDiverged as err:
            raise self.diverged(err, lr) from None
        state.step += 1
        state.batch_in_epoch += 1
        state.final_lr = lr
        seen = batch.num_sequences if self.batches.carries_state else len(global_batch)  # events of a step
        state.sequences += seen
        state.train_seconds = self.shared_seconds(state.train_seconds + time.perf_counter() - started)
        if state.step == opts.warmup_steps:
            state.warmup_seconds = state.train_seconds
        self.throughput.add(seen)
        if self.is_main and (state.step % 10 == 0 or state.step == total_steps):
            self.log_step(loss, lr)
        self.progress.update(1)
        out_of_time = opts.max_minutes is not None and state.train_seconds >= opts.max_minutes * 60
        if state.step % opts.eval_every == 0 or state.step == total_steps or out_of_time:
            with self.throughput.paused():
                if self.validate():
                    state.finished, state.stopped_by = True, "patience"
                    self.say(f"early stop: no validation improvement in {opts.patience} evaluations")
                    return
        if out_of_time:
            state.finished, state.stopped_by = True, "max_minutes"
            self.say(f"time budget of {opts.max_minutes} min reached")

    def shared_seconds(self, seconds: float) -> float:
        """Rank 0's training time on every process when a time budget counts: the budget (and the schedule that
        follows it) must end the run at the same step and rate everywhere, or one process would wait forever
        for the others' gradients."""
        if self.world == 1 or self.opts.max_minutes is None:
            return seconds
        shared = paddle.to_tensor([seconds], dtype="float64")
        paddle.distributed.broadcast(shared, src=0)
        return float(shared.item())

    def log_step(self, loss: float, lr: float) -> None:
        state, rate = self.state, self.throughput.read()
        self.progress.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", seq_s=f"{rate:.0f}", epoch=state.epoch,
                                  refresh=False)  # drawn by update(), at its pace
        self.log.write({"event": "train", "step": state.step, "epoch": state.epoch, "loss": loss, "lr": lr,
                        "seq_per_s": round(rate, 1), "minutes": round(state.train_seconds / 60, 3)})

    def diverged(self, err: TrainingDiverged, lr: float) -> TrainingDiverged:
        """The one line a diverged run ends with: where, and the checkpoint that is still good."""
        last = self.opts.checkpoints / "last.pdparams"
        kept = (f"{last} (step {load_checkpoint(last)['state']['step']}) is the last good checkpoint"
                if last.exists() else "no checkpoint was written before it")
        return TrainingDiverged(f"{err} at step {self.state.step + 1} (lr {lr:.3g}): the run diverged and stops; "
                                f"{kept}. Lower --LR_RATE, raise --WARMUP_STEPS or keep --CLIP_NORM on")

    # ------------------------------------------------------------------------- validation and checkpoints

    def checkpoint(self, name: str, with_optimizer: bool = True) -> None:
        path = self.opts.checkpoints / name
        self.state.model_runtime = self.model.training_state()
        try:
            save_checkpoint(path, self.model, self.optimizer if with_optimizer else None, asdict(self.state),
                            self.config.to_dict(), {**self.opts.resume_options(), "data": self.data_id})
        except OSError as err:  # disk full...: the temp file is gone, the previous checkpoint untouched
            kept = f"; the previous {name} is intact" if path.exists() else ""
            raise EnvironmentFailure(f"{path}: cannot save the checkpoint ({err.strerror}){kept}") from None

    def validate(self) -> bool:
        """Evaluate on validation (main process), checkpoint; True when training should stop early."""
        stop = self.is_main and self.validate_here()
        if self.world > 1:
            flag = paddle.to_tensor([1 if stop else 0], dtype="int64")
            paddle.distributed.broadcast(flag, src=0)
            stop = bool(int(flag.item()))
        return stop

    def validate_here(self) -> bool:
        opts, state, data, model = self.opts, self.state, self.data, self.model
        stop = False
        model.eval()
        event = {"event": "valid", "step": state.step, "epoch": state.epoch,
                 "minutes": round(state.train_seconds / 60, 3)}
        if data.has_validation:
            metrics = data.evaluate(model, "valid", opts.eval_batch_size)
            event.update(protocol_metrics(metrics), eval_seconds=metrics["seconds"])
            value = metrics[data.selection[0]][data.selection[1]]
            if value > state.best_metric:
                state.best_metric, state.best_step, state.evals_since_best = value, state.step, 0
                self.checkpoint("best.pdparams", with_optimizer=False)
            else:
                state.evals_since_best += 1
            stop = state.evals_since_best >= opts.patience
            tqdm.write(f"step {state.step}: {validation_summary(metrics)} (best {state.best_metric:.4f} "
                       f"@ {state.best_step})")
            if self.on_validation is not None:
                self.on_validation(state.step, value, metrics[data.selection[0]])
        self.log.write(event)
        self.checkpoint("last.pdparams")
        self.log.plot()
        model.train()
        return stop

    # ------------------------------------------------------------------------------------------ the test

    def finish(self) -> dict:
        """Restore the selected weights, score the test set once, write results.json and print the table."""
        opts, model, data, config, state = self.opts, self.model, self.data, self.config, self.state
        best_path = opts.checkpoints / "best.pdparams"
        if data.has_validation and state.best_step > 0:
            if not best_path.exists():
                raise UserError(f"{best_path}: the weights chosen on validation (step {state.best_step}) are "
                                "missing; the run cannot be tested with other weights")
            restore(load_checkpoint(best_path), model, rng=False)
            selected = state.best_step
        else:
            selected = state.step  # --holdout test: no validation set, the final weights are the model
        model.eval()
        results = {
            "model": config.MODEL,
            "config": config.to_dict(),
            "options": opts.to_json(),
            "data": {"dataset": opts.test_path.parent.name, "protocol": data.protocol,
                     "holdout": ("valid_test" if data.has_validation else "test") if data.protocol == "loo"
                     else "date", "num_users": data.num_eval("test"), "num_items": data.num_items},
            "valid": None,
            "test": None,
            "num_eval_users": data.num_eval("test"),
            "steps": state.step,
            "best_step": selected,
            "train_seconds": round(state.train_seconds, 1),
            "wall_seconds": round(time.time() - self.started_wall, 1),
            "sequences_seen": state.sequences,
            "stopped_by": state.stopped_by or "steps",
            # a run stopped early (--MAX_MINUTES, patience) ends before the learning rate has decayed to 0
            "final_lr": state.final_lr,
            "machine": {**describe_machine(), "paddle": paddle.__version__},
        }
        if data.has_validation:
            results["valid"] = protocol_metrics(data.evaluate(model, "valid", opts.eval_batch_size))
        test = protocol_metrics(data.evaluate(model, "test", opts.eval_batch_size))
        results["test"] = test
        self.log.write({"event": "test", "step": selected, **test, "minutes": round(state.train_seconds / 60, 3)})
        atomic_write_text(opts.checkpoints / "results.json", json.dumps(results, indent=2) + "\n")
        self.log.plot()
        print(f"\nTest ({data.num_eval('test')} {'users' if data.protocol == 'loo' else 'sessions'}, {config.MODEL}, "
              f"weights from step {selected}; training {state.train_seconds / 60:.1f} min)")
        print(results_table(test, data.num_items))
        print(f"results: {opts.checkpoints / 'results.json'}")
        return results
