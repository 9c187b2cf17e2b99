#!/usr/bin/env python
"""Recommendations from a trained run (any model): ``python recommend.py --help``.

The code is ``bert4rec/cli/recommend.py``; installed with pip the same tool is ``bert4rec-recommend``. This script
runs it from the checkout without installing anything.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the checkout's bert4rec, installed or not

from bert4rec.cli.recommend import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
