#!/usr/bin/env python
"""Recommendations from a trained run (any model), with titles when the data has them.

    python recommend.py --CHECKPOINTS checkpoints/bert_config_ml-1m_64_d01 --user 42 --k 10
    python recommend.py --CHECKPOINTS <run dir> --history 1193,661,914       # a new user, by movie ids
    python recommend.py --CHECKPOINTS <run dir> --all --output recs.csv      # every user, one CSV

Users and movies are named by their original ids: MovieLens ids when the data came from a GroupLens file or
``gen_data_fin.py`` was given the id maps (``--item_id_map``/``--user_id_map``), otherwise the input file's ids;
the output says which. A known user's whole history (training, validation and test items) is never recommended.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))

import bert4rec  # noqa: E402,F401  (CPU settings before Paddle loads)
from bert4rec.errors import UserError, run_cli  # noqa: E402

BATCH = 256


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise UserError(f"recommend.py: {message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--CHECKPOINTS", "--checkpoints", dest="run", type=Path, required=True,
                   help="the run folder of a finished training (trainrec.py --CHECKPOINTS)")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="a known user, by original user id")
    who.add_argument("--history", help="a new user's history: comma-separated original movie ids, oldest first")
    who.add_argument("--all", action="store_true", help="every user of the data, written to --output")
    p.add_argument("--k", type=int, default=10, help="recommendations per user (default: %(default)s)")
    p.add_argument("--output", type=Path, help="--all: the CSV to write (user,rank,item,original_id,score)")
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


def show(items, scores, catalogue, model_name: str) -> None:
    print(f"{'rank':>4} {'movie':>7}  {'score':>9}  title")
    for rank, (item, score) in enumerate(zip(items, scores, strict=True), start=1):
        if item == 0:
            break
        title, genres = catalogue.titles.get(int(item), ("", ""))
        print(f"{rank:>4} {catalogue.item_original[item]:>7}  {score:>9.3f}  {title}"
              + (f"  [{genres}]" if genres else ""))
    note = f"titles from {catalogue.titles_from}" if catalogue.titles_from else "no titles (no item metadata)"
    print(f"({model_name} scores; movie ids are {catalogue.ids_are}; {note})")


def recommend_user(run, args) -> None:
    from bert4rec.trained import top_k

    catalogue, test = run.catalogue(), run.test_set()
    users = {str(int(u)): i for i, u in enumerate(catalogue.user_original) if i > 0}
    if args.user not in users:
        raise UserError(f"--user {args.user}: no such user in {run.data_dir / 'users.txt'} (users are named by "
                        f"{catalogue.ids_are.replace('MovieLens ids', 'MovieLens user ids')})")
    row = int(users[args.user]) - 1
    history = list(test.user_history(row)) + [int(test.targets[row])]  # everything the user is known to have seen
    items, scores = top_k(run.model.predict([history]), [history], args.k)
    print(f"user {args.user}: {len(history)} items; the last {min(args.last, len(history))}:")
    for item in history[-args.last:] if args.last else []:
        print(f"      {describe(item, catalogue)}")
    print(f"top {args.k} (their history excluded):")
    show(items[0], scores[0], catalogue, run.results.get("model", "model"))


def recommend_history(run, args) -> None:
    from bert4rec.trained import top_k

    catalogue = run.catalogue()
    lookup = catalogue.original_item_lookup()
    given = [x.strip() for x in args.history.split(",") if x.strip()]
    if not given:
        raise UserError("--history: give at least one movie id")
    unknown = [x for x in given if x not in lookup]
    if unknown:
        raise UserError(f"--history: unknown movie id{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} (not "
                        f"among the {len(lookup):,} items of the training data; ids are {catalogue.ids_are})")
    history = [lookup[x] for x in given]
    items, scores = top_k(run.model.predict([history]), [history], args.k)
    print(f"new user with {len(history)} items; top {args.k} (history excluded):")
    show(items[0], scores[0], catalogue, run.results.get("model", "model"))


def recommend_all(run, args) -> None:
    from tqdm import tqdm

    from bert4rec.fileio import atomic_path
    from bert4rec.trained import top_k

    catalogue, test = run.catalogue(), run.test_set()
    started = time.perf_counter()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["user", "rank", "item", "original_id", "score"])
    for start in tqdm(range(0, len(test), BATCH), desc="users", unit="batch", disable=None):
        rows = range(start, min(start + BATCH, len(test)))
        seen = [list(test.user_history(r)) + [int(test.targets[r])] for r in rows]
        items, scores = top_k(run.model.predict(seen), seen, args.k)
        for r, its, scs in zip(rows, items, scores, strict=True):
            user = int(catalogue.user_original[int(test.users[r])])
            for rank, (item, score) in enumerate(zip(its, scs, strict=True), start=1):
                if item:
                    writer.writerow([user, rank, int(item), catalogue.item_original[item], f"{score:.6g}"])
    with atomic_path(args.output) as tmp:
        tmp.write_text(out.getvalue(), encoding="utf-8")
    print(f"wrote {args.output}: top {args.k} for {len(test):,} users in {time.perf_counter() - started:.1f} s "
          f"(ids are {catalogue.ids_are})")


def main() -> int:
    args = build_parser().parse_args()
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


if __name__ == "__main__":
    run_cli(main)
