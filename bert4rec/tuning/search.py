"""The search itself, on Optuna: one study in a storage every worker shares, one normal training run per trial.

* Samplers: ``exhaustive`` enqueues every grid point once when the study is created and workers take them from
  the queue (a storage-level pop: two workers never run the same point); ``random`` and ``bayes`` (TPE) sample,
  with a sampler seeded by (``--seed``, trial number) for every trial, so parallel workers and restarts never
  replay each other's draws and a search is reproducible trial by trial. TPE starts with ``tpe_startup_trials``
  random trials (a third of ``--max_evals``, 2 to 10) instead of Optuna's fixed 10. On an all-``choice`` space a
  set of values already tried is never run again: random draws among the untried points, a repeat proposed by
  TPE is discarded (failed, marked ``duplicate_of``) and drawn again, and the search ends when every point is
  tried.
* The objective is the validation FULL NDCG@10 of the trial's best checkpoint (session data: MRR@20); each
  validation is reported to a median pruner, which stops a trial whose curve falls below the median of the
  earlier trials at the same step (``--pruner none``: every trial runs its whole budget).
  Test metrics are recorded for the report and never read by any decision.
* Resuming: a trial left running by a worker of this machine that died (its process is gone) is marked failed
  and, for the grid, put back in the queue; then the same command simply continues the study.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from bert4rec.config import ModelConfig, TrainOptions
from bert4rec.data.dataset import SELECTION
from bert4rec.errors import UserError
from bert4rec.fileio import atomic_write_text
from bert4rec.tuning.space import Param, checked_overrides, grid, quantize, split_values

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


class Pruned(Exception):
    """Raised from the trainer's validation hook when the pruner stops a trial."""


@dataclass
class Search:
    params: list[Param]
    config: ModelConfig        # the base model config (the --CONFIG_PATH file)
    options: TrainOptions      # the fixed training flags; ``checkpoints`` is the parent of the trial folders
    algo: str
    max_evals: int
    storage: str
    study_name: str
    params_file: Path
    seed: int = 0
    trial_progress: bool = False
    baseline_first: bool = False  # random/bayes: the untuned values (the config's and flags') are trial 0
    pruner: str = "median"        # or "none": every trial runs its whole budget

    def baseline(self) -> dict[str, Any]:
        """The values the search starts from: each tuned setting as the config and the fixed flags have it."""
        return {p.name: getattr(self.config if p.target == "config" else self.options, p.key) for p in self.params}

    def trial_dir(self, number: int) -> Path:
        return self.options.checkpoints / f"trial_{number:04d}"


def make_storage(url: str):
    """An Optuna storage: a journal file (``journal:PATH`` or a ``.log`` file) or any RDB URL (SQLite...)."""
    if url.startswith("journal:") or url.endswith(".log"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = url.removeprefix("journal:")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(path))
    sqlite = url.startswith("sqlite")
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        storage = optuna.storages.RDBStorage(
            url, engine_kwargs={"connect_args": {"timeout": 60, "isolation_level": None}} if sqlite else None)
    except Exception as err:  # noqa: BLE001 - a bad URL or an unreachable database: one line
        raise UserError(f"--study {url}: cannot open the study storage ({type(err).__name__}: {err})") from None
    if sqlite:
        serialize_sqlite_transactions(storage.engine)
    return storage


def serialize_sqlite_transactions(engine) -> None:
    """Every SQLite transaction takes the write lock when it begins. Python's sqlite3 otherwise starts a
    transaction only at the first write, so Optuna's read-then-update pop of a queued trial (SELECT ... FOR
    UPDATE elsewhere) lets two workers take the same grid point; with BEGIN IMMEDIATE the second one waits and
    then sees the point taken."""
    from sqlalchemy import event

    event.listen(engine, "begin", lambda connection: connection.exec_driver_sql("BEGIN IMMEDIATE"))


def space_signature(search: Search) -> str:
    return json.dumps({"params": [[p.name, p.kind, p.choices, p.low, p.high, p.q] for p in search.params],
                       "algo": search.algo, "model": search.config.MODEL}, sort_keys=True, default=str)


def tpe_startup_trials(max_evals: int) -> int:
    """Random trials before TPE models the results: a third of the budget, 2 to 10."""
    return max(2, min(10, max_evals // 3))


def trial_seed(seed: int, number: int) -> int:
    """The sampler seed of trial ``number``: distinct per trial, the same whichever worker runs it."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{number}".encode()).digest()[:4], "little")


def make_sampler(search: Search, seed: int) -> optuna.samplers.BaseSampler:
    if search.algo == "bayes":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=tpe_startup_trials(search.max_evals))
    return optuna.samplers.RandomSampler(seed=seed)


def open_study(search: Search) -> optuna.Study:
    """The study (created on first use, with the grid enqueued for ``exhaustive``); a study of the same name
    with another search space is refused."""
    sampler = make_sampler(search, search.seed)
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0) if search.pruner == "median"
              else optuna.pruners.NopPruner())
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=make_storage(search.storage), study_name=search.study_name,
                                direction="maximize", sampler=sampler, pruner=pruner, load_if_exists=True)
    signature = space_signature(search)
    known = study.user_attrs.get("space")
    if known is None:
        study.set_user_attr("space", signature)
        if search.algo == "exhaustive":
            for point in grid(search.params, str(search.params_file)):
                encoded = encode(search.params, point)
                study.enqueue_trial(encoded, user_attrs={"grid_point": encoded}, skip_if_exists=True)
        elif search.baseline_first:
            study.enqueue_trial(encode(search.params, search.baseline()), user_attrs={"baseline": True})
    elif known is not None and known != signature:
        raise UserError(f"--study_name {search.study_name}: that study in {search.storage} searches another space "
                        "(other parameters, ranges, algorithm or model); choose another --study_name")
    return study


def stored(value: Any) -> Any:
    """A value as Optuna and trials.json store it: scalars as they are, lists and the like as their repr."""
    return value if isinstance(value, bool | int | float | str | None) else repr(value)


def encode(params: list[Param], values: dict[str, Any]) -> dict[str, Any]:
    return {p.name: stored(values[p.name]) for p in params}


def suggest(trial: optuna.Trial, p: Param) -> Any:
    if p.kind == "choice":
        encoded = {stored(c): c for c in p.choices}
        return encoded[trial.suggest_categorical(p.name, list(encoded))]
    if p.kind == "uniform":
        return trial.suggest_float(p.name, p.low, p.high)
    if p.kind == "loguniform":
        return trial.suggest_float(p.name, math.exp(p.low), math.exp(p.high), log=True)
    return quantize(trial.suggest_float(p.name, p.low, p.high), p.q)


def worker_tag() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def recover_dead_trials(study: optuna.Study, search: Search) -> int:
    """Trials left RUNNING by a process of this machine that no longer exists: failed, and (grid) requeued."""
    host = socket.gethostname()
    recovered = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        where, _, pid = str(t.user_attrs.get("worker", "")).rpartition(":")
        if where != host or not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        except (RuntimeError, ValueError):  # another process of this machine recovered it first
            continue
        requeue(study, t)
        recovered += 1
    return recovered


def requeue(study: optuna.Study, trial: optuna.trial.BaseTrial) -> None:
    """A grid point whose trial did not finish goes back in the queue (other samplers just draw again)."""
    point = trial.user_attrs.get("grid_point")
    if point:
        study.enqueue_trial(point, user_attrs={"grid_point": point, "retry_of": trial.number})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def repeats_a_tried_point(trial: optuna.Trial, search: Search, study: optuna.Study,
                          points: list[dict[str, Any]]) -> bool:
    """TPE proposed values already tried: the trial is discarded (failed, ``duplicate_of``) before any training;
    after 20 discarded proposals in a row the next trial is a random untried point, none left ends the search."""
    values = encode(search.params, {p.name: suggest(trial, p) for p in search.params})
    earlier = [t for t in study.get_trials(deepcopy=False, states=(*FINISHED, optuna.trial.TrialState.RUNNING))
               if t.number != trial.number and t.params == values]
    if not earlier:
        return False
    trial.set_user_attr("duplicate_of", earlier[0].number)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    recent = study.get_trials(deepcopy=False)[-20:]
    if len(recent) == 20 and all("duplicate_of" in t.user_attrs for t in recent):
        point = next_untried(search, study, points)
        if point is None:
            raise SearchComplete
        study.enqueue_trial(point)
    return True


class SearchComplete(Exception):
    """Every point of a finite space is tried."""


def run_trial(trial: optuna.Trial, search: Search) -> float:
    """One normal training run with the trial's values; returns its objective (or raises TrialPruned)."""
    from bert4rec.train import train

    values = {p.name: suggest(trial, p) for p in search.params}
    config_values, train_values = split_values(search.params, values, search.config, search.options)
    trial.set_user_attr("values", {k: stored(v) for k, v in values.items()})
    config = checked_overrides(search.config, config_values, f"trial {trial.number} ({values})")
    config_path = search.options.checkpoints / "configs" / f"trial_{trial.number:04d}.json"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(config_path, json.dumps(config.to_dict(), indent=2) + "\n")
    # the trial's config file holds the command line's config overrides already
    opts = dataclasses.replace(search.options, **train_values, config_path=config_path, config_overrides={},
                               checkpoints=search.trial_dir(trial.number), progress=search.trial_progress)
    trial.set_user_attr("dir", str(opts.checkpoints))
    trial.set_user_attr("flags", train_values)
    started = time.perf_counter()

    def report(step: int, value: float, metrics: dict) -> None:
        trial.report(value, step)
        trial.set_user_attr("last_step", step)
        trial.set_user_attr("valid", metrics)  # a pruned trial keeps its last validation
        if trial.should_prune():
            raise Pruned(step)

    try:
        results = train(opts, on_validation=report)
    except Pruned as stop:
        trial.set_user_attr("pruned_at", stop.args[0])
        trial.set_user_attr("wall_seconds", round(time.perf_counter() - started, 1))
        raise optuna.TrialPruned() from None
    protocol, metric = SELECTION[results["data"]["protocol"]]
    trial.set_user_attr("objective_metric", f"{'FULL ' if protocol == 'full' else ''}{metric}")
    trial.set_user_attr("valid", results["valid"][protocol])
    trial.set_user_attr("test", results["test"][protocol])  # recorded for the report, never used to choose
    trial.set_user_attr("steps", results["steps"])
    trial.set_user_attr("train_seconds", results["train_seconds"])
    trial.set_user_attr("wall_seconds", round(time.perf_counter() - started, 1))
    return float(results["valid"][protocol][metric])


def finite_points(search: Search) -> list[dict[str, Any]] | None:
    """Every point of an all-``choice`` space (encoded as stored), or None when the space is continuous."""
    if search.algo == "exhaustive" or any(p.kind != "choice" for p in search.params):
        return None
    return [encode(search.params, point) for point in grid(search.params, str(search.params_file))]


def tried_points(study: optuna.Study) -> list[dict[str, Any]]:
    """The values of every trial that ran, runs or waits (not the discarded duplicates nor failures)."""
    states = (*FINISHED, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
    return [t.params or t.system_attrs.get("fixed_params", {}) for t in study.get_trials(deepcopy=False,
                                                                                        states=states)]


def next_untried(search: Search, study: optuna.Study, points: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A random point not tried yet (seeded by the study's size: reproducible), or None when all are."""
    tried = {json.dumps(t, sort_keys=True) for t in tried_points(study)}
    left = [pt for pt in points if json.dumps(pt, sort_keys=True) not in tried]
    if not left:
        return None
    rng = random.Random(trial_seed(search.seed, len(study.get_trials(deepcopy=False))))
    return rng.choice(left)


def work(search: Search, on_trial=None) -> int:
    """Run trials of the study until it has ``max_evals`` finished ones (or the grid is done); returns how many
    this worker ran. Every worker (process or machine) runs this loop against the shared storage; the trials of
    dead processes are recovered by ``tune.py`` before any worker starts."""
    study = open_study(search)
    points = finite_points(search)
    ran = 0
    while finished_count(study) < search.max_evals:
        if search.algo == "exhaustive" and not study.get_trials(deepcopy=False,
                                                                 states=(optuna.trial.TrialState.WAITING,)):
            break
        if points is not None and search.algo == "random" and not study.get_trials(
                deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
            point = next_untried(search, study, points)
            if point is None:
                print(f"every one of the {len(points)} points of the space is tried: the search is complete")
                break
            study.enqueue_trial(point)
        trial = study.ask()
        study.sampler = make_sampler(search, trial_seed(search.seed, trial.number))
        if search.algo == "exhaustive" and not trial.user_attrs.get("grid_point"):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)  # the queue emptied meanwhile: no extra point
            break
        trial.set_user_attr("worker", worker_tag())
        try:
            if points is not None and search.algo == "bayes" and repeats_a_tried_point(trial, search, study, points):
                continue
            value = run_trial(trial, search)
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        except SearchComplete:
            print("every point of the space is tried: the search is complete")
            break
        except KeyboardInterrupt:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            requeue(study, trial)
            raise
        except UserError as err:  # a combination the model refuses (e.g. heads not dividing the hidden size)
            trial.set_user_attr("error", str(err))
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, value)
        ran += 1
        if on_trial is not None:
            on_trial(study)
    return ran
