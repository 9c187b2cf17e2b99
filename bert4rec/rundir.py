"""One training run per ``--CHECKPOINTS`` folder at a time, and nothing left behind by a run that failed early.

``check_run_dir`` validates the path before any work starts (not a file, its parent a folder we may write in).
``claim_run_dir`` creates the folder and holds an exclusive lock on ``<folder>/.lock`` for the whole run: a
second run into the same folder stops at once with one line naming the running process. The lock is an
``flock``, which the operating system releases when its process ends however it ends (kill -9 included), so a
stale lock never blocks anyone. If the run fails before it wrote anything, a folder it created is removed again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from bert4rec.errors import EnvironmentFailure, UserError

LOCK_NAME = ".lock"


def check_run_dir(path: Path, flag: str = "--CHECKPOINTS") -> None:
    """Raise a one-line error when ``path`` cannot be a run folder (a file, a file as parent, not writable)."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path}: is a file, not a folder")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{flag} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise EnvironmentFailure(f"{flag} {path}: cannot write in {existing} (permission denied or read-only)")


def _holder(lock_path: Path) -> str:
    try:
        pid = lock_path.read_text(encoding="utf-8").strip()
    except OSError:
        pid = ""
    return f" (process {pid})" if pid.isdigit() else ""


@contextlib.contextmanager
def claim_run_dir(path: Path, enabled: bool = True, flag: str = "--CHECKPOINTS") -> Iterator[None]:
    """Hold ``path`` for this run (``enabled``: rank 0 of a data-parallel run; the others only write nothing)."""
    if not enabled:
        yield
        return
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
        lock = open(path / LOCK_NAME, "a+", encoding="utf-8")  # noqa: SIM115 - held for the whole run
    except OSError as err:
        raise EnvironmentFailure(f"{flag} {path}: cannot create the run folder ({err.strerror})") from None
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{flag} {path}: another training run is using this folder{_holder(path / LOCK_NAME)}; "
                            "wait for it to end or choose another --CHECKPOINTS") from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        yield
    finally:
        lock.close()
        if created and sorted(p.name for p in path.iterdir()) in ([], [LOCK_NAME]):
            (path / LOCK_NAME).unlink(missing_ok=True)  # failed before producing anything: leave no trace
            path.rmdir()
