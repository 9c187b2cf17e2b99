"""Hyper-parameter search for any model of the project, chosen on validation only (RecBole's hyper.test format).

    python tune.py --CONFIG_PATH bert_train/bert_config_ml-1m_64_d01.json --params_file hyper.test \\
        --output_file hyper.result [--algo exhaustive|random|bayes] [--max_evals N] [--study sqlite:///tune.db] \\
        [--study_name NAME] [--workers K] [any trainrec.py flag, e.g. --NUM_TRAIN_STEPS 3000]

Each trial is a normal training run in ``<CHECKPOINTS>/trial_NNNN`` (results.json, events.jsonl, checkpoints);
its objective is the validation FULL NDCG@10 of its best checkpoint. Flags not being tuned are the same for every
trial. The study lives in the storage (default ``sqlite:///<CHECKPOINTS>/tune.db``; any Optuna RDB URL, or a
journal file ``journal:PATH`` for several machines): kill the search at any point and the same command resumes
it; ``--workers K`` runs K trials at once as separate processes sharing the cores, and the same command on other
machines against the same storage joins the search. Outputs, rewritten from the whole study after every trial:
``hyper.result`` (RecBole's format, one block per finished trial; a pruned one shows its last validation), and
beside it ``best_params.json`` (the best trial's config file, flags and retrain command), ``trials.json`` (every
trial, its times, test metrics for the record) and ``trials.png``.

Installed with pip the command is ``bert4rec-tune`` (same flags; trials train as ``bert4rec-train`` would).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import bert4rec  # noqa: F401  (CPU settings before Paddle loads; workers set their own threads first)
from bert4rec.cli._common import command_name, exit_code
from bert4rec.errors import UserError
from bert4rec.paths import checkout_root, project_root

ALGOS = ("exhaustive", "random", "bayes")


def command() -> str:
    return command_name("tune.py", "bert4rec-tune")


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise UserError(f"{command()}: {message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=command(), description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
               allow_abbrev=False)
    p.add_argument("--params_file", type=Path, required=True, help="the search space (RecBole's hyper.test)")
    p.add_argument("--output_file", type=Path, default=Path("hyper.result"), help="default: hyper.result")
    p.add_argument("--algo", default="exhaustive", choices=ALGOS, help="default: exhaustive (choice only)")
    p.add_argument("--max_evals", type=int, default=None,
                   help="finished trials to reach (default for exhaustive: the whole grid; required otherwise)")
    p.add_argument("--study", default=None, help="Optuna storage (default sqlite:///<CHECKPOINTS>/tune.db)")
    p.add_argument("--study_name", default=None, help="default: <config name>-<params file name>")
    p.add_argument("--workers", type=int, default=1, help="trials at once on this machine (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random and bayes samplers")
    p.add_argument("--trial_progress", action="store_true", help="a progress bar inside every trial too")
    p.add_argument("--baseline_first", action="store_true",
                   help="random/bayes: run the untuned values (the config's and the flags') as the first trial")
    p.add_argument("--pruner", default="median", choices=("median", "none"),
                   help="median (default): stop a trial whose validation curve falls below the median of the earlier "
                        "trials at the same step; none: every trial gets the whole budget")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p


def setup(argv: list[str]):
    """Parse and check everything before any trial starts; returns (args, Search)."""
    from bert4rec.cli import train as trainrec
    from bert4rec.config import canonical_key
    from bert4rec.models import MODELS, load_config
    from bert4rec.tuning.search import Search
    from bert4rec.tuning.space import checked_overrides, grid, parse_space

    args, rest = build_parser().parse_known_args(argv)
    train_args = trainrec.build_parser().parse_args(rest)
    opts = trainrec.options_from_args(train_args)
    config = load_config(opts.config_path, opts.config_overrides)
    params = parse_space(args.params_file, MODELS[config.MODEL].config_class)
    fixed = [p.name for p in params if p.target == "config" and p.key in
             {canonical_key(k) for k in opts.config_overrides}]
    if fixed:
        raise UserError(f"{args.params_file}: {fixed[0]} is tuned and also set on the command line; drop one")
    name = args.study_name or f"{opts.config_path.stem}-{args.params_file.stem}"
    if train_args.checkpoints is None:  # the parent of the trials' run folders
        opts.checkpoints = project_root() / "checkpoints" / f"tune_{name}"
    if opts.valid_path is None:
        raise UserError("tuning chooses on validation: generate the data with --holdout valid_test")
    if args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    if args.algo == "exhaustive":
        points = grid(params, str(args.params_file))
        for point in points:  # every combination must be a valid config before anything runs
            checked_overrides(config, {p.key: point[p.name] for p in params if p.target == "config"},
                              f"{args.params_file}: the combination {point}")
        max_evals = args.max_evals if args.max_evals is not None else len(points)
    elif args.max_evals is None:
        raise UserError(f"--algo {args.algo} needs --max_evals N")
    else:
        max_evals = args.max_evals
    if max_evals < 1:
        raise UserError(f"--max_evals must be >= 1, got {max_evals}")
    storage = args.study or f"sqlite:///{(opts.checkpoints / 'tune.db').resolve()}"
    if args.baseline_first and args.algo == "exhaustive":
        raise UserError("--baseline_first is for --algo random or bayes (the grid runs every point anyway)")
    search = Search(params, config, opts, args.algo, max_evals, storage, name, args.params_file, args.seed,
                    args.trial_progress, args.baseline_first, args.pruner)
    if args.baseline_first:
        baseline = search.baseline()
        outside = [p.name for p in params if p.kind == "choice" and baseline[p.name] not in p.choices]
        if outside:
            raise UserError(f"--baseline_first: the untuned value of {outside[0]} ({baseline[outside[0]]!r}) is not "
                            f"among its choices in {args.params_file}")
    return args, search


def fixed_flags(argv: list[str]) -> list[str]:
    """The trainrec.py flags every trial shares (not tune.py's own, not the config or the run folder)."""
    own = {"--CONFIG_PATH", "--CHECKPOINTS"}  # tune.py's own flags are not in ``rest``
    _, rest = build_parser().parse_known_args(argv)
    out, skip = [], False
    for i, arg in enumerate(rest):
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name.upper() in own or name in own:
            skip = "=" not in arg and i + 1 < len(rest) and not rest[i + 1].startswith("--")
            continue
        out.append(arg)
    return out


def planned_steps(search) -> int:
    from bert4rec.config import DEFAULT_TRAIN_STEPS

    return search.options.num_train_steps or DEFAULT_TRAIN_STEPS


def worker_command() -> list[str]:
    """How a worker process runs this tool: the checkout's tune.py (importable from anywhere, as before), else the
    installed module."""
    root = checkout_root()
    if root is not None:
        return [sys.executable, str(root / "tune.py")]
    return [sys.executable, "-m", "bert4rec.cli.tune"]


def retrain_prefix() -> list[str]:
    """The start of the retrain command shown for the best trial."""
    return ["python", "trainrec.py"] if checkout_root() is not None else ["bert4rec-train"]


def spawn_workers(argv: list[str], workers: int) -> list[subprocess.Popen]:
    """K worker processes running this command, the machine's cores split between them."""
    from bert4rec.cpu import usable_cores

    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, usable_cores() // workers))}
    return [subprocess.Popen([*worker_command(), *argv, "--worker"], env=env) for _ in range(workers)]


def run(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    from bert4rec.cpu import import_paddle

    import_paddle()  # quietly, before the model modules (which the checks read) import it
    args, search = setup(argv)
    from tqdm import tqdm

    from bert4rec.tuning.output import write_outputs
    from bert4rec.tuning.search import finished_count, open_study, recover_dead_trials, work

    prefix = [*retrain_prefix(), *fixed_flags(argv)]
    if args.worker:  # a child: run trials until the study has enough
        work(search, on_trial=lambda study: write_outputs(study, args.output_file, planned_steps(search), prefix))
        return 0
    search.options.checkpoints.mkdir(parents=True, exist_ok=True)
    study = open_study(search)  # created (grid enqueued) once, before any worker starts
    recover_dead_trials(study, search)
    print(f"study {search.study_name} in {search.storage}: {finished_count(study)} of {search.max_evals} trials "
          f"finished; trials in {search.options.checkpoints}")
    bar = tqdm(total=search.max_evals, initial=min(finished_count(study), search.max_evals), unit="trial",
               desc="trials", disable=None)
    interrupted, failed_workers = False, []
    try:
        if args.workers == 1:
            def progress(s):
                bar.n = min(write_outputs(s, args.output_file, planned_steps(search), prefix)["finished"],
                            search.max_evals)
                bar.refresh()

            work(search, on_trial=progress)
        else:
            children = spawn_workers(argv, args.workers)
            while any(c.poll() is None for c in children):
                time.sleep(2)
                bar.n = min(finished_count(study), search.max_evals)
                bar.refresh()
            failed_workers = [c.pid for c in children if c.returncode not in (0, 130)]
    except KeyboardInterrupt:
        interrupted = True
    bar.close()
    summary = write_outputs(study, args.output_file, planned_steps(search), prefix)
    best = summary["best"]
    print(f"{summary['finished']} trials finished ({summary['completed']} completed, {summary['pruned_trials']} "
          f"pruned, which saved about {summary['saved_minutes_estimate']} min of training); results: "
          f"{args.output_file}, best_params.json, trials.json, trials.png")
    if best:
        print(f"best on validation: trial {best['trial']} {best['values']} -> valid {best['objective_metric']} "
              f"{best['objective']:.4f}; retrain with: {best['command']}")
    if interrupted:
        print("interrupted: run the same command to resume the search", file=sys.stderr)
        return 130
    if failed_workers:
        print(f"error: worker process(es) {failed_workers} failed (their message is above); the finished trials "
              "are kept: fix the cause and run the same command to resume", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """``tune.py`` / ``bert4rec-tune``: the exit code (0; 1 when a worker failed; 2 for a user error; 130 when
    interrupted)."""
    return exit_code(lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
