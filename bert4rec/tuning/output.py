"""What a search leaves behind, rewritten from the whole study after every trial (so a resumed search gives the
complete files): ``hyper.result`` in RecBole's format, ``best_params.json``, ``trials.json`` and a PNG."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import optuna

from bert4rec.config import FLAGS
from bert4rec.fileio import atomic_write_text
from bert4rec.reporting import label_axes, save_png, subplots
from bert4rec.tuning.space import format_params

# RecBole's metric names -> ours (FULL protocol: every item ranked, history excluded)
RECBOLE_METRICS = (("recall@10", "Recall@10"), ("mrr@10", "MRR@10"), ("ndcg@10", "NDCG@10"), ("hit@10", "HR@10"),
                   ("precision@10", "Precision@10"))


SESSION_METRICS = (("recall@20", "Recall@20"), ("mrr@20", "MRR@20"), ("ndcg@10", "NDCG@10"), ("hit@10", "HR@10"))


def recbole_line(metrics: dict) -> str:
    names = SESSION_METRICS if "MRR@20" in metrics else RECBOLE_METRICS
    return "    ".join(f"{name} : {metrics.get(ours, float('nan')):.4f}" for name, ours in names)


Trials = list[optuna.trial.FrozenTrial]
COMPLETE, PRUNED = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED


def in_states(trials: Trials, *states: optuna.trial.TrialState) -> Trials:
    return sorted((t for t in trials if t.state in states), key=lambda t: t.number)


def hyper_result(trials: Trials) -> str:
    """One block per finished trial: the parameter line, ``Valid result:`` and ``Test result:`` (RecBole). A
    pruned trial shows its last validation and no test (nan): it was stopped before testing."""
    blocks = []
    for t in in_states(trials, COMPLETE, PRUNED):
        blocks.append(f"{format_params(t.user_attrs.get('values', t.params))}\nValid result:\n"
                      f"{recbole_line(t.user_attrs.get('valid') or {})}\nTest result:\n"
                      f"{recbole_line(t.user_attrs.get('test') or {})}\n")
    return "\n".join(blocks)


def best_trial(trials: Trials) -> optuna.trial.FrozenTrial | None:
    """The best completed trial on validation (ties: the earlier trial). Test metrics are never looked at."""
    done = in_states(trials, COMPLETE)
    return max(done, key=lambda t: (t.value, -t.number)) if done else None


def trial_record(t: optuna.trial.FrozenTrial) -> dict:
    return {"number": t.number, "state": t.state.name, "values": t.user_attrs.get("values", t.params),
            "objective": t.value, "valid": t.user_attrs.get("valid"), "test": t.user_attrs.get("test"),
            "steps": t.user_attrs.get("steps"), "pruned_at_step": t.user_attrs.get("pruned_at"),
            "train_seconds": t.user_attrs.get("train_seconds"), "wall_seconds": t.user_attrs.get("wall_seconds"),
            "dir": t.user_attrs.get("dir"), "worker": t.user_attrs.get("worker"), "error": t.user_attrs.get("error"),
            "baseline": bool(t.user_attrs.get("baseline")),
            "started": t.datetime_start.isoformat() if t.datetime_start else None,
            "finished": t.datetime_complete.isoformat() if t.datetime_complete else None}


def pruning_savings(trials: Trials, planned_steps: int) -> dict:
    """Training time pruning saved: for each pruned trial, the steps it did not run at its own pace (seconds per
    step measured while it ran)."""
    saved, pruned = 0.0, 0
    for t in in_states(trials, PRUNED):
        done, seconds = t.user_attrs.get("pruned_at"), t.user_attrs.get("wall_seconds")
        if done and seconds:
            pruned += 1
            saved += seconds / done * max(planned_steps - done, 0)
    return {"pruned_trials": pruned, "saved_minutes_estimate": round(saved / 60, 1)}


def best_params(trials: Trials, command_prefix: list[str]) -> dict | None:
    """The best trial as something to train again: its config file and its trainrec.py flags (after the
    search's fixed flags in ``command_prefix``, so they override them)."""
    t = best_trial(trials)
    if t is None:
        return None
    flags = t.user_attrs.get("flags") or {}
    config_path = Path(t.user_attrs["dir"]).parent / "configs" / f"{Path(t.user_attrs['dir']).name}.json"
    args = ["--CONFIG_PATH", str(config_path)]
    for key, value in flags.items():
        args += [FLAGS.get(key, f"--{key.upper()}"), str(value)]
    return {"trial": t.number, "values": t.user_attrs.get("values", t.params), "objective": t.value,
            "objective_metric": t.user_attrs.get("objective_metric"), "valid": t.user_attrs.get("valid"),
            "config_path": str(config_path), "config": json.loads(config_path.read_text(encoding="utf-8"))
            if config_path.is_file() else None, "trainrec_flags": args,
            "command": shlex.join([*command_prefix, *args]),
            "note": "chosen on validation only; retrain with the command and test once"}


def plot_trials(trials: Trials, path: Path) -> None:
    done, pruned = in_states(trials, COMPLETE), in_states(trials, PRUNED)
    fig, ax = subplots(figsize=(8, 4.5))
    if done:
        numbers = [t.number for t in done]
        values = [t.value for t in done]
        ax.plot(numbers, values, "o", label="completed trial")
        ax.step(numbers, np.maximum.accumulate(values), where="post", label="best so far")
    if pruned:
        ax.plot([t.number for t in pruned], [max(t.intermediate_values.values(), default=0.0) for t in pruned], "x",
                color="grey", label="pruned (last validation)")
    label_axes(ax, "trial", "validation objective")
    save_png(fig, path)


def write_outputs(study: optuna.Study, output_file: Path, planned_steps: int, command_prefix: list[str]) -> dict:
    """Rewrite every output from the whole study (read from its storage once); returns the summary printed at
    the end."""
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    atomic_write_text(output_file, hyper_result(trials))
    best = best_params(trials, command_prefix)
    atomic_write_text(output_file.with_name("best_params.json"), json.dumps(best, indent=2) + "\n")
    summary = {"study": study.study_name, "finished": len(in_states(trials, COMPLETE, PRUNED)),
               "completed": len(in_states(trials, COMPLETE)), **pruning_savings(trials, planned_steps), "best": best}
    records = [trial_record(t) for t in trials]
    atomic_write_text(output_file.with_name("trials.json"), json.dumps({"summary": summary, "trials": records},
                                                                       indent=2, default=str) + "\n")
    plot_trials(trials, output_file.with_name("trials.png"))
    return summary
