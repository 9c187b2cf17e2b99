#!/usr/bin/env python
"""Compare finished runs of any models in one Markdown table and one PNG: ``python report.py --help``.

The code is ``bert4rec/cli/report.py``; installed with pip the same tool is ``bert4rec-report``. This script runs it
from the checkout without installing anything.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the checkout's bert4rec, installed or not

from bert4rec.cli.report import main  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(main())
