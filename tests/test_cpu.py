"""CPU defaults: applied only before Paddle loads, never over a user's own setting."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROBE = ("import os, sys; sys.path.insert(0, %r); import bert4rec; "
         "print(os.environ.get('OMP_NUM_THREADS'), os.environ.get('MKL_DEBUG_CPU_TYPE'), bert4rec.CPU_SETTINGS)")


def probe(env_updates: dict, drop=("OMP_NUM_THREADS", "MKL_DEBUG_CPU_TYPE", "BERT4REC_CPU_TUNING",
                                   "PADDLE_LOCAL_SIZE")) -> list[str]:
    import os

    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_updates)
    out = subprocess.run([sys.executable, "-c", PROBE % str(REPO)], env=env, capture_output=True, text=True,
                         check=True).stdout.strip().split(maxsplit=2)
    return out


def amd_avx2() -> bool:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return "AuthenticAMD" in text and " avx2" in text


def test_defaults_use_every_usable_core_and_the_avx2_path_on_amd():
    import os

    threads, mkl, _ = probe({})
    assert threads == str(len(os.sched_getaffinity(0)))
    assert mkl == ("5" if amd_avx2() else "None")


def test_user_settings_win_and_tuning_can_be_switched_off():
    threads, mkl, applied = probe({"OMP_NUM_THREADS": "1", "MKL_DEBUG_CPU_TYPE": "4"})
    assert (threads, mkl) == ("1", "4") and applied == "{}"
    threads, mkl, applied = probe({"BERT4REC_CPU_TUNING": "0"})
    assert (threads, mkl, applied) == ("None", "None", "{}")


def test_data_parallel_processes_share_the_cores():
    import os

    threads, _, _ = probe({"PADDLE_LOCAL_SIZE": "2"})
    assert threads == str(max(1, len(os.sched_getaffinity(0)) // 2))
