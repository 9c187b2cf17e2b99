"""Export a trained run (any model) for serving with Paddle Inference.

    python export.py --CHECKPOINTS checkpoints/sasrec_config_ml-1m --output exported/sasrec [--k 10]

Writes into the output folder: ``model.json`` + ``model.pdiparams`` (the static scoring graph: history in,
top-k item ids and scores out, the history's items excluded inside the graph; plain Paddle ops only),
``export.json`` (k, max_history, items, model) and ``items.txt`` (item id, original id, title). Answer requests
with ``bert4rec.export.Predictor`` (see ``examples/predict.py``).

Installed with pip the command is ``bert4rec-export`` (same flags).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import bert4rec  # noqa: F401  (CPU settings before Paddle loads)
from bert4rec.cli._common import command_name, exit_code
from bert4rec.errors import UserError


def command() -> str:
    return command_name("export.py", "bert4rec-export")


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise UserError(f"{command()}: {message} (see --help)")


def run(argv: list[str] | None = None) -> int:
    p = Parser(prog=command(), description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--CHECKPOINTS", "--checkpoints", dest="run", type=Path, required=True,
                   help="the run folder of a finished training (trainrec.py --CHECKPOINTS)")
    p.add_argument("--output", type=Path, required=True, help="the folder to write the exported model into")
    p.add_argument("--k", type=int, default=10, help="items returned per request (default: %(default)s)")
    p.add_argument("--DATA_DIR", "--data_dir", dest="data_dir", type=Path,
                   help="the run's data folder, if it moved since training")
    args = p.parse_args(argv)
    if args.k < 1:
        raise UserError(f"--k must be >= 1, got {args.k}")
    from bert4rec.cpu import import_paddle

    import_paddle()  # quietly, before bert4rec.export imports it
    from bert4rec.export import check_export_target, export_run

    check_export_target(args.output)
    from bert4rec.trained import load_run

    meta = export_run(load_run(args.run, args.data_dir), args.output, args.k)
    print(f"exported {meta['model']} to {args.output}: {', '.join(meta['files'])} (top {meta['k']} of "
          f"{meta['num_items']:,} items, histories of up to {meta['max_history']} items)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``export.py`` / ``bert4rec-export``: the exit code (0; 2 for a user error, 3 for the machine's)."""
    return exit_code(lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
