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

A model without gradient training (``trainable = False``, e.g. MostPop) sets itself up in ``fit(data)`` instead.
The trainer (``bert4rec.train``) is written once against this contract and never names a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import paddle
from paddle import nn

from bert4rec.batches import pad_rows
from bert4rec.config import ModelConfig
from bert4rec.data.files import items_in_vocab

if TYPE_CHECKING:
    from bert4rec.config import TrainOptions
    from bert4rec.data.dataset import TrainingData


class Examples(Protocol):
    """One epoch's training examples (windows, masked instances...)."""

    @property
    def lengths(self) -> np.ndarray: ...

    def __len__(self) -> int: ...


class TrainingBatches(Protocol):
    """How a model turns the training data into batches; every random choice comes from the ``rng`` given."""

    num_examples: int

    def examples(self, epoch: int) -> Examples: ...

    def collate(self, examples: Examples, idx: np.ndarray, rng: np.random.Generator) -> Any: ...


class SequentialRecommender(nn.Layer):
    """Base class of every model: holds the config and defines the contract (see the module docstring)."""

    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    trainable: ClassVar[bool] = True

    def __init__(self, config: ModelConfig, kernels: str = "auto") -> None:
        super().__init__()
        self.config = config
        self.kernels = kernels
        self.max_len = int(getattr(config, "max_position_embeddings", 200))  # the run's --MAX_LEN (trainer)

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

    def fit(self, data: TrainingData) -> None:
        """Set up a model that is not trained by gradient steps (``trainable = False``)."""
