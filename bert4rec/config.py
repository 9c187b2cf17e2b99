"""Typed configuration: a model's config (``ModelConfig``, from the JSON files in ``bert_train/``) and a training
run (``TrainOptions``, whose defaults are the measured 1-hour ML-1M recipe; ``trainrec.py`` reads them from here).
``TrainOptions`` holds only what every model's training shares; what one model alone reads (BERT4Rec's masking)
is a key of that model's config, which a run can set over the JSON file (``config_overrides``).

A JSON config names its model (``"model": "SASRec"``; without the key it is BERT4Rec, so every config of the
original release loads unchanged). Keys follow the original BERT4Rec configs for every model (``hidden_size``,
``num_hidden_layers``, ``num_attention_heads``, ``intermediate_size``, ``hidden_dropout_prob``,
``attention_probs_dropout_prob``, ...); RecBole's names are accepted as aliases (``n_layers``, ``n_heads``,
``inner_size``, ``attn_dropout_prob``, ``loss_type``, ...) so RecBole users' configs and tuning files work.
``"vocab_size": "auto"`` (the default) takes the vocabulary size from the generated ``vocab.txt``; a number is
checked against it. Unknown keys, missing keys and out-of-range values are rejected with one line naming the file
and key. Each model module defines its config as a frozen dataclass derived from ``ModelConfig``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from bert4rec.errors import UserError

DEFAULT_MODEL = "BERT4Rec"
AUTO = "auto"
# RecBole's config names -> ours (one vocabulary for every model)
ALIASES = {
    "n_layers": "num_hidden_layers",
    "n_heads": "num_attention_heads",
    "inner_size": "intermediate_size",
    "attn_dropout_prob": "attention_probs_dropout_prob",
    "loss_type": "loss",
    "MAX_ITEM_LIST_LENGTH": "max_position_embeddings",
    "train_neg_sample_num": "num_negatives",
}
MAX_CONFIG_BYTES = 1 << 20


def canonical_key(key: str) -> str:
    """Our name of a config key given under any spelling (RecBole's aliases)."""
    return ALIASES.get(key, key)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class ModelConfig:
    """What every model config has: its model name (class-level) and the vocabulary size."""

    MODEL: ClassVar[str] = ""
    REQUIRED: ClassVar[tuple[str, ...]] = ()  # keys a JSON config must give although they have defaults
    IGNORED: ClassVar[tuple[str, ...]] = ()   # keys accepted and dropped (e.g. BERT's type_vocab_size)
    LOWERCASE: ClassVar[tuple[str, ...]] = ()  # string values compared case-insensitively (RecBole: "CE")

    vocab_size: int | str = AUTO

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise ValueError(problem)

    # --- validation helpers for subclasses: each returns ``key: reason`` or None
    def _positive_ints(self, *keys: str) -> str | None:
        for key in keys:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                return f"{key}: must be a positive integer, got {value!r}"
        return None

    def _fractions(self, *keys: str) -> str | None:
        for key in keys:
            value = getattr(self, key)
            if not _is_number(value) or not 0.0 <= value < 1.0:
                return f"{key}: must be a number in [0, 1), got {value!r}"
        return None

    def _share(self, key: str, zero: bool) -> str | None:
        """A share in [0, 1] (``zero``: 0 allowed) or (0, 1]."""
        value = getattr(self, key)
        if not _is_number(value) or not (0 <= value <= 1 if zero else 0 < value <= 1):
            return f"{key}: must be a number in {'[0, 1]' if zero else '(0, 1]'}, got {value!r}"
        return None

    def _positive_numbers(self, *keys: str) -> str | None:
        for key in keys:
            value = getattr(self, key)
            if not _is_number(value) or not value > 0:
                return f"{key}: must be a positive number, got {value!r}"
        return None

    def _choice(self, key: str, options: tuple[str, ...]) -> str | None:
        value = getattr(self, key)
        if value not in options:
            return f"{key}: must be one of {', '.join(options)}, got {value!r}"
        return None

    def problem(self) -> str | None:
        """The first thing wrong with this config, as ``key: reason``, or None."""
        if self.vocab_size == AUTO:
            return None
        if isinstance(self.vocab_size, bool) or not isinstance(self.vocab_size, int) or self.vocab_size < 3:
            return f"vocab_size: must be \"auto\" or an integer >= 3 ([PAD], one item, [MASK]), got {self.vocab_size!r}"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.MODEL, **asdict(self)}

    @classmethod
    def keys(cls) -> set[str]:
        """The keys a config of this model has (besides ``model``)."""
        return {f.name for f in fields(cls)}

    def training_files(self, opts: TrainOptions, sessions: bool) -> list[tuple[str, Path]]:
        """(flag, path) of the files this model trains on beyond the shared ones (checked before any work)."""
        return []

    def with_data(self, data: Any, source: str, vocab_path: str) -> ModelConfig:
        """This config completed from the training data (``TrainingData``): the vocabulary size, and whatever
        else a model takes from the data (SASRecF: the vocabularies of an item table's features)."""
        return self.with_vocab(data.vocab.size, source, vocab_path)

    def with_vocab(self, size: int, source: str, vocab_path: str) -> ModelConfig:
        """This config with ``vocab_size`` resolved from the data (``auto``) or checked against it."""
        if self.vocab_size == AUTO:
            return dataclasses.replace(self, vocab_size=size)
        if self.vocab_size != size:
            raise UserError(f"{source}: vocab_size is {self.vocab_size} but {vocab_path} has {size} tokens; "
                            f"set \"vocab_size\": {size} or \"auto\"")
        return self

    def check_run(self, max_len: int, source: str) -> None:
        """Raise ``UserError`` when the run's ``--MAX_LEN`` cannot work with this config (default: anything goes)."""

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> ModelConfig:
        """Build a config from a JSON object (``model`` key already checked), rejecting unknown/missing keys and
        bad values with a UserError naming ``source`` and the key."""
        names = cls.keys()
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if key == "model" or key in cls.IGNORED:
                continue
            name = canonical_key(key)
            if name not in names:
                known = ", ".join(sorted(names | {"model"}))
                raise UserError(f"{source}: unknown key {key!r} for {cls.MODEL} (known: {known})")
            if name in values:
                raise UserError(f"{source}: {key!r} and another spelling of {name!r} are both given")
            values[name] = value.lower() if name in cls.LOWERCASE and isinstance(value, str) else value
        missing = [key for key in cls.REQUIRED if key not in values]
        if missing:
            raise UserError(f"{source}: missing key {missing[0]!r}")
        try:
            return cls(**values)
        except ValueError as err:
            raise UserError(f"{source}: {err}") from None


def read_config_json(path: str | Path) -> dict[str, Any]:
    """A JSON object from a config file; every problem is a one-line UserError naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected a JSON config file") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read config ({err.strerror})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise UserError(f"{path}: {len(data):,} bytes is too large for a config file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x}); save the config as UTF-8") \
            from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
    except RecursionError:
        raise UserError(f"{path}: JSON nested too deeply for a config") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    return raw


def model_name(raw: dict[str, Any], source: str, known: tuple[str, ...]) -> str:
    """The model a config names (``BERT4Rec`` when it names none)."""
    name = raw.get("model", DEFAULT_MODEL)
    if name not in known:
        raise UserError(f"{source}: model must be one of {', '.join(known)}, got {name!r}")
    return name


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
    bucket: bool = True
    clip_norm: float = 5.0             # 0: no clipping
    lr_schedule: str = "linear"        # linear decay to 0 after the warmup, constant, or budget (to max_minutes)
    max_minutes: float | None = None
    kernels: str = "auto"              # fused CPU kernels (auto/fused) or plain Paddle ops
    progress: bool = True
    stop_at_step: int | None = None   # behave as if interrupted after this step (tests resume)
    # model config keys set over the JSON of ``config_path`` (``trainrec.py --SET key=value``, BERT4Rec's
    # ``--MASKING``...): what only one model reads lives in that model's config, never here
    config_overrides: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_data(cls, data_dir: Path, config_path: Path, checkpoints: Path, **options: Any) -> TrainOptions:
        """Options reading the generated files of ``data_dir`` (leave-one-out or session data; without
        validation when the data has none); ``options`` are the other fields (a name that is none is an error)."""

        unknown = sorted(set(options) - {f.name for f in fields(cls)})
        if unknown:
            raise UserError(f"unknown training option {unknown[0]!r} (options: "
                            f"{', '.join(f.name for f in fields(cls) if f.name not in DATA_FIELDS)})")
        return cls(config_path=Path(config_path), checkpoints=Path(checkpoints), **{**data_paths(data_dir), **options})

    def to_json(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}

    def resume_options(self) -> dict[str, Any]:
        """The options a checkpoint records: resuming with other values would not continue the same run."""
        return {name: getattr(self, name) for name in RESUME_OPTIONS}


DATA_FIELDS = ("config_path", "checkpoints", "train_path", "valid_path", "test_path", "vocab_path")


def data_paths(data_dir: Path) -> dict[str, Path | None]:
    """The data fields of ``TrainOptions`` for a folder written by the generator: session files when it holds
    ``--split date`` data, no validation file when it was made with ``--holdout test``."""
    data_dir = Path(data_dir)
    sessions = (data_dir / "train_sessions.txt").exists()
    names = ("train_sessions.txt", "valid_sessions.txt", "test_sessions.txt") if sessions else \
        ("train.txt", "valid.txt", "test.txt")
    valid: Path | None = data_dir / names[1]
    if not valid.exists() and (data_dir / names[0]).exists():
        valid = None
    return {"train_path": data_dir / names[0], "valid_path": valid, "test_path": data_dir / names[2],
            "vocab_path": data_dir / "vocab.txt"}


# trainrec.py's flag for each TrainOptions field (messages name flags, not fields)
FLAGS = {
    "config_path": "--CONFIG_PATH", "checkpoints": "--CHECKPOINTS", "batch_size": "--BATCH_SIZE", "lr": "--LR_RATE",
    "warmup_steps": "--WARMUP_STEPS", "weight_decay": "--WEIGHT_DECAY", "max_len": "--MAX_LEN",
    "num_train_steps": "--NUM_TRAIN_STEPS", "epochs": "--EPOCHS", "seed": "--SEED",
    "bucket": "--no-bucket", "clip_norm": "--CLIP_NORM", "lr_schedule": "--LR_SCHEDULE",
}
# what a resumed run must share with the run it continues (the budget in minutes, validation frequency,
# patience and the compute path may change)
RESUME_OPTIONS = ("batch_size", "lr", "warmup_steps", "weight_decay", "max_len", "num_train_steps", "epochs",
                  "seed", "bucket", "clip_norm", "lr_schedule")
