#!/usr/bin/env python
"""One training recipe over several seeds: mean ± standard deviation of every metric and of the training time.

    python bench/seeds.py --out results/seeds/ml-1m_sasrec_ce -- \\
        --CONFIG_PATH bert_train/sasrec_config_ml-1m.json --NUM_TRAIN_STEPS 6000 --MAX_MINUTES 30

Everything after ``--`` goes to ``trainrec.py`` unchanged; each seed runs it with ``--SEED s --CHECKPOINTS
<out>/seed-<s>`` (seeds 1, 2, 3 unless ``--seeds`` says otherwise), one after the other, never side by side (on
2 cores two runs would slow each other and change what a time budget buys). A seed whose folder already holds
``results.json`` is not trained again, provided the options it recorded are those the flags give now (otherwise
the command stops with one line naming the first difference); an interrupted seed resumes from its
``last.pdparams``. So the command can be stopped and run again, and seeds can be added later.

Writes ``<out>/summary.json`` (per seed and mean ± sd: validation and test metrics, FULL and POP100, training
minutes, steps, best step, CPU) and ``<out>/summary.md``; ``--no-train`` only summarises the finished seeds.
The test metrics are each run's single test score of the checkpoint chosen on validation: averaging them
selects nothing. The summary also gives validation FULL NDCG@10 at every step all seeds evaluated (from their
``events.jsonl``): a time budget buys more steps on a fast day than on a slow one, so two recipes with the same
step schedule are compared fairly at equal steps, not only at the end of their budgets.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bert4rec.errors import UserError, run_cli  # noqa: E402
from bert4rec.reporting import EventLog  # noqa: E402

OWNED_FLAGS = ("--seed", "--checkpoints", "--init_checkpoint")  # set by this script, per seed
NOT_COMPARED = {"checkpoints", "init_checkpoint", "progress", "stop_at_step"}
METRICS = ("NDCG@10", "HR@10", "NDCG@5", "HR@5", "HR@1", "MRR")


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--seeds {text!r}: expected comma-separated integers, e.g. --seeds 1,2,3") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise UserError(f"--seeds {text!r}: expected distinct non-negative integers, e.g. --seeds 1,2,3")
    return seeds


def check_train_flags(flags: list[str]) -> None:
    """The per-seed flags belong to this script; a typo in the others fails here, before any training."""
    for flag in flags:
        name = flag.split("=", 1)[0].lower()
        if name in OWNED_FLAGS:
            raise UserError(f"{flag.split('=', 1)[0]}: set by bench/seeds.py for each seed (use --seeds and --out)")
    expected_options(flags, 0, Path("/tmp/seed"))


def _normalised(key: str, value):
    """Paths compared resolved (a run records them as given); everything else as JSON would store it."""
    if value is not None and (key.endswith("_path") or isinstance(value, Path)):
        return str(Path(value).resolve())
    return json.loads(json.dumps(value))


def expected_options(flags: list[str], seed: int, run_dir: Path) -> dict:
    """The ``TrainOptions`` that ``trainrec.py`` would record for this seed: the CLI's own parsing, not a copy."""
    from bert4rec.cli.train import build_parser, options_from_args

    parser = build_parser()

    def refuse(message: str) -> None:
        raise UserError(f"the trainrec.py flags after --: {message}")

    parser.error = refuse  # one error line instead of argparse's usage text
    args = parser.parse_args([*flags, "--SEED", str(seed), "--CHECKPOINTS", str(run_dir)])
    options = asdict(options_from_args(args))
    return {k: _normalised(k, v) for k, v in options.items() if k not in NOT_COMPARED}


def check_finished_run(run_dir: Path, flags: list[str], seed: int) -> dict:
    """``results.json`` of a finished seed, refused when it was made with other options than the flags give."""
    results = json.loads((run_dir / "results.json").read_text())
    recorded = results.get("options") or {}
    for key, value in expected_options(flags, seed, run_dir).items():
        if key in recorded and _normalised(key, recorded[key]) != value:
            raise UserError(f"{run_dir / 'results.json'}: was trained with {key} {recorded[key]!r}, the flags give "
                            f"{value!r}; use another --out or the same flags")
    return results


def train_seed(run_dir: Path, flags: list[str], seed: int) -> None:
    command = [sys.executable, str(REPO / "trainrec.py"), *flags, "--SEED", str(seed), "--CHECKPOINTS", str(run_dir)]
    if (run_dir / "last.pdparams").is_file():
        command += ["--INIT_CHECKPOINT", str(run_dir / "last.pdparams")]
    print(f"seed {seed}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    if subprocess.run(command).returncode != 0:
        raise UserError(f"seed {seed}: trainrec.py failed (its message is above); finished seeds are kept in "
                        f"{run_dir.parent}, run the same command again to go on")


def mean_sd(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else None,
            "values": values}


def validation_by_step(run_dir: Path) -> dict[str, float]:
    """Validation FULL NDCG@10 at each evaluated step of a run (keys as JSON stores them); a step evaluated twice
    counts its last evaluation."""
    return {str(e["step"]): e["full"]["NDCG@10"] for e in EventLog(run_dir, enabled=False).events()
            if e.get("event") == "valid" and "NDCG@10" in (e.get("full") or {})}


def seed_row(seed: int, results: dict, run_dir: Path) -> dict:
    return {"seed": seed, "train_minutes": results["train_seconds"] / 60, "steps": results["steps"],
            "best_step": results["best_step"], "valid": results.get("valid") or {}, "test": results["test"],
            "cpu": (results.get("machine") or {}).get("cpu"), "valid_full_ndcg10_by_step": validation_by_step(run_dir)}


def by_step_summary(rows: list[dict]) -> dict[str, dict]:
    """Mean ± sd of validation FULL NDCG@10 at the steps every seed evaluated, in step order."""
    curves = [r["valid_full_ndcg10_by_step"] for r in rows]
    common = set(curves[0]).intersection(*curves[1:])
    return {step: mean_sd([c[step] for c in curves]) for step in sorted(common, key=int)}


def summarise(rows: list[dict]) -> dict:
    """Mean ± sd over the seeds of every metric both splits report, and of the training minutes."""
    summary = {"seeds": [r["seed"] for r in rows], "train_minutes": mean_sd([r["train_minutes"] for r in rows])}
    for split in ("valid", "test"):
        for protocol in ("full", "pop100"):
            per_seed = [r[split].get(protocol) for r in rows]
            if all(per_seed):
                summary[f"{split}_{protocol}"] = {m: mean_sd([p[m] for p in per_seed]) for m in per_seed[0]}
    summary["valid_full_ndcg10_by_step"] = by_step_summary(rows)
    return summary


def cell(stat: dict, digits: int = 4) -> str:
    sd = "" if stat["sd"] is None else f" ± {stat['sd']:.{digits}f}"
    return f"{stat['mean']:.{digits}f}{sd}"


def command_line(out: Path, seeds: list[int], flags: list[str]) -> list[str]:
    """The command that re-makes (or, with --no-train, re-summarises) exactly these seeds."""
    return ["bench/seeds.py", "--out", str(out), "--seeds", ",".join(map(str, seeds)), "--", *flags]


def markdown(command: list[str], summary: dict, rows: list[dict]) -> str:
    seeds = summary["seeds"]
    lines = [f"`python {' '.join(command)}`", "",
             "| measure | mean ± sd | " + " | ".join(f"seed {s}" for s in seeds) + " |",
             "| --- | --- |" + " --- |" * len(seeds)]
    for key, label in (("valid_full", "valid FULL"), ("test_full", "test FULL"), ("test_pop100", "test POP100")):
        for metric in METRICS:
            stat = summary.get(key, {}).get(metric)
            if stat:
                lines.append(f"| {label} {metric} | {cell(stat)} | " + " | ".join(f"{v:.4f}" for v in stat["values"])
                             + " |")
    lines.append(f"| training minutes | {cell(summary['train_minutes'], 1)} | "
                 + " | ".join(f"{r['train_minutes']:.1f} ({r['steps']:,} steps, best {r['best_step']:,})"
                              for r in rows) + " |")
    by_step = summary.get("valid_full_ndcg10_by_step") or {}
    if by_step:
        lines += ["", "Validation FULL NDCG@10 at the steps every seed evaluated:", "",
                  "| step | mean ± sd | " + " | ".join(f"seed {s}" for s in seeds) + " |",
                  "| --- | --- |" + " --- |" * len(seeds)]
        lines += [f"| {int(step):,} | {cell(stat)} | " + " | ".join(f"{v:.4f}" for v in stat["values"]) + " |"
                  for step, stat in by_step.items()]
    lines += ["", "CPU: " + ", ".join(sorted({str(r["cpu"]) for r in rows}))]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ours, flags = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="one folder per recipe; seed-<s>/ inside it")
    p.add_argument("--seeds", default="1,2,3", help="comma-separated (default: 1,2,3)")
    p.add_argument("--no-train", dest="train", action="store_false", help="only summarise the finished seeds")
    args = p.parse_args(ours)
    seeds = parse_seeds(args.seeds)
    if not flags:
        raise UserError("no trainrec.py flags: put them after --, e.g. "
                        "-- --CONFIG_PATH bert_train/sasrec_config_ml-1m.json")
    check_train_flags(flags)
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out}: is a file, not a folder")
    rows = []
    for seed in seeds:
        run_dir = args.out / f"seed-{seed}"
        if not (run_dir / "results.json").is_file():
            if not args.train:
                continue
            train_seed(run_dir, flags, seed)
        rows.append(seed_row(seed, check_finished_run(run_dir, flags, seed), run_dir))
    if not rows:
        raise UserError(f"--out {args.out}: no finished seed to summarise (run without --no-train)")
    summary = summarise(rows)
    command = command_line(args.out, summary["seeds"], flags)
    report = {"command": command, "summary": summary, "runs": rows}
    (args.out / "summary.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(command, summary, rows)
    (args.out / "summary.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    run_cli(main)
