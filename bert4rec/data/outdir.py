"""The output-folder safety rules of ``gen_data_fin.py``: the generator writes a new folder and swaps it in
whole, so it may only ever replace a folder it can prove it wrote (its own ``stats.json`` lists every file), and
never the current folder, a folder holding an input, or a file. Nothing of the user's is ever deleted."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from bert4rec.errors import EnvironmentFailure, UserError


def _written_by_generator(folder: Path) -> list[str]:
    """Entries of ``folder`` the generator cannot account for: everything, unless its own ``stats.json``
    lists the files it wrote (then only what is not among them)."""
    entries = sorted(os.listdir(folder))
    try:
        stats = json.loads((folder / "stats.json").read_text(encoding="utf-8"))
        ours = isinstance(stats, dict) and "generator_version" in stats
        own = set(stats["files"]) | {"stats.json"} if ours else set()
    except (OSError, ValueError, KeyError, TypeError):
        own = set()
    return [name for name in entries if name not in own]


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_dir(out_dir: Path, inputs: Sequence[Path]) -> None:
    """Refuse an output folder the generator may not replace (``UserError``, nothing touched).

    The output is written next to ``out_dir`` and then swapped in whole, so ``out_dir`` is only acceptable when
    it does not exist, is empty, or holds exactly the files of an earlier run of the generator; it must not be
    (or contain) an input or the current folder, and a file in its place is never replaced.
    """
    out = out_dir.resolve()
    flag = f"--output_dir {out_dir}"
    cwd = Path.cwd().resolve()
    if out == cwd or out in cwd.parents:
        raise UserError(f"{flag}: is the current folder or one of its parents; name a folder of its own")
    for source in inputs:
        src = source.resolve()
        if src == out or out in src.parents:
            raise UserError(f"{flag}: holds the input {source}; write the output to another folder")
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise UserError(f"{flag}: is a file, not a folder; choose another path")
        foreign = _written_by_generator(out)
        if foreign:
            raise UserError(f"{flag}: exists and was not written by gen_data_fin.py (it holds {foreign[0]!r}); "
                            "choose a new folder or empty this one yourself")
        parent = out.parent
    else:
        parent = _nearest_existing(out.parent)
        if not parent.is_dir():
            raise UserError(f"{flag}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise EnvironmentFailure(f"{flag}: cannot write in {parent} (permission denied or read-only)")
