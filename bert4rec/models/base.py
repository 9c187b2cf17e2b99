"""The model contract: everything the trainer, the evaluation loop and the tools need from a model.

A model module (``bert4rec/models/<name>.py``) supplies

* its typed config: a frozen dataclass derived from ``bert4rec.config.ModelConfig`` whose ``MODEL`` is the name a
  JSON config gives in ``"model"``;
* how the shared per-user training sequences become its training batches: ``training_batches(data, opts)``
  returns an object with ``num_examples``, ``examples(epoch)`` (the epoch's examples; ``len`` and ``lengths`` for
  length-bucketed batching) and ``collate(examples, idx, rng)`` (one batch of plain numpy arrays);
* its loss: ``forward(batch)`` returns the mean training loss of a batch (so ``paddle.DataParallel`` wraps any
  model the same way);
* its scorer: ``predict(histories)`` maps a list of item-id histories to ``[B, num_items + 1]`` scores indexed by
  item id (column 0, padding, is ignored), which the one evaluation loop ranks.

``prepare(data)`` sets up what comes from the data rather than from gradients (MostPop's counts, SASRecF's item
features); a model without gradient training (``trainable = False``, MostPop) is complete after it.
The trainer (``bert4rec.train``) is written once against this contract and never names a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from bert4rec.batches import epoch_batches, pad_rows
from bert4rec.config import ModelConfig
from bert4rec.data.files import items_in_vocab
from bert4rec.errors import UserError
from bert4rec.fused_ops import bias_softmax_cross_entropy, kernels_available

if TYPE_CHECKING:
    from bert4rec.config import TrainOptions
    from bert4rec.data.dataset import TrainingData


class Examples(Protocol):
    """One epoch's training examples (windows, masked instances...)."""

    @property
    def lengths(self) -> np.ndarray: ...

    def __len__(self) -> int: ...


class TrainingBatches:
    """How a model turns the training data into batches (the base of every model's batch maker); every random
    choice comes from the ``rng`` given. The trainer asks for an epoch's examples, the order of its batches and
    each batch, and names no model."""

    num_examples: int
    carries_state: ClassVar[bool] = False  # steps carry state to the next (one process, the order given)
    shared_draws: bool = False  # collate draws only for the whole global batch (e.g. negatives shared by it)

    def examples(self, epoch: int) -> Examples:
        raise NotImplementedError

    def order(self, examples: Examples, rng: np.random.Generator, batch_size: int, bucket: bool,
              min_size: int) -> list[np.ndarray]:
        """The example indices of each batch of an epoch: shuffled, length-bucketed batches by default."""
        return epoch_batches(examples.lengths, batch_size, rng, bucket=bucket, min_size=min_size)

    def collate(self, examples: Examples, idx: np.ndarray, rng: np.random.Generator) -> Any:
        raise NotImplementedError


def collate_rng(seed: int, epoch: int, batch_in_epoch: int, rank: int, shared: bool) -> np.random.Generator:
    """The random stream of one process's share of a batch: its own (per-example draws such as masks) unless the
    draws are ``shared`` by the global batch; those come from rank 0's stream on every process, so a data-parallel
    step sees the negatives the single-process step would."""
    return np.random.default_rng([seed, epoch, batch_in_epoch, 0 if shared else rank, 2])


def truncated_normal(std: float) -> paddle.ParamAttr:
    """Weights drawn from a truncated normal of this std (BERT's and RecBole's initialisation)."""
    return paddle.ParamAttr(initializer=nn.initializer.TruncatedNormal(std=std))


def last_positions(history: paddle.Tensor, offset: int) -> tuple[paddle.Tensor, paddle.Tensor]:
    """Per row of right-padded ``history`` [B, L]: its number of items, and the flat index (into [B*L']) of
    position ``items + offset`` where L' = L + 1 if ``offset`` is 0 (a slot appended) else L."""
    lengths = (history != 0).astype("int64").sum(axis=1)
    width = paddle.shape(history)[1] + (1 if offset == 0 else 0)
    rows = paddle.arange(paddle.shape(history)[0], dtype="int64")
    return lengths, rows * width + paddle.maximum(lengths + offset, paddle.zeros_like(lengths))


LOGIT_CELLS = 1 << 28   # [M, N] logits up to 1 GB are materialised whole (ML-1M at batch 256); more go in chunks
CHUNK_CELLS = 1 << 24   # ... of this many cells (64 MB) each, recomputed in the backward


def full_softmax_cross_entropy(h: paddle.Tensor, items: paddle.Tensor, targets: paddle.Tensor,
                               bias: paddle.Tensor | None = None, fused: bool = False,
                               smoothing: float = 0.0) -> paddle.Tensor:
    """Mean softmax cross-entropy of outputs ``h`` [M, H] over every row of ``items`` [N, H] (plus ``bias`` [N]);
    ``targets`` [M] are 0-based rows. ``fused``: the fused softmax cross-entropy kernel. Past ``LOGIT_CELLS`` logits
    (a large catalogue) the rows go in chunks whose logits are recomputed in the backward instead of kept, so
    memory stays flat as the catalogue grows (one more matrix product per chunk). ``smoothing``: label smoothing
    (``smoothing_margin``)."""
    rows, num_items = h.shape[0], items.shape[0]
    if rows * num_items <= LOGIT_CELLS:
        loss = _cross_entropy_sum(h, items, bias, targets, fused) / rows
    else:
        from paddle.distributed.fleet.utils import recompute

        step = max(1, CHUNK_CELLS // num_items)
        total = [recompute(_cross_entropy_sum, h[start:start + step], items, bias, targets[start:start + step], fused)
                 for start in range(0, rows, step)]
        loss = paddle.add_n(total) / rows
    return loss + smoothing * smoothing_margin(h, items, bias, targets) if smoothing else loss


def smoothing_margin(h: paddle.Tensor, items: paddle.Tensor, bias: paddle.Tensor | None, targets: paddle.Tensor
                     ) -> paddle.Tensor:
    """Mean over rows of (target logit - mean logit over the items). With target distribution (1 - e) one-hot +
    e / N, cross-entropy = lse - z_t + e (z_t - mean z) = plain cross-entropy + e * this: label smoothing without a
    second pass over the [M, N] logits (the mean logit is ``h`` against the mean item vector)."""
    margin = (h * paddle.gather(items - items.mean(axis=0, keepdim=True), targets)).sum(axis=-1)
    if bias is not None:
        margin = margin + paddle.gather(bias, targets) - bias.mean()
    return margin.mean()


def _cross_entropy_sum(h: paddle.Tensor, items: paddle.Tensor, bias: paddle.Tensor | None, targets: paddle.Tensor,
                       fused: bool) -> paddle.Tensor:
    return softmax_cross_entropy_sum(item_logits(h, items, fused), bias, targets, fused)


def item_logits(h: paddle.Tensor, items: paddle.Tensor, fused: bool) -> paddle.Tensor:
    """``h`` [M, H] against every row of ``items`` [N, H] -> [M, N]; ``fused``: after an explicit transpose
    (a small copy that makes the backward faster on CPU than transpose_y=True)."""
    if fused:
        return paddle.matmul(h, paddle.transpose(items, [1, 0]))
    return paddle.matmul(h, items, transpose_y=True)


def softmax_cross_entropy_sum(logits: paddle.Tensor, bias: paddle.Tensor | None, targets: paddle.Tensor,
                              fused: bool) -> paddle.Tensor:
    """Summed cross-entropy of softmax(``logits`` [M, N] + ``bias`` [N]) at ``targets`` [M] (0-based columns);
    ``fused``: one kernel pass forward and one backward instead of Paddle's several over the [M, N] block."""
    if fused:
        bias = bias if bias is not None else paddle.zeros([logits.shape[1]], dtype=logits.dtype)
        return bias_softmax_cross_entropy(logits, bias, targets).sum()
    if bias is not None:
        logits = logits + bias
    return F.cross_entropy(logits, targets.unsqueeze(-1), reduction="sum")


class SequentialRecommender(nn.Layer):
    """Base class of every model: holds the config and defines the contract (see the module docstring)."""

    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    trainable: ClassVar[bool] = True

    def __init__(self, config: ModelConfig, kernels: str = "auto") -> None:
        super().__init__()
        self.config = config
        self.kernels = kernels
        self.max_len = int(getattr(config, "max_position_embeddings", 200))  # the run's --MAX_LEN (trainer)

    def uses_kernels(self) -> bool:
        """Whether this model currently runs the fused CPU kernels (else plain Paddle ops)."""
        if self.kernels == "plain":
            return False
        available = kernels_available()
        if self.kernels == "fused" and not available:
            raise UserError("--KERNELS fused: the fused CPU kernels are unavailable here (BERT4REC_FUSED=0, not on "
                            "CPU, or no C++ compiler); use --KERNELS auto or plain")
        return available

    @property
    def num_items(self) -> int:
        return items_in_vocab(int(self.config.vocab_size))

    def num_parameters(self) -> int:
        return sum(int(p.size) for p in self.parameters())

    def describe(self) -> str:
        """One line for the training log: size and compute path."""
        return f"{self.num_parameters():,} parameters"

    def training_batches(self, data: TrainingData, opts: TrainOptions) -> TrainingBatches:
        raise NotImplementedError

    def forward(self, batch: Any) -> paddle.Tensor:
        """Mean training loss of one batch from ``training_batches``."""
        raise NotImplementedError

    def score_histories(self, history: paddle.Tensor) -> paddle.Tensor:
        """[B, L] right-padded histories (0 = padding, at most ``max_history()`` items) -> [B, num_items + 1]
        scores of the next item. Plain Paddle ops when built with ``kernels="plain"``: the exported graph."""
        raise NotImplementedError

    def max_history(self) -> int:
        """How many of a history's last items the model reads."""
        return self.max_len

    def predict(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """[B, num_items + 1] scores of the next item after each history (column 0 unused): the scorer of the
        evaluation loop, of ``recommend.py`` and, through ``score_histories``, of the exported model."""
        keep = self.max_history()
        batch = pad_rows([np.asarray(h, dtype=np.int64)[-keep:] for h in histories], min_width=1)
        with paddle.no_grad():
            return self.score_histories(paddle.to_tensor(batch)).numpy()

    def score_every_position(self, sessions: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Scores of the next item at every position of every session (each from the events before it only),
        and the items that came: ([P, N + 1], [P]). This one predicts every prefix; models that see all
        positions in one pass (GRU4Rec) do it faster."""
        prefixes = [s[:t] for s in sessions for t in range(1, len(s))]
        targets = np.concatenate([s[1:] for s in sessions]).astype(np.int64)
        chunks = [self.predict(prefixes[i: i + 256]) for i in range(0, len(prefixes), 256)]
        return np.concatenate(chunks), targets

    def training_state(self) -> dict | None:
        """State carried from batch to batch while training (GRU4Rec's session-parallel hidden states); saved in
        every checkpoint so that a resumed run continues exactly."""
        return None

    def load_training_state(self, state: dict | None) -> None:
        """Restore what ``training_state`` returned."""

    def prepare(self, data: TrainingData) -> None:
        """Set up what comes from the training data rather than from gradient steps, before training (MostPop's
        counts, SASRecF's item features); it is part of the weights, so checkpoints carry it."""
