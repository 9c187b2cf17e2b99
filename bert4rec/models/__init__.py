"""The models of the toolkit, all behind one contract (``bert4rec.models.base``), and the registry that maps a
config's ``"model"`` to its module. Adding a model = one module here + one JSON config in ``bert_train/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bert4rec.config import ModelConfig, model_name, read_config_json
from bert4rec.models.base import SequentialRecommender
from bert4rec.models.bert4rec import BERT4Rec
from bert4rec.models.gru4rec import GRU4Rec
from bert4rec.models.mostpop import MostPop
from bert4rec.models.sasrec import SASRec
from bert4rec.models.sasrecf import SASRecF

MODELS: dict[str, type[SequentialRecommender]] = {
    cls.config_class.MODEL: cls for cls in (BERT4Rec, SASRec, SASRecF, GRU4Rec, MostPop)}


def config_from_dict(raw: dict[str, Any], source: str = "config") -> ModelConfig:
    """The typed config of the model ``raw`` names (BERT4Rec when it names none)."""
    return MODELS[model_name(raw, source, tuple(MODELS))].config_class.from_dict(raw, source)


def load_config(path: str | Path) -> ModelConfig:
    """Read a JSON model config; every problem is a one-line UserError naming the file."""
    return config_from_dict(read_config_json(path), str(path))


def build_model(config: ModelConfig, kernels: str = "auto", max_len: int | None = None) -> SequentialRecommender:
    """A model for a config whose vocabulary size is resolved; ``max_len``: longest input it will be given."""
    model = MODELS[config.MODEL](config, kernels=kernels)
    if max_len is not None:
        model.max_len = max_len
    return model


__all__ = ["MODELS", "SequentialRecommender", "build_model", "config_from_dict", "load_config"]
