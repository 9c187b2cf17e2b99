"""Typed configuration: the model (``BertConfig``, from the JSON files in ``bert_train/``) and a training run
(``TrainOptions``, whose defaults are the measured 1-hour ML-1M recipe; ``trainrec.py`` reads them from here).

The JSON keys are those of the original BERT4Rec ``bert_config_*.json`` files, so a config from the original
release loads unchanged (``type_vocab_size`` is accepted and ignored: BERT4Rec has no segments). Unknown keys,
missing keys and out-of-range values are rejected with one line naming the file and key.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bert4rec.errors import UserError

ACTIVATIONS = ("gelu", "gelu_exact", "relu")
IGNORED_KEYS = ("type_vocab_size",)


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.2
    attention_probs_dropout_prob: float = 0.2
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise ValueError(problem)

    def problem(self) -> str | None:
        """The first thing wrong with this config, as ``key: reason``, or None."""
        for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size", "max_position_embeddings"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                return f"{key}: must be a positive integer, got {value!r}"
        if self.vocab_size < 3:
            return f"vocab_size: must be at least 3 ([PAD], one item, [MASK]), got {self.vocab_size}"
        if self.max_position_embeddings < 2:
            return f"max_position_embeddings: must be at least 2, got {self.max_position_embeddings}"
        if self.hidden_size % self.num_attention_heads:
            return (f"hidden_size: {self.hidden_size} is not divisible by num_attention_heads "
                    f"{self.num_attention_heads}")
        if self.hidden_act not in ACTIVATIONS:
            return f"hidden_act: must be one of {', '.join(ACTIVATIONS)}, got {self.hidden_act!r}"
        for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
                return f"{key}: must be a number in [0, 1), got {value!r}"
        value = self.initializer_range
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            return f"initializer_range: must be a positive number, got {value!r}"
        return None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> BertConfig:
        """Build a config from a dict, rejecting unknown/missing keys and bad values (UserError)."""
        if not isinstance(raw, dict):
            raise UserError(f"{source}: expected a JSON object, got {type(raw).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - set(fields) - set(IGNORED_KEYS))
        if unknown:
            raise UserError(f"{source}: unknown key {unknown[0]!r} (known: {', '.join(sorted(fields))})")
        required = [n for n, f in fields.items() if f.default is dataclasses.MISSING]
        missing = [n for n in required if n not in raw]
        if missing:
            raise UserError(f"{source}: missing key {missing[0]!r}")
        values = {k: v for k, v in raw.items() if k in fields}
        try:
            return cls(**values)
        except ValueError as err:
            raise UserError(f"{source}: {err}") from None


def load_config(path: str | Path) -> BertConfig:
    """Read a JSON model config; every problem is a one-line UserError naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read config ({err.strerror})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
    return BertConfig.from_dict(raw, source=str(path))


DEFAULT_TRAIN_STEPS = 12000  # the measured ML-1M recipe (README): under an hour on 2 CPU cores


@dataclass
class TrainOptions:
    """Everything a run depends on; recorded in checkpoints and results.json."""

    config_path: Path
    train_path: Path
    valid_path: Path | None
    test_path: Path
    vocab_path: Path
    checkpoints: Path
    batch_size: int = 128             # the measured 1-hour ML-1M recipe (README "Results", bench/recipe.md)
    lr: float = 2e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    max_len: int = 200
    num_train_steps: int | None = None
    epochs: float | None = None
    init_checkpoint: Path | None = None
    seed: int = 42
    device: str = "cpu"
    eval_every: int = 500
    patience: int = 10
    eval_batch_size: int = 256
    masking: str = "dynamic"          # dynamic: re-mask windows every epoch; fixed: the instances in train.txt
    masked_lm_prob: float = 0.2       # dynamic masking only
    max_predictions: int = 40         # dynamic masking only
    mask_last_prob: float = 0.5       # dynamic masking only: chance a window's last item is always masked
    bucket: bool = True
    clip_norm: float = 5.0
    max_minutes: float | None = None
    kernels: str = "auto"              # fused CPU kernels (auto/fused) or plain Paddle ops
    progress: bool = True
    stop_at_step: int | None = None   # behave as if interrupted after this step (tests resume)

    def to_json(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
