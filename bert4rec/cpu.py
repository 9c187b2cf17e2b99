"""CPU settings that must be applied before Paddle is imported.

Measured on these 2-core AMD EPYC machines (Paddle 3.3.1, 2048x2048 fp32 matmul):
- Paddle's bundled MKL picks a slow generic code path on AMD CPUs; ``MKL_DEBUG_CPU_TYPE=5`` makes it use its
  AVX2 kernels (Zen 3: 19 -> 77 GFLOP/s on one thread). Safe wherever the CPU really has AVX2.
- Paddle runs its CPU math on one thread unless told otherwise; ``OMP_NUM_THREADS`` = usable cores roughly
  doubles matmul throughput on 2 cores (77 -> 142 GFLOP/s).

Both are only defaults: a value the user already set is never overridden, and ``BERT4REC_CPU_TUNING=0``
switches this module off entirely.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings


def _cpu_flags() -> tuple[str, set[str]]:
    """Vendor id and feature flags of the first CPU (Linux only; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            text = f.read(65536)
    except OSError:
        return "", set()
    vendor, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "vendor_id" and not vendor:
            vendor = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
        if vendor and flags:
            break
    return vendor, flags


def usable_cores() -> int:
    """Cores this process may run on (respects taskset/cgroup affinity)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def configure_cpu_environment() -> dict[str, str]:
    """Set MKL/OpenMP defaults for fast CPU training; returns what was set. No-op once Paddle is loaded."""
    if os.environ.get("BERT4REC_CPU_TUNING", "1") == "0" or "paddle" in sys.modules:
        return {}
    applied: dict[str, str] = {}
    vendor, flags = _cpu_flags()
    if vendor == "AuthenticAMD" and "avx2" in flags and "MKL_DEBUG_CPU_TYPE" not in os.environ:
        applied["MKL_DEBUG_CPU_TYPE"] = "5"
    if "OMP_NUM_THREADS" not in os.environ:
        # several data-parallel processes on one machine share its cores
        local_procs = int(os.environ.get("PADDLE_LOCAL_SIZE", "1") or 1)
        applied["OMP_NUM_THREADS"] = str(max(1, usable_cores() // max(1, local_procs)))
    os.environ.update(applied)
    return applied


def import_paddle(verbose: bool | None = None):
    """Import Paddle without its start-up noise (the "OMP_NUM_THREADS ... WISELY" lines and the ccache warning)
    unless ``verbose`` (default: ``BERT4REC_VERBOSE=1``); what it printed is shown if the import fails."""
    if verbose is None:
        verbose = os.environ.get("BERT4REC_VERBOSE", "0") == "1"
    if verbose or "paddle" in sys.modules:
        import paddle

        return paddle
    os.environ.setdefault("GLOG_minloglevel", "2")  # Paddle's C++ INFO/WARNING lines (e.g. while exporting)
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stderr(buffer), contextlib.redirect_stdout(buffer), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import paddle
    except BaseException:
        sys.stderr.write(buffer.getvalue())
        raise
    return paddle


def describe_machine() -> dict[str, object]:
    """What a measured number depends on: the CPU model (as ``lscpu`` names it), its family/model, the
    vector extensions and the cores this process may use; recorded in every results.json."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f.read(65536).splitlines():
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set(info.get("flags", "").split())
    return {
        "cpu": info.get("model name") or "unknown",
        "cpu_family": info.get("cpu family"),
        "cpu_model": info.get("model"),
        "cores": usable_cores(),
        "avx2": "avx2" in flags,
        "avx512": "avx512f" in flags,
    }
