#!/usr/bin/env python
"""Hyper-parameter search for any model of the project, chosen on validation only: ``python tune.py --help``.

The code is ``bert4rec/cli/tune.py``; installed with pip the same tool is ``bert4rec-tune``. This script runs it
from the checkout without installing anything.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the checkout's bert4rec, installed or not

from bert4rec.cli.tune import build_parser, main  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(main())
