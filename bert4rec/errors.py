"""User-facing errors: one clear line, exit code 2, no traceback.

Anything the user can fix (a bad file, a bad flag, a bad config key) raises ``UserError``; the CLIs wrap their
``main`` with ``run_cli`` so the message is printed as a single line and the process exits with status 2.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A mistake the user can fix; the message names the file/line/option at fault."""


def run_cli(main: Callable[[], int | None]) -> None:
    """Run a CLI entry point, turning ``UserError`` into ``error: ...`` on stderr and exit code 2."""
    try:
        code = main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
