"""What the command-line modules share: the name a tool goes by, and ``run_cli`` as a function returning the
exit code (so ``main(argv)`` serves a console script, a top-level script and a caller alike)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from bert4rec.errors import run_cli
from bert4rec.paths import checkout_root


def command_name(script: str, console: str) -> str:
    """How the user calls the tool, for messages: the console script's name when that is what runs (or outside a
    checkout), else the checkout's script (``trainrec.py``), as the messages always said."""
    if os.path.basename(sys.argv[0] if sys.argv else "") == console or checkout_root() is None:
        return console
    return script


def exit_code(body: Callable[[], int | None]) -> int:
    """Run ``body`` through ``run_cli`` (a ``UserError`` becomes one ``error:`` line on stderr, exit code 2; a
    machine failure 3; Ctrl-C 130) and return the exit code instead of exiting."""
    try:
        run_cli(body)
    except SystemExit as stop:
        code = stop.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)  # what ``sys.exit("message")`` would have printed
        return 1
    return 0  # pragma: no cover - run_cli always exits
