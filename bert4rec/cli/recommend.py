"""Recommendations from a trained run (any model), with titles when the data has them.

    python recommend.py --CHECKPOINTS checkpoints/bert_config_ml-1m_64_d01 --user 42 --k 10
    python recommend.py --CHECKPOINTS <run dir> --history 1193,661,914       # a new user, by movie ids
    python recommend.py --CHECKPOINTS <run dir> --all --output recs.csv      # every user, one CSV

Users and movies are named by their original ids: MovieLens ids when the data came from a GroupLens file or
``gen_data_fin.py`` was given the id maps (``--item_id_map``/``--user_id_map``), otherwise the input file's ids;
the output says which. A known user's whole history (training, validation and test items) is never recommended.
Installed with pip the command is ``bert4rec-recommend`` (same flags).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import bert4rec  # noqa: F401  (CPU settings before Paddle loads)
from bert4rec.cli._common import command_name, exit_code
from bert4rec.errors import UserError


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise UserError(f"{command_name('recommend.py', 'bert4rec-recommend')}: {message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--CHECKPOINTS", "--checkpoints", dest="run", type=Path, required=True,
                   help="the run folder of a finished training (trainrec.py --CHECKPOINTS)")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="a known user, by original user id")
    who.add_argument("--history", help="a new user's history: comma-separated original movie ids, oldest first")
    who.add_argument("--all", action="store_true", help="every user of the data, written to --output")
    p.add_argument("--k", type=int, default=10, help="recommendations per user (default: %(default)s)")
    p.add_argument("--output", type=Path, help="--all: the CSV to write (user,rank,item,score[,title]; original ids)")
    p.add_argument("--last", type=int, default=5, help="--user: how many recent items to show (default: 5)")
    p.add_argument("--DATA_DIR", "--data_dir", dest="data_dir", type=Path,
                   help="the run's data folder, if it moved since training")
    return p


def validate(args: argparse.Namespace) -> None:
    if args.k < 1:
        raise UserError(f"--k must be >= 1, got {args.k}")
    if args.last < 0:
        raise UserError(f"--last must be >= 0, got {args.last}")
    if args.all and args.output is None:
        raise UserError("--all needs --output FILE.csv")
    if args.output is not None and not args.all:
        raise UserError("--output is for --all")
    if args.output is not None and args.output.is_dir():
        raise UserError(f"--output {args.output}: is a folder")


def describe(item: int, catalogue) -> str:
    title, genres = catalogue.titles.get(item, ("", ""))
    return f"{catalogue.item_original[item]:>7}  {title}" + (f"  [{genres}]" if genres else "")


def show(frame, catalogue, model_name: str) -> None:
    lookup = catalogue.original_item_lookup()
    print(f"{'rank':>4} {catalogue.noun:>7}  {'score':>9}  title")
    for row in frame.itertuples(index=False):
        title, genres = catalogue.titles.get(lookup[row.item], ("", ""))
        print(f"{row.rank:>4} {row.item:>7}  {row.score:>9.3f}  {title}" + (f"  [{genres}]" if genres else ""))
    note = f"titles from {catalogue.titles_from}" if catalogue.titles_from else "no titles (no item metadata)"
    print(f"({model_name} scores; {catalogue.noun} ids are {catalogue.ids_are}; {note})")


def recommend_user(run, args) -> None:
    from bert4rec.recommending import known_histories, recommendations, user_rows

    catalogue = run.catalogue()
    history = known_histories(run.test_set(), user_rows(run, catalogue, [args.user], "--user"))[0]
    frame = recommendations(run, users=[args.user], k=args.k, progress=False)
    print(f"user {args.user}: {len(history)} items; the last {min(args.last, len(history))}:")
    for item in history[-args.last:] if args.last else []:
        print(f"      {describe(item, catalogue)}")
    print(f"top {args.k} (their history excluded):")
    show(frame, catalogue, run.results.get("model", "model"))


def recommend_history(run, args) -> None:
    from bert4rec.recommending import recommendations

    given = [x.strip() for x in args.history.split(",") if x.strip()]
    frame = recommendations(run, histories=[given], k=args.k, progress=False, flags=("--user", "--history"))
    print(f"new user with {len(given)} items; top {args.k} (history excluded):")
    show(frame, run.catalogue(), run.results.get("model", "model"))


def recommend_all(run, args) -> None:
    from bert4rec.fileio import atomic_path
    from bert4rec.recommending import recommendations

    started = time.perf_counter()
    frame = recommendations(run, k=args.k)
    with atomic_path(args.output) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")
    print(f"wrote {args.output}: top {args.k} for {frame['user'].nunique():,} users in "
          f"{time.perf_counter() - started:.1f} s (ids are {run.catalogue().ids_are})")


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    validate(args)
    from bert4rec.cpu import import_paddle

    import_paddle()
    from bert4rec.trained import load_run

    run = load_run(args.run, args.data_dir)
    if args.all:
        recommend_all(run, args)
    elif args.user is not None:
        recommend_user(run, args)
    else:
        recommend_history(run, args)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``recommend.py`` / ``bert4rec-recommend``: the exit code (0; 2 for a user error, 3 for the machine's)."""
    return exit_code(lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
