"""One checkpoint format for every model: weights, optimizer, position in training, RNG state and config.

A checkpoint is a single ``paddle.save`` pickle written atomically (temp file + rename), so an interrupted
save never corrupts the previous one. Resuming from it continues the run exactly where it stopped: the same
next batch, the same learning rate, the same dropout randomness; ``resume`` refuses a checkpoint of another
config, other training flags or other data, and carries the weights chosen so far on validation.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bert4rec.config import FLAGS
from bert4rec.cpu import import_paddle
from bert4rec.errors import UserError
from bert4rec.fileio import atomic_path, file_digest

if TYPE_CHECKING:
    from bert4rec.config import ModelConfig, TrainOptions

# the first module of ``bert4rec.trained`` (and of the trainer) to need Paddle: import it without its start-up noise
paddle = import_paddle()

FORMAT_VERSION = 1


def _rename_keys(state: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    """Rename optimizer-state keys ``<param name>_<accumulator>`` by the given parameter-name mapping."""
    prefixes = sorted(mapping, key=len, reverse=True)
    out = {}
    for key, value in state.items():
        for old in prefixes:
            if key.startswith(old + "_"):
                key = mapping[old] + key[len(old):]
                break
        out[key] = value
    return out


def _optimizer_state(model, optimizer) -> dict[str, Any]:
    """Optimizer state keyed by structured parameter names: Paddle's own names (``linear_3.w_0``) depend on
    how many layers the process created before, so they differ between the saving and the resuming run."""
    return _rename_keys(optimizer.state_dict(), {p.name: f"@{n}" for n, p in model.named_parameters()})


def save_checkpoint(path: str | Path, model, optimizer, state: dict[str, Any], config: dict[str, Any],
                    options: dict[str, Any] | None = None) -> None:
    """Write model + optimizer + trainer ``state`` (step, epoch, ...) + model ``config`` + the run's training
    ``options`` atomically."""
    payload = {
        "format_version": FORMAT_VERSION,
        "model": model.state_dict(),
        "optimizer": _optimizer_state(model, optimizer) if optimizer is not None else None,
        "rng": paddle.get_rng_state(),
        "state": state,
        "config": config,
        "options": options,
    }
    with atomic_path(path) as tmp:
        paddle.save(payload, str(tmp))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint``; bad or missing files are a UserError."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pdparams"
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        payload = paddle.load(str(path))
    except Exception as err:  # paddle raises many types for a corrupt file
        raise UserError(f"{path}: not a readable checkpoint ({type(err).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path}: not a bert4rec checkpoint (format version {FORMAT_VERSION} expected)")
    return payload


def restore(payload: dict[str, Any], model, optimizer=None, rng: bool = True) -> dict[str, Any]:
    """Load weights (and optimizer/RNG state when given) from a checkpoint payload; returns trainer state."""
    model.set_state_dict(payload["model"])
    if optimizer is not None and payload.get("optimizer") is not None:
        mapping = {f"@{n}": p.name for n, p in model.named_parameters()}
        optimizer.set_state_dict(_rename_keys(payload["optimizer"], mapping))
    if rng and payload.get("rng") is not None:
        paddle.set_rng_state(payload["rng"])
    return payload["state"]


def data_fingerprint(opts: TrainOptions) -> str:
    """What a resumed run must share with the run it continues besides the flags: the data (vocabulary and
    evaluation files, whose histories are every user's whole sequence)."""
    digest = hashlib.sha256()
    for path in (opts.vocab_path, opts.test_path, opts.valid_path):
        if path is not None and Path(path).is_file():
            digest.update(file_digest(Path(path), "sha256").encode())
    return digest.hexdigest()


def carry_best_weights(opts: TrainOptions, best_step: int) -> None:
    """The weights chosen on validation so far must be in the run folder when a run resumes: taken from next to
    ``--INIT_CHECKPOINT`` when it lives in another folder, else the resume is refused (the run would end by
    testing weights nobody selected)."""
    if best_step <= 0:
        return
    here = opts.checkpoints / "best.pdparams"
    for candidate in (here, Path(opts.init_checkpoint).parent / "best.pdparams"):
        if candidate.is_file() and load_checkpoint(candidate)["state"].get("step") == best_step:
            if candidate != here:
                shutil.copyfile(candidate, here)
            return
    raise UserError(f"{opts.init_checkpoint}: the run's best weights (step {best_step}) are neither in "
                    f"{here} nor next to the checkpoint; resume in the run folder that holds its best.pdparams")


def resume(opts: TrainOptions, model, optimizer, config: ModelConfig, data_id: str) -> dict[str, Any]:
    """The trainer state of ``--INIT_CHECKPOINT``, its weights and optimizer state loaded into ``model``; the
    checkpoint must come from the same model config, the same training flags and the same data."""
    from bert4rec.models import config_from_dict

    payload = load_checkpoint(opts.init_checkpoint)
    if (payload.get("options") or {}).get("data", data_id) != data_id:
        raise UserError(f"{opts.init_checkpoint}: the run was trained on other data than {opts.vocab_path.parent} "
                        "(its vocabulary or evaluation files differ); resume on the data it started with")
    recorded_config = config_from_dict(payload["config"], str(opts.init_checkpoint))
    if recorded_config != config:
        theirs, ours = recorded_config.to_dict(), config.to_dict()
        changed = ", ".join(f"{k} {theirs.get(k)!r}, not {ours.get(k)!r}" for k in ours if theirs.get(k) != ours[k])
        raise UserError(f"{opts.init_checkpoint}: checkpoint was trained with a different model config than "
                        f"{opts.config_path} ({changed})")
    recorded = payload.get("options") or {}
    for name, value in opts.resume_options().items():
        if name in recorded and recorded[name] != value:
            raise UserError(f"{opts.init_checkpoint}: the run was started with {FLAGS[name]} {recorded[name]}, "
                            f"not {value}; resume with the same flags, or start a new run in another --CHECKPOINTS")
    state = restore(payload, model, optimizer)
    carry_best_weights(opts, state.get("best_step", 0))
    return state
