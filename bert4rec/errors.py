"""User-facing errors: one clear line, exit code 2, no traceback.

Anything the user can fix (a bad file, a bad flag, a bad config key) raises ``UserError``; the CLIs wrap their
``main`` with ``run_cli`` so the message is printed as a single line and the process exits with status 2.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

EXIT_USER_ERROR = 2
EXIT_ENVIRONMENT = 3


class UserError(Exception):
    """A mistake the user can fix; the message names the file/line/option at fault."""

    exit_code = EXIT_USER_ERROR


class EnvironmentFailure(UserError):
    """The machine refused (disk full, read-only filesystem, no permission): one line naming the path, exit 3."""

    exit_code = EXIT_ENVIRONMENT


class TrainingDiverged(UserError):
    """The loss stopped being a finite number: the run stops (exit 3), the last good checkpoint is kept, and a
    tuning trial that diverges is marked failed, never best."""

    exit_code = EXIT_ENVIRONMENT


def os_failure(err: OSError, path: object = None) -> EnvironmentFailure:
    """An ``OSError`` as one line naming the path and the cause (e.g. ``No space left on device``)."""
    where = err.filename if err.filename is not None else path
    cause = err.strerror or type(err).__name__
    return EnvironmentFailure(f"{where}: {cause}" if where is not None else cause)


def run_cli(main: Callable[[], int | None]) -> None:
    """Run a CLI entry point: ``UserError`` becomes ``error: ...`` on stderr and exit code 2 (3 for a failure
    of the machine, e.g. a full disk, which also covers any ``OSError`` no layer below turned into a message)."""
    try:
        code = main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except OSError as err:
        print(f"error: {os_failure(err)}", file=sys.stderr)
        sys.exit(EXIT_ENVIRONMENT)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
