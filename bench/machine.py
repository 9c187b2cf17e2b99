"""The machine under the benchmark: what CPU it is, and how busy other processes kept it meanwhile."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import time


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux
        return []


def cpu_snapshot(children: bool = False) -> tuple[float, float, float] | None:
    """(wall clock, busy CPU seconds of the whole machine, CPU seconds of this process [and its children]).

    The difference of two snapshots tells how much CPU *other* processes used meanwhile (a shared machine):
    machine busy time (user, nice, system, irq, softirq, steal) minus our own."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait
    own = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN) if children else (resource.RUSAGE_SELF,):
        usage = resource.getrusage(who)
        own += usage.ru_utime + usage.ru_stime
    return time.perf_counter(), busy, own


def other_cores(start, end) -> float | None:
    """Average number of cores other processes kept busy between two ``cpu_snapshot`` s."""
    if start is None or end is None or end[0] <= start[0]:
        return None
    return round(max(0.0, (end[1] - start[1]) - (end[2] - start[2])) / (end[0] - start[0]), 2)


def parse_lscpu(text: str) -> dict[str, str]:
    """``lscpu`` output as a dict (``Model name`` -> ``AMD EPYC ...``)."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    return fields


def cpu_info(env: dict[str, str]) -> dict:
    """The CPU as ``lscpu`` names it (run in ``env``, the user's environment), and what this process may use."""
    from bert4rec.cpu import _cpu_flags, usable_cores

    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10,
                              env={**env, "LC_ALL": "C"}).stdout
    except (OSError, subprocess.SubprocessError):
        text = ""
    fields = parse_lscpu(text)
    flags = set(fields.get("Flags", "").split()) or _cpu_flags()[1]
    return {
        "model_name": fields.get("Model name") or platform.processor() or "unknown",
        "vendor": fields.get("Vendor ID"),
        "family": fields.get("CPU family"),
        "model": fields.get("Model"),
        "hypervisor": fields.get("Hypervisor vendor"),
        "cpus": os.cpu_count(),
        "usable_cores": usable_cores(),
        "avx2": "avx2" in flags,
        "avx512": sorted(f for f in flags if f.startswith("avx512")),
    }
