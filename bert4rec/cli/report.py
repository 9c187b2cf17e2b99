"""Compare finished runs of any models in one Markdown table and one PNG.

    python report.py checkpoints/bert_config_ml-1m_64_d01 checkpoints/sasrec_config_ml-1m [--output report.md]

Writes ``report.md`` (every test metric, both protocols, training minutes, steps, CPU; the popularity baseline
and, on ML-1M, the published numbers) and ``report.png`` beside it (validation FULL NDCG@10 against training
minutes for every run).

Installed with pip the command is ``bert4rec-report`` (same flags).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import bert4rec  # noqa: F401  (CPU settings before Paddle loads)
from bert4rec.cli._common import command_name, exit_code
from bert4rec.errors import UserError


def command() -> str:
    return command_name("report.py", "bert4rec-report")


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise UserError(f"{command()}: {message} (see --help)")


def run(argv: list[str] | None = None) -> int:
    p = Parser(prog=command(), description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run folders (trainrec.py --CHECKPOINTS)")
    p.add_argument("--output", type=Path, default=Path("report.md"), help="Markdown file (default: report.md)")
    args = p.parse_args(argv)
    if args.output.suffix.lower() != ".md":
        raise UserError(f"--output {args.output}: expected a .md file (the PNG is written beside it)")
    if args.output.is_dir():
        raise UserError(f"--output {args.output}: is a folder")
    from bert4rec.cpu import import_paddle

    import_paddle()
    from bert4rec.report import write_report

    markdown, png = write_report(args.runs, args.output)
    print(f"wrote {markdown} and {png}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``report.py`` / ``bert4rec-report``: the exit code (0; 2 for a user error, 3 for the machine's)."""
    return exit_code(lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
