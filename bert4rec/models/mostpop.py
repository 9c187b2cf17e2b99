"""MostPop: the floor of every comparison table. Every user gets the same scores: how often each item occurs in
the training part (the histories before the first held-out item; never a validation or test target)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import paddle

from bert4rec.config import ModelConfig
from bert4rec.data.dataset import TrainingData
from bert4rec.models.base import SequentialRecommender


@dataclass(frozen=True)
class MostPopConfig(ModelConfig):
    MODEL: ClassVar[str] = "MostPop"


class MostPop(SequentialRecommender):
    config_class = MostPopConfig
    trainable = False

    def __init__(self, config: MostPopConfig, kernels: str = "auto") -> None:
        super().__init__(config, kernels)
        self.register_buffer("item_counts", paddle.zeros([self.num_items + 1], dtype="float32"))

    def describe(self) -> str:
        return "training-part item counts, no parameters"

    def prepare(self, data: TrainingData) -> None:
        self.item_counts.set_value(data.training_item_counts().astype(np.float32))

    def score_histories(self, history: paddle.Tensor) -> paddle.Tensor:
        return paddle.zeros_like(history[:, :1], dtype="float32") + self.item_counts.unsqueeze(0)
