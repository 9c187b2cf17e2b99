"""CPU kernels compiled on first use (``bert4rec/csrc``), with a pure-Paddle fallback.

``fused_attention`` replaces score matmul + mask add + softmax + dropout + value matmul by one multi-threaded
pass that skips padding (see the C++ file for why). It is built once per machine with Paddle's C++ extension
tooling (gcc, ~25 s) into ``~/.cache/bert4rec/ops`` (``BERT4REC_OPS_DIR`` overrides) and reused afterwards.
Set ``BERT4REC_FUSED=0`` to use the plain Paddle ops; a failed build prints one warning and falls back.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import platform
import sys
import warnings
from pathlib import Path

import paddle

SOURCE = Path(__file__).with_name("csrc") / "fused_attention.cc"
_module = None
_failed = False


def _build_dir() -> Path:
    root = os.environ.get("BERT4REC_OPS_DIR") or Path.home() / ".cache" / "bert4rec" / "ops"
    return Path(root)


def _build_name() -> str:
    """Name keyed by source, Paddle version and CPU, so a changed source or machine rebuilds (-march=native)."""
    from bert4rec.cpu import _cpu_flags

    vendor, flags = _cpu_flags()
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), paddle.__version__.encode(), platform.machine().encode(),
                 vendor.encode(), " ".join(sorted(flags)).encode(), sys.version.encode()):
        key.update(part)
    return f"bert4rec_ops_{key.hexdigest()[:12]}"


def _load():
    global _module, _failed
    if _module is not None or _failed:
        return _module
    try:
        from paddle.utils.cpp_extension import load

        name = _build_name()
        directory = _build_dir() / name
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / ".lock", "w") as lock, contextlib.redirect_stdout(sys.stderr):
            fcntl.flock(lock, fcntl.LOCK_EX)  # several processes (data-parallel ranks) build only once
            _module = load(name=name, sources=[str(SOURCE)], build_directory=str(directory),
                           extra_cxx_cflags=["-O3", "-march=native", "-fopenmp"],
                           extra_ldflags=["-fopenmp"], verbose=False)
    except Exception as err:  # no compiler, unsupported platform...: the plain path still works
        _failed = True
        warnings.warn(f"bert4rec: fused CPU attention unavailable ({type(err).__name__}: {err}); "
                      "using plain Paddle ops (slower)", stacklevel=2)
    return _module


def fused_attention_available() -> bool:
    """True when the fused kernel may be used (enabled, CPU device, and it builds)."""
    if os.environ.get("BERT4REC_FUSED", "1") == "0" or not paddle.get_device().startswith("cpu"):
        return False
    return _load() is not None


def fused_attention(qkv: paddle.Tensor, lengths: paddle.Tensor, num_heads: int, dropout: float,
                    training: bool) -> paddle.Tensor:
    """[B, L, 3H] fused projections + [B] real lengths -> [B, L, H] attention context (zeros at padding)."""
    p = float(dropout) if training else 0.0
    if p > 0.0:
        seed = paddle.randint(0, 2**31 - 1, [1], dtype="int64")  # from Paddle's RNG: reproducible, resumable
    else:
        seed = paddle.zeros([1], dtype="int64")
    out, _probs = _load().bert4rec_fused_attention(qkv, lengths, seed, p, int(num_heads))
    return out
