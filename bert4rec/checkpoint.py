"""One checkpoint format for every model: weights, optimizer, position in training, RNG state and config.

A checkpoint is a single ``paddle.save`` pickle written atomically (temp file + rename), so an interrupted
save never corrupts the previous one. Resuming from it continues the run exactly where it stopped: the same
next batch, the same learning rate, the same dropout randomness.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bert4rec.cpu import import_paddle
from bert4rec.errors import UserError
from bert4rec.fileio import atomic_path

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
