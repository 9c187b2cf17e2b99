#!/usr/bin/env python
"""Generate training and evaluation data: ``python bert_train/gen_data_fin.py --help``.

The code is ``bert4rec/cli/gen.py``; installed with pip the same tool is ``bert4rec-gen``. This script runs it from
the checkout without installing anything.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's bert4rec, installed or not

from bert4rec.cli.gen import build_parser, main  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(main())
