"""The models of the toolkit, all behind one contract (``bert4rec.models.base``), and the registry that maps a
config's ``"model"`` to its module. Adding a model = one module here + one JSON config in ``bert_train/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bert4rec.config import ModelConfig, canonical_key, model_name, read_config_json
from bert4rec.errors import UserError
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


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ModelConfig:
    """Read a JSON model config, with ``overrides`` (keys set by the run: ``trainrec.py --SET``, ``--MASKING``...)
    over its keys; every problem is a one-line UserError naming the file (and the override)."""
    raw = read_config_json(path)
    if not overrides:
        return config_from_dict(raw, str(path))
    model = model_name(raw, str(path), tuple(MODELS))
    for key in overrides:
        check_override(key, model, str(path))
    replaced = {canonical_key(k) for k in overrides}  # the file's key under any spelling gives way
    kept = {k: v for k, v in raw.items() if canonical_key(k) not in replaced}
    given = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
    return config_from_dict({**kept, **overrides}, f"{path} with {given}")


def check_override(key: str, model: str, path: str) -> None:
    """An override must name a key of the chosen model's config; a key another model reads says so."""
    name = canonical_key(key)
    if name == "model":
        raise UserError(f"{path}: the model is chosen by the config file, not by an override")
    if name in MODELS[model].config_class.keys():
        return
    owners = [other for other, cls in MODELS.items() if name in cls.config_class.keys()]
    where = f"a key of {', '.join(owners)}'s config, not of {model}'s" if owners else f"not a key of {model}'s config"
    known = ", ".join(sorted(MODELS[model].config_class.keys()))
    raise UserError(f"{path}: {key!r} is {where} (known: {known})")


def build_model(config: ModelConfig, kernels: str = "auto", max_len: int | None = None) -> SequentialRecommender:
    """A model for a config whose vocabulary size is resolved; ``max_len``: longest input it will be given."""
    model = MODELS[config.MODEL](config, kernels=kernels)
    if max_len is not None:
        model.max_len = max_len
    return model


__all__ = ["MODELS", "SequentialRecommender", "build_model", "config_from_dict", "load_config"]
