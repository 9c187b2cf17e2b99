"""The search space of a ``hyper.test`` file (RecBole's grammar, so RecBole users' files work unchanged).

One parameter per line, ``name type values``:

* ``choice [...]``: a Python literal list (``choice [0.001, 0.0005]``, ``choice ['gelu', 'relu']``);
* ``uniform low,high``: a float drawn uniformly from [low, high];
* ``loguniform low,high``: ``exp(uniform(low, high))`` (RecBole's meaning: the bounds are natural logarithms);
* ``quniform low,high,q``: ``round(uniform(low, high) / q) * q``.

Blank lines and ``#`` comments are skipped. A name is a model-config key (ours or RecBole's alias: ``n_layers``,
``hidden_dropout_prob`` ...) or a training flag (``learning_rate``/``LR_RATE``, ``BATCH_SIZE``/``train_batch_size``,
``WEIGHT_DECAY``, ...). Every problem is one ``error:`` line with the file and line number.
"""

from __future__ import annotations

import ast
import itertools
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from bert4rec.config import FLAGS, ModelConfig, TrainOptions, canonical_key
from bert4rec.errors import UserError

TYPES = ("choice", "uniform", "loguniform", "quniform")
# RecBole's training-option names -> ours
TRAIN_ALIASES = {"learning_rate": "lr", "train_batch_size": "batch_size", "epochs": "epochs"}
NOT_TUNABLE = ("config_path", "train_path", "valid_path", "test_path", "vocab_path", "checkpoints",
               "init_checkpoint", "device", "progress", "stop_at_step", "config_overrides")


@dataclass
class Param:
    name: str          # as written in the file
    target: str        # "config" or "train"
    key: str           # the config key or TrainOptions field it sets
    kind: str          # choice / uniform / loguniform / quniform
    choices: list[Any] = field(default_factory=list)
    low: float = 0.0
    high: float = 0.0
    q: float = 1.0
    line: int = 0


def train_option_names() -> dict[str, str]:
    """Every spelling of a tunable training flag -> its TrainOptions field."""
    names = {f.name: f.name for f in fields(TrainOptions) if f.name not in NOT_TUNABLE}
    names.update({flag.lstrip("-").lower(): key for key, flag in FLAGS.items() if key in names})
    names.update({alias: key for alias, key in TRAIN_ALIASES.items() if key in names})
    return names


def resolve_name(name: str, config_class: type[ModelConfig]) -> tuple[str, str] | None:
    """("config", key) or ("train", field) for a parameter name, or None when nothing has that name."""
    config_keys = config_class.keys() - {"vocab_size"}
    key = canonical_key(name)
    if key in config_keys:
        return "config", key
    train = train_option_names()
    for spelling in (name, name.lower()):
        if spelling in train:
            return "train", train[spelling]
    return None


def _numbers(text: str, count: int, where: str, kind: str) -> list[float]:
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != count or not all(math.isfinite(v) for v in values):
        shape = "low,high" if count == 2 else "low,high,q"
        raise UserError(f"{where}: {kind} needs {shape} (numbers), got {text!r}")
    return values


def parse_line(text: str, where: str, line: int, config_class: type[ModelConfig]) -> Param:
    parts = text.split(None, 2)
    if len(parts) != 3:
        raise UserError(f"{where}: expected 'name type values', got {text.strip()!r}")
    name, kind, values = parts
    if kind not in TYPES:
        raise UserError(f"{where}: unknown type {kind!r} (one of {', '.join(TYPES)})")
    resolved = resolve_name(name, config_class)
    if resolved is None:
        raise UserError(f"{where}: {name!r} is neither a key of the {config_class.MODEL} config nor a training "
                        "flag")
    param = Param(name, resolved[0], resolved[1], kind, line=line)
    if kind == "choice":
        try:
            choices = ast.literal_eval(values.strip())
        except (ValueError, SyntaxError):
            raise UserError(f"{where}: choice needs a Python list such as [0.001, 0.01], got {values.strip()!r}") \
                from None
        if not isinstance(choices, list) or not choices:
            raise UserError(f"{where}: choice needs a non-empty list, got {values.strip()!r}")
        param.choices = choices
    elif kind == "quniform":
        param.low, param.high, param.q = _numbers(values, 3, where, kind)
        if param.q <= 0:
            raise UserError(f"{where}: quniform's q must be > 0")
    else:
        param.low, param.high = _numbers(values, 2, where, kind)
    if kind != "choice" and param.low >= param.high:
        raise UserError(f"{where}: {kind} needs low < high, got {param.low}, {param.high}")
    return param


def parse_space(path: Path, config_class: type[ModelConfig]) -> list[Param]:
    """Every parameter of a ``hyper.test`` file; a bad line is a UserError naming file and line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"--params_file {path}: file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"--params_file {path}: cannot read ({err})") from None
    params: list[Param] = []
    seen: dict[tuple[str, str], int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        param = parse_line(line, f"{path}:{number}", number, config_class)
        if (param.target, param.key) in seen:
            raise UserError(f"{path}:{number}: {param.name!r} sets the same thing as line "
                            f"{seen[(param.target, param.key)]}")
        seen[(param.target, param.key)] = number
        params.append(param)
    if not params:
        raise UserError(f"--params_file {path}: no parameters in it")
    return params


def grid(params: list[Param], where: str) -> list[dict[str, Any]]:
    """Every combination of the choices (exhaustive search accepts ``choice`` only)."""
    for p in params:
        if p.kind != "choice":
            raise UserError(f"{where}:{p.line}: --algo exhaustive accepts only choice, not {p.kind} ({p.name})")
    return [dict(zip([p.name for p in params], combo, strict=True))
            for combo in itertools.product(*(p.choices for p in params))]


def quantize(value: float, q: float) -> float:
    return round(round(value / q) * q, 12)


def coerce(value: Any, like: Any) -> Any:
    """A sampled number as the type of the setting's default: 2.0 -> 2 where an integer is expected."""
    if isinstance(like, int) and not isinstance(like, bool) and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def split_values(params: list[Param], values: dict[str, Any], config: ModelConfig, opts: TrainOptions
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """A trial's values as (config overrides by key, training-option overrides by field), typed like the
    settings they replace."""
    config_values, train_values = {}, {}
    for p in params:
        if p.target == "config":
            config_values[p.key] = coerce(values[p.name], getattr(config, p.key))
        else:
            default = getattr(opts, p.key)
            like = default if default is not None else (1 if p.key == "num_train_steps" else 1.0)
            train_values[p.key] = coerce(values[p.name], like)
    return config_values, train_values


def format_params(values: dict[str, Any]) -> str:
    """RecBole's parameter line: ``name:value, name:value``."""
    return ", ".join(f"{k}:{v}" for k, v in values.items())


def checked_overrides(config: ModelConfig, config_values: dict[str, Any], source: str) -> ModelConfig:
    """The base config with a trial's overrides, validated (a bad combination is a UserError)."""
    raw = {**config.to_dict(), **config_values}
    from bert4rec.models import config_from_dict

    return config_from_dict(raw, source)
