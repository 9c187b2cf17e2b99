"""CPU kernels compiled on first use (``bert4rec/csrc``), with a pure-Paddle fallback in the model.

Paddle's CPU elementwise kernels are single-threaded and make one memory pass per op, which dominates a
transformer training step on CPU (the matrix products are fine: MKL). These custom ops fuse each group of
elementwise work into one multi-threaded pass forward and one backward:

- ``fused_attention``: qkv bias + scores + padding (and optionally causal) mask + softmax + dropout + context,
  per (sequence, head) in cache-sized tiles, skipping padding entirely;
- ``bias_act`` (``bias_gelu``): act(x + b), the FFN input;
- ``bias_dropout_residual_layernorm``: LayerNorm(residual + dropout(x + b)), the end of each sub-layer;
- ``embedding_layernorm_dropout``: dropout(LayerNorm(item + position)), the input embeddings;
- ``bias_act_layernorm``: LayerNorm(act(x + b)), the output head transform;
- ``bias_softmax_cross_entropy``: per-row softmax cross-entropy of logits + output bias.

Dropout masks are a counter-based hash of (seed, sequence, position, column): the backward pass regenerates
them, and the seed is drawn from Paddle's RNG at each call (``paddle.seed``/``get_rng_state`` make runs
reproducible and resumable). Parameter gradients are reduced in a fixed order (bitwise reproducible).

The ops are built once per machine with Paddle's C++ extension tooling (gcc, ~1 min) into
``~/.cache/bert4rec/ops`` (``BERT4REC_OPS_DIR`` overrides) and reused afterwards. Set ``BERT4REC_FUSED=0`` to
use plain Paddle ops; a failed build prints one warning and falls back.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import hashlib
import os
import platform
import sys
import tempfile
import warnings
from pathlib import Path

import paddle

CSRC = Path(__file__).with_name("csrc")
ACTIVATIONS = {"gelu": 0, "gelu_exact": 1, "relu": 2, "swish": 3, "tanh": 4, "sigmoid": 5}  # hidden_act -> code
LAYER_NORM_EPS = 1e-12
_module = None
_failed = False
_allocator_configured = False


def _sources() -> list[Path]:
    return sorted(CSRC.glob("*.cc"))


def _build_dir() -> Path:
    root = os.environ.get("BERT4REC_OPS_DIR") or Path.home() / ".cache" / "bert4rec" / "ops"
    return Path(root)


def _build_name() -> str:
    """Name keyed by sources, Paddle version and CPU, so a changed source or machine rebuilds (-march=native)."""
    from bert4rec.cpu import _cpu_flags

    vendor, flags = _cpu_flags()
    key = hashlib.sha256()
    for path in sorted(CSRC.glob("*.cc")) + sorted(CSRC.glob("*.h")):
        key.update(path.name.encode())
        key.update(path.read_bytes())
    for part in (paddle.__version__.encode(), platform.machine().encode(), vendor.encode(),
                 " ".join(sorted(flags)).encode(), sys.version.encode(), " ".join(_openmp_ldflags()).encode()):
        key.update(part)
    return f"bert4rec_ops_{key.hexdigest()[:12]}"


def configure_allocator() -> bool:
    """Keep freed memory in the process instead of returning it to the OS (glibc only; returns True if set).

    Paddle's CPU allocator hands every tensor above glibc's mmap threshold (at most 32 MB) to a fresh
    ``mmap`` and ``munmap``s it when freed, so each large activation (the [N, vocab] logits, the FFN
    intermediate, the QKV projection...) is page-faulted and zeroed by the kernel again at every step:
    ~100 ms of system time per 140 MB on these machines. Disabling mmap for malloc (M_MMAP_MAX = 0) and heap
    trimming (M_TRIM_THRESHOLD) makes the heap reuse that memory. The price: the process keeps its peak
    heap size until it exits. ``BERT4REC_MALLOC_TUNING=0`` disables this.
    """
    global _allocator_configured
    if _allocator_configured or os.environ.get("BERT4REC_MALLOC_TUNING", "1") == "0":
        return _allocator_configured
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        ok = libc.mallopt(m_mmap_max, 0) == 1 and libc.mallopt(m_trim_threshold, 2**31 - 1) == 1
    except (OSError, AttributeError):
        return False
    _allocator_configured = ok
    return ok


def _openmp_ldflags() -> list[str]:
    """Link the kernels to the OpenMP runtime of Paddle's MKL (libiomp5) when Paddle ships one, else libgomp.

    One runtime means one thread pool: MKL's matrix products and these kernels then take turns on the same
    threads instead of two pools spinning against each other on the same cores (libiomp5 implements the
    GOMP entry points GCC emits; the kernels only use ones it has: no nonmonotonic schedules).
    """
    libs = Path(paddle.__file__).parent / "libs"
    if (libs / "libiomp5.so").is_file() and os.environ.get("BERT4REC_OPENMP", "iomp5") == "iomp5":
        return [f"-L{libs}", "-l:libiomp5.so", f"-Wl,-rpath,{libs}"]
    return ["-fopenmp"]


def verbose() -> bool:
    """Show Paddle's own messages (build output, INFO lines): ``--verbose`` / ``BERT4REC_VERBOSE=1``."""
    return os.environ.get("BERT4REC_VERBOSE", "0") == "1"


@contextlib.contextmanager
def _captured_output():
    """Send everything written to stdout/stderr, by Python or by child processes, to a temporary file; yields
    a function returning what was written (shown only when something fails or with ``--verbose``)."""
    if verbose():
        yield lambda: ""
        return
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield lambda: (sink.seek(0), sink.read().decode("utf-8", "replace"))[1]
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def _import_built(name: str, library: Path):
    """Register the ops of an already built library and return their Python module: no build subprocess, no
    compiler, whatever path the sources were built from (the name is keyed by their content)."""
    from paddle.utils.cpp_extension.extension_utils import (
        _generate_python_module,
        load_op_meta_info_and_register_op,
    )

    op_names = load_op_meta_info_and_register_op(str(library))
    return _generate_python_module(name, op_names, str(library.parent), verbose=False)


def _build(name: str, directory: Path):
    """Compile the kernels (~1 min, once per machine and source version) quietly; one line says so."""
    from paddle.utils.cpp_extension import load

    print("bert4rec: building the fused CPU kernels (once per machine and version, about a minute)...",
          file=sys.stderr, flush=True)
    with _captured_output() as output:
        try:
            return load(name=name, sources=[str(s) for s in _sources()], build_directory=str(directory),
                        extra_cxx_cflags=["-O3", "-march=native", "-fopenmp", "-fno-trapping-math"],
                        extra_ldflags=_openmp_ldflags(), verbose=False)
        except Exception as err:
            tail = " | ".join(line for line in output().strip().splitlines()[-3:])
            raise RuntimeError(f"{err}{'; ' + tail if tail else ''}") from None


def _load():
    global _module, _failed
    if _module is not None or _failed:
        return _module
    try:
        name = _build_name()
        directory = _build_dir() / name
        library = directory / name / f"{name}.so"
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # several processes (data-parallel ranks) build only once
            try:
                _module = _import_built(name, library) if library.is_file() else None
            except Exception:  # noqa: BLE001 - a stale or foreign library: build afresh below
                _module = None
            if _module is None:
                _module = _build(name, directory)
    except Exception as err:  # no compiler, unsupported platform...: the plain path still works
        _failed = True
        warnings.warn(f"bert4rec: fused CPU kernels unavailable ({type(err).__name__}: {err}); "
                      "using plain Paddle ops (slower)", stacklevel=2)
        return None
    configure_allocator()
    return _module


def kernels_available() -> bool:
    """True when the fused CPU kernels may be used (enabled, CPU device, and they build)."""
    if os.environ.get("BERT4REC_FUSED", "1") == "0" or not paddle.get_device().startswith("cpu"):
        return False
    return _load() is not None


fused_attention_available = kernels_available  # the name used before the other kernels existed

_ZERO_SEED: paddle.Tensor | None = None


def _seed(p: float) -> paddle.Tensor:
    """A fresh seed from Paddle's RNG when dropout is active, else a constant (the kernels ignore it)."""
    global _ZERO_SEED
    if p > 0.0:
        return paddle.randint(0, 2**31 - 1, [1], dtype="int64")
    if _ZERO_SEED is None:
        _ZERO_SEED = paddle.zeros([1], dtype="int64")
    return _ZERO_SEED


def _p(dropout: float, training: bool) -> float:
    return float(dropout) if training else 0.0


def fused_attention(qkv: paddle.Tensor, bias: paddle.Tensor, lengths: paddle.Tensor, num_heads: int,
                    dropout: float, training: bool, causal: bool = False) -> paddle.Tensor:
    """[B, L, 3H] projections (no bias) + [3H] bias + [B] real lengths -> [B, L, H] context (0 at padding).

    ``causal``: position i attends to positions <= i only (SASRec); otherwise to every real position (BERT4Rec).
    """
    p = _p(dropout, training)
    out, _lse = _load().bert4rec_fused_attention(qkv, bias, lengths, _seed(p), p, int(num_heads), bool(causal))
    return out


def bias_act(x: paddle.Tensor, bias: paddle.Tensor, act: str = "gelu") -> paddle.Tensor:
    """act(x + bias) over the last axis; act is a config ``hidden_act`` (gelu = tanh approximation)."""
    return _load().bert4rec_bias_act(x, bias, ACTIVATIONS[act])


def bias_gelu(x: paddle.Tensor, bias: paddle.Tensor) -> paddle.Tensor:
    """gelu_tanh(x + bias), BERT's activation."""
    return bias_act(x, bias, "gelu")


def bias_act_layernorm(x: paddle.Tensor, bias: paddle.Tensor, gamma: paddle.Tensor, beta: paddle.Tensor,
                       act: str = "gelu", eps: float = LAYER_NORM_EPS) -> paddle.Tensor:
    """LayerNorm(act(x + bias)) over the last axis."""
    y, _xhat, _rstd = _load().bert4rec_bias_act_layernorm(x, bias, gamma, beta, ACTIVATIONS[act], float(eps))
    return y


def bias_dropout_residual_layernorm(x: paddle.Tensor, bias: paddle.Tensor, residual: paddle.Tensor,
                                    gamma: paddle.Tensor, beta: paddle.Tensor, dropout: float, training: bool,
                                    eps: float = LAYER_NORM_EPS) -> paddle.Tensor:
    """LayerNorm(residual + dropout(x + bias)) for [B, L, H] inputs."""
    p = _p(dropout, training)
    y, _xhat, _rstd = _load().bert4rec_bias_dropout_residual_layernorm(x, bias, residual, gamma, beta, _seed(p),
                                                                       p, float(eps))
    return y


def embedding_layernorm_dropout(tok: paddle.Tensor, pos_table: paddle.Tensor, gamma: paddle.Tensor,
                                beta: paddle.Tensor, dropout: float, training: bool,
                                eps: float = LAYER_NORM_EPS) -> paddle.Tensor:
    """dropout(LayerNorm(tok + pos_table[:L])) for [B, L, H] item vectors and a [P >= L, H] position table."""
    p = _p(dropout, training)
    y, _xhat, _rstd = _load().bert4rec_embedding_layernorm_dropout(tok, pos_table, gamma, beta, _seed(p), p,
                                                                   float(eps))
    return y


def bias_softmax_cross_entropy(logits: paddle.Tensor, bias: paddle.Tensor, labels: paddle.Tensor) -> paddle.Tensor:
    """Per-row cross-entropy of softmax(logits + bias) [N, V] against int64 labels [N] -> [N] losses."""
    loss, _lse = _load().bert4rec_bias_softmax_cross_entropy(logits, bias, labels)
    return loss
