"""GRU4Rec (Hidasi et al., ICLR 2016; Hidasi and Karatzoglou, CIKM 2018), done the way its official code does.

item -> embedding (the output item vectors themselves with ``constrained_embedding``, the official default) ->
dropout -> GRU layer(s) -> dropout -> score of every candidate item = dot product with its item vector + its bias.

Two ways to train, chosen by the data:

* **session-parallel** on session data (``gen_data_fin.py --split date``): ``batch_size`` sessions side by side,
  one event of each per step, the hidden state carried from step to step (never back-propagated through) and
  reset where a session ends and the next one takes its slot; every event of the epoch is predicted exactly
  once, and the carried state is part of every checkpoint, so a resumed run continues exactly;
* **whole sequences** on leave-one-out data: every window of ``train_windows.txt`` through the GRU at once, the
  next item predicted at every position (like SASRec), so GRU4Rec joins the same comparison table.

Losses (``"loss"``): ``ce`` -- softmax over all items (cheap at a few thousand items); ``cross-entropy`` -- the
official sampled one: softmax over the targets of the other sessions of the step (session-parallel only) plus
``n_sample`` items drawn with probability proportional to popularity^``sample_alpha``; ``bpr-max`` -- the official
BPR-max over the same candidates, with its ``bpreg`` regularisation. A candidate equal to a row's own target is
left out of that row's negatives. Evaluation reads a whole history (no length limit) and, for sessions, scores
every position in one pass, the state starting from zero for every session.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from bert4rec.batches import pad_rows
from bert4rec.config import ModelConfig, TrainOptions
from bert4rec.data.dataset import TrainingData
from bert4rec.data.files import Windows
from bert4rec.instances import offsets_from_lengths, ragged_gather
from bert4rec.models.base import (
    SequentialRecommender,
    TrainingBatches,
    full_softmax_cross_entropy,
    last_positions,
    truncated_normal,
)
from bert4rec.models.sasrec import NextItemBatch, collate_next_items

LOSSES = ("ce", "cross-entropy", "bpr-max")
WHOLE_HISTORY = 1 << 30


@dataclass(frozen=True)
class GRU4RecConfig(ModelConfig):
    MODEL: ClassVar[str] = "GRU4Rec"
    LOWERCASE: ClassVar[tuple[str, ...]] = ("loss",)

    hidden_size: int = 100
    num_hidden_layers: int = 1
    constrained_embedding: bool = True    # input embedding = output item vectors (official default)
    embedding_size: int = 0               # unconstrained: input embedding size (0 = hidden_size)
    embedding_dropout_prob: float = 0.0   # on the input embeddings (official dropout_p_embed)
    hidden_dropout_prob: float = 0.0      # on the GRU output (official dropout_p_hidden)
    loss: str = "ce"
    n_sample: int = 2048                  # cross-entropy / bpr-max: extra popularity-sampled negatives per step
    sample_alpha: float = 0.75
    bpreg: float = 1.0                    # bpr-max: weight of the score regularisation
    initializer_range: float = 0.02

    def problem(self) -> str | None:
        problem = (super().problem() or self._positive_ints("hidden_size", "num_hidden_layers")
                   or self._fractions("embedding_dropout_prob", "hidden_dropout_prob")
                   or self._choice("loss", LOSSES) or self._positive_numbers("initializer_range"))
        if problem:
            return problem
        if not isinstance(self.constrained_embedding, bool):
            return f"constrained_embedding: must be true or false, got {self.constrained_embedding!r}"
        for key in ("embedding_size", "n_sample"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                return f"{key}: must be an integer >= 0, got {value!r}"
        for key in ("sample_alpha", "bpreg"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                return f"{key}: must be a number >= 0, got {value!r}"
        return None


@dataclass
class SessionStep:
    """One step of session-parallel training: slot b feeds ``inputs[b]`` and predicts ``targets[b]``."""

    inputs: np.ndarray     # [B] int64
    targets: np.ndarray    # [B] int64
    reset: np.ndarray      # [B] bool: the slot starts a new session here (its state restarts from zero)
    active: np.ndarray     # [B] bool: the slot still has a session (the end of an epoch leaves some empty)
    negatives: np.ndarray | None = None

    @property
    def num_sequences(self) -> int:
        return int(self.active.sum())


@dataclass
class Schedule:
    """The steps of one epoch of session-parallel training."""

    inputs: np.ndarray   # [S, B]
    targets: np.ndarray  # [S, B]
    reset: np.ndarray    # [S, B]
    active: np.ndarray   # [S, B]

    @property
    def lengths(self) -> np.ndarray:
        return np.ones(len(self.inputs), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.inputs)


def session_parallel_schedule(sessions: Windows, order: np.ndarray, slots: int) -> Schedule:
    """Sessions in ``order`` fed ``slots`` at a time: each slot runs through its session one event per step and
    takes the next waiting session when it ends; the epoch ends when every event has been predicted once."""
    lengths = sessions.lengths
    current = np.full(slots, -1, dtype=np.int64)
    position = np.zeros(slots, dtype=np.int64)
    reset = np.zeros(slots, dtype=bool)
    first = min(slots, len(order))
    current[:first], reset[:first] = order[:first], True
    waiting = first
    steps: list[tuple[np.ndarray, ...]] = []
    while (current >= 0).any():
        active = current >= 0
        at = sessions.offsets[np.maximum(current, 0)] + position
        inputs = np.where(active, sessions.items[at], 0)
        targets = np.where(active, sessions.items[np.minimum(at + 1, len(sessions.items) - 1)], 0)
        steps.append((inputs, targets, reset.copy(), active))
        position = position + active
        ended = active & (position + 1 >= lengths[np.maximum(current, 0)])
        reset[:] = False
        for slot in np.flatnonzero(ended):
            current[slot], position[slot] = (order[waiting], 0) if waiting < len(order) else (-1, 0)
            reset[slot] = waiting < len(order)
            waiting += 1
    inputs, targets, resets, actives = (np.stack(a) for a in zip(*steps, strict=True))
    return Schedule(inputs.astype(np.int64), targets.astype(np.int64), resets, actives)


class PopularityNegatives:
    """``n_sample`` items per step, drawn with replacement with probability proportional to count^alpha."""

    def __init__(self, counts: np.ndarray, config: GRU4RecConfig) -> None:
        weights = np.power(np.maximum(counts[1:].astype(np.float64), 0.0), config.sample_alpha)
        self.cumulative = np.cumsum(weights / weights.sum())
        self.n = config.n_sample if config.loss != "ce" else 0

    def draw(self, rng: np.random.Generator) -> np.ndarray | None:
        if not self.n:
            return None
        return np.searchsorted(self.cumulative, rng.random(self.n), side="right").clip(max=len(self.cumulative) - 1) + 1


class SessionParallelBatches(TrainingBatches):
    """Session data: one step of every slot per batch, the steps in their order (no shuffling of steps)."""

    carries_state = True

    def __init__(self, data: TrainingData, opts: TrainOptions, config: GRU4RecConfig) -> None:
        self.sessions, self.slots, self.seed = data.sessions, opts.batch_size, opts.seed
        self.negatives = PopularityNegatives(data.training_item_counts(), config)
        self._first = self._schedule(0)  # built once: it also sizes an epoch, and the trainer starts with it
        self.num_examples = len(self._first) * self.slots  # an epoch = the steps of epoch 0's schedule

    def _schedule(self, epoch: int) -> Schedule:
        order = np.random.default_rng([self.seed, epoch, 3]).permutation(len(self.sessions))
        return session_parallel_schedule(self.sessions, order, self.slots)

    def examples(self, epoch: int) -> Schedule:
        return self._first if epoch == 0 else self._schedule(epoch)

    def order(self, examples: Schedule, rng: np.random.Generator, batch_size: int = 0, bucket: bool = False,
              min_size: int = 1) -> list[np.ndarray]:
        return [np.array([s]) for s in range(len(examples))]

    def collate(self, examples: Schedule, idx: np.ndarray, rng: np.random.Generator) -> SessionStep:
        s = int(idx[0])
        return SessionStep(examples.inputs[s], examples.targets[s], examples.reset[s], examples.active[s],
                           self.negatives.draw(rng))


class SequenceBatches(TrainingBatches):
    """Leave-one-out data: every window of >= 2 items, the next item at every position (as SASRec)."""

    shared_draws = True  # its only draws are the batch's negatives

    def __init__(self, data: TrainingData, config: GRU4RecConfig) -> None:
        w, lengths = data.windows, data.windows.lengths
        keep = np.flatnonzero(lengths >= 2)
        self.windows = Windows(w.users[keep], ragged_gather(w.items, w.offsets[keep], lengths[keep]),
                               offsets_from_lengths(lengths[keep]))
        self.num_examples = len(self.windows)
        self.negatives = PopularityNegatives(data.training_item_counts(), config)

    def examples(self, epoch: int) -> Windows:
        return self.windows

    def collate(self, examples: Windows, idx: np.ndarray, rng: np.random.Generator) -> NextItemBatch:
        batch = collate_next_items(examples, idx)
        batch.negatives = self.negatives.draw(rng)
        return batch


class GRU4Rec(SequentialRecommender):
    config_class = GRU4RecConfig

    def __init__(self, config: GRU4RecConfig, kernels: str = "auto") -> None:
        super().__init__(config, kernels)
        hidden = config.hidden_size
        init = truncated_normal(config.initializer_range)
        self.item_embeddings = nn.Embedding(config.vocab_size, hidden, weight_attr=init)
        self.output_bias = self.create_parameter([config.vocab_size], is_bias=True,
                                                 default_initializer=nn.initializer.Constant(0.0))
        size = hidden if config.constrained_embedding or not config.embedding_size else config.embedding_size
        self.input_embeddings = None if config.constrained_embedding else nn.Embedding(config.vocab_size, size,
                                                                                       weight_attr=init)
        self.embedding_dropout = nn.Dropout(config.embedding_dropout_prob)
        self.gru = nn.GRU(size, hidden, num_layers=config.num_hidden_layers)
        self.hidden_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.max_len = WHOLE_HISTORY
        self._carried: paddle.Tensor | None = None  # session-parallel training: [layers, B, H]

    def describe(self) -> str:
        c = self.config
        return f"{c.hidden_size} hidden, {c.num_hidden_layers} GRU layer(s), {c.loss} loss, " \
               f"{self.num_parameters():,} parameters"

    def max_history(self) -> int:
        return WHOLE_HISTORY

    def training_batches(self, data: TrainingData, opts: TrainOptions):
        if data.protocol == "session":
            return SessionParallelBatches(data, opts, self.config)
        return SequenceBatches(data, self.config)

    # ------------------------------------------------------------------------------------------- pieces

    def embed(self, items: paddle.Tensor) -> paddle.Tensor:
        table = self.input_embeddings if self.input_embeddings is not None else self.item_embeddings
        return self.embedding_dropout(table(items))

    def run(self, inputs: paddle.Tensor, lengths: paddle.Tensor | None = None) -> paddle.Tensor:
        """[B, L] right-padded item ids -> [B, L, H] GRU outputs (each position sees the ones before it)."""
        outputs, _ = self.gru(self.embed(inputs), sequence_length=lengths)
        return outputs

    def scores(self, h: paddle.Tensor) -> paddle.Tensor:
        """[M, H] -> [M, N + 1] scores of items 0..N."""
        n = self.num_items + 1
        return paddle.matmul(h, self.item_embeddings.weight[:n], transpose_y=True) + self.output_bias[:n]

    def loss_on(self, h: paddle.Tensor, targets: paddle.Tensor, negatives: np.ndarray | None,
                in_batch: bool) -> paddle.Tensor:
        """The configured loss for outputs ``h`` [M, H] and their ``targets`` [M]."""
        if self.config.loss == "ce":
            n = self.num_items + 1
            return full_softmax_cross_entropy(h, self.item_embeddings.weight[1:n], targets - 1,
                                              bias=self.output_bias[1:n], fused=self.uses_kernels())
        parts = [targets] if in_batch else []
        if negatives is not None:
            parts.append(paddle.to_tensor(negatives))
        candidates = paddle.concat(parts) if parts else targets
        logits = paddle.matmul(h, self.item_embeddings(candidates), transpose_y=True) + \
            paddle.gather(self.output_bias, candidates)
        rows = paddle.arange(h.shape[0])
        if in_batch:  # column i holds row i's target
            positive = paddle.take_along_axis(logits, rows.unsqueeze(1), axis=1)
            own = F.one_hot(rows, logits.shape[1]).astype("bool")
        else:
            positive = (h * self.item_embeddings(targets)).sum(axis=-1, keepdim=True) + \
                paddle.gather(self.output_bias, targets).unsqueeze(1)
            own = paddle.zeros_like(logits, dtype="bool")
        same_item = candidates.unsqueeze(0) == targets.unsqueeze(1)
        negative = paddle.logical_and(paddle.logical_not(own), paddle.logical_not(same_item))
        if self.config.loss == "cross-entropy":
            masked = paddle.where(negative, logits, paddle.full_like(logits, -1e9))
            all_logits = paddle.concat([positive, masked], axis=1)
            return F.cross_entropy(all_logits, paddle.zeros([h.shape[0], 1], dtype="int64")).mean()
        # bpr-max: softmax weights over the negatives, -log sum_j w_j sigmoid(pos - neg_j) + bpreg sum_j w_j neg_j^2
        weights = F.softmax(paddle.where(negative, logits, paddle.full_like(logits, -1e9)), axis=1)
        weights = weights * negative.astype(weights.dtype)
        ranking = (weights * F.sigmoid(positive - logits)).sum(axis=1)
        regular = (weights * logits * logits).sum(axis=1)
        return (-paddle.log(ranking + 1e-24) + self.config.bpreg * regular).mean()

    # --------------------------------------------------------------------------------------- contract

    def forward(self, batch) -> paddle.Tensor:
        if isinstance(batch, SessionStep):
            return self.session_step(batch)
        inputs = paddle.to_tensor(batch.input_ids)
        lengths = (inputs != 0).astype("int64").sum(axis=1)
        outputs = self.hidden_dropout(self.run(inputs, lengths))
        h = paddle.gather(outputs.reshape([-1, self.config.hidden_size]), paddle.to_tensor(batch.flat_positions))
        return self.loss_on(h, paddle.to_tensor(batch.labels), batch.negatives, in_batch=False)

    def session_step(self, step: SessionStep) -> paddle.Tensor:
        """One session-parallel step: states of restarting slots zeroed, one GRU step, the state carried on."""
        slots, layers, hidden = len(step.inputs), self.config.num_hidden_layers, self.config.hidden_size
        carried = self._carried
        if carried is None or carried.shape[1] != slots:
            carried = paddle.zeros([layers, slots, hidden])
        keep = paddle.to_tensor((~step.reset).astype("float32")).reshape([1, slots, 1])
        x = self.embed(paddle.to_tensor(step.inputs)).unsqueeze(1)
        out, state = self.gru(x, carried * keep)
        self._carried = (state * paddle.to_tensor(step.active.astype("float32")).reshape([1, slots, 1])).detach()
        active = paddle.to_tensor(np.flatnonzero(step.active))
        h = paddle.gather(self.hidden_dropout(out[:, 0]), active)
        return self.loss_on(h, paddle.gather(paddle.to_tensor(step.targets), active), step.negatives, in_batch=True)

    def training_state(self) -> dict | None:
        return {"carried": self._carried.numpy()} if self._carried is not None else None

    def load_training_state(self, state: dict | None) -> None:
        self._carried = paddle.to_tensor(state["carried"]) if state else None

    def score_histories(self, history: paddle.Tensor) -> paddle.Tensor:
        lengths, last = last_positions(history, -1)
        outputs = self.run(history, paddle.maximum(lengths, paddle.ones_like(lengths)))
        return self.scores(paddle.gather(outputs.reshape([-1, self.config.hidden_size]), last))

    def score_every_position(self, sessions: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """One GRU pass per session batch, the state starting from zero for each session."""
        inputs = pad_rows([np.asarray(s[:-1]) for s in sessions])
        counts = np.array([len(s) - 1 for s in sessions])
        flat = np.concatenate([np.arange(c) + row * inputs.shape[1] for row, c in enumerate(counts)])
        with paddle.no_grad():
            outputs = self.run(paddle.to_tensor(inputs), paddle.to_tensor(counts.astype(np.int64)))
            h = paddle.gather(outputs.reshape([-1, self.config.hidden_size]), paddle.to_tensor(flat))
            scores = self.scores(h).numpy()
        return scores, np.concatenate([np.asarray(s[1:]) for s in sessions]).astype(np.int64)

