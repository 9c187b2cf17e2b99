#!/usr/bin/env python
"""Every stage of the toolkit at growing sizes: rows 1 M -> 5 M -> 20 M, catalogues 3.4 k -> 27 k -> 1 M items.

    python bench/scale.py                                   # every size, every stage (~25 min on 2 cores)
    python bench/scale.py --sizes s1m,ml20m --stages generate,evaluate --work /tmp/scale

The data are ``bench/synthetic.py`` logs (string ids, timestamps, an ML-20M-like long tail and a learnable item
graph), so no MovieLens file is needed. Each stage runs in a process of its own, so its peak RSS is its own:

* ``synthetic``: writing the CSV (not a toolkit stage; listed for completeness);
* ``generate``: ``gen_data_fin.py --raw_path FILE.csv --dupe_factor 0`` (what the trainer's dynamic masking reads);
* ``train:<model>``: ``--steps`` training steps through the trainer (``bert4rec.train.Trainer``) with the ML-1M
  configs (SASRec ``ce`` and ``sampled_ce`` with its default 3,000 uniform negatives; BERT4Rec), batch 128, MAX_LEN 200;
  sequences/s is the median of the trainer's 10-step windows after the first;
* ``evaluate``: FULL + POP100 of the test users (all of them; ``--catalogue_users`` of them at 1 M items) by the
  one evaluation loop, with the first trained model's weights;
* ``recommend``: ``recommend.py --all`` (at 1 M items: the same code for ``--catalogue_users`` users);
* ``export``: ``export.py`` and the exported model's single-request latency (Paddle Inference, 100 requests).

Writes ``results/bench/scale-<date>.json`` (one row per stage and size: ``preset``, ``users``, ``items``,
``interactions``, ``stage``, ``seconds``, ``peak_rss_mb`` and a rate) and the Markdown table next to it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

SIZES = {  # users, items, interactions
    "tiny": (300, 800, 30_000),               # a smoke test of the script itself (tests/test_scale.py)
    "ml1m": (6_040, 3_416, 1_000_000),        # ML-1M's shape
    "s1m": (6_925, 26_744, 1_000_000),        # ML-20M's catalogue, 1/20 of its users and rows
    "s5m": (34_623, 26_744, 5_000_000),
    "ml20m": (138_493, 26_744, 20_000_000),   # ML-20M's shape (bench/synthetic.py --preset ml20m)
    "catalog1m": (300_000, 1_000_000, 30_000_000),
}
DEFAULT_SIZES = ("ml1m", "s1m", "s5m", "ml20m", "catalog1m")
MODELS = {  # name: (config in bert_train/, config keys set over it)
    "sasrec_ce": ("sasrec_config_ml-1m.json", {}),
    "sasrec_sampled_ce": ("sasrec_config_ml-1m.json", {"loss": "sampled_ce"}),
    "bert4rec": ("bert_config_ml-1m_64_d01.json", {}),
}
BIG_CATALOGUE = 200_000  # from here on: full-softmax models are not run, evaluation/recommending take a sample
SKIPPED_AT_1M = {  # the full softmax works at any size (chunked, memory flat) but costs items x positions
    "sasrec_ce": "full softmax over 1 M items at ~19 k positions a batch: ~10 TFLOP a step (~100 s on 2 cores)",
    "bert4rec": "full softmax over 1 M items at ~4 k masked positions a batch: ~2 TFLOP a step (~20 s on 2 cores)",
}
STAGES = ("synthetic", "generate", "train", "evaluate", "recommend", "export")


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: kilobytes


# ------------------------------------------------------------------------------------- the stages (child side)


def stage_synthetic(spec: dict) -> dict:
    import synthetic

    users, items, rows = spec["sizes"]
    code = synthetic.main(["--users", str(users), "--items", str(items), "--interactions", str(rows), "--seed", "0",
                           "--output", spec["csv"], "--force", "--quiet"])
    return {"ok": code == 0, "count": rows, "unit": "rows/s"}


def stage_generate(spec: dict) -> dict:
    from bert4rec.cli.gen import main

    code = main(["--raw_path", spec["csv"], "--output_dir", spec["data"], "--dupe_factor", "0", "--no_progress",
                 "--force"])
    return {"ok": code == 0, "count": spec["sizes"][2], "unit": "rows/s"}


def stage_train(spec: dict) -> dict:
    from bert4rec.config import TrainOptions
    from bert4rec.rundir import claim_run_dir
    from bert4rec.train import Trainer, setup_device, validate_options

    config_name, overrides = MODELS[spec["model"]]
    run = Path(spec["run"])
    shutil.rmtree(run, ignore_errors=True)  # the benchmark's own work folder
    opts = TrainOptions.for_data(Path(spec["data"]), REPO / "bert_train" / config_name, run, valid_path=None,
                                 num_train_steps=spec["steps"], eval_every=spec["steps"], progress=False,
                                 config_overrides=overrides)
    config = validate_options(opts)
    setup_device(opts.device)
    with claim_run_dir(run):
        trainer = Trainer(opts, config, 0, 1, None)
        trainer.model.prepare(trainer.data)
        trainer.train_steps()  # ends with the checkpoint of the last step (no validation set: nothing scored)
    windows = [e["seq_per_s"] for e in map(json.loads, (run / "events.jsonl").read_text().splitlines())
               if e["event"] == "train"][1:]  # the first window holds the first steps' allocations
    # a run folder load_run reads (the weights of the last step), for the evaluate/recommend/export stages
    (run / "results.json").write_text(json.dumps({
        "model": trainer.config.MODEL, "config": trainer.config.to_dict(), "options": opts.to_json(),
        "note": f"bench/scale.py: {spec['steps']} training steps for speed; never validated or tested"}))
    state = trainer.state
    rate = statistics.median(windows) if windows else state.sequences / state.train_seconds
    return {"ok": True, "rate": round(rate, 1), "unit": "sequences/s",
            "steps": state.step, "train_seconds": round(state.train_seconds, 1),
            "parameters": trainer.model.num_parameters()}


def eval_subset(test, users: int | None):
    """The first ``users`` users of an evaluation set (all when None)."""
    from bert4rec.data.files import EvalSet

    if users is None or users >= len(test):
        return test
    end = int(test.history_offsets[users])
    return EvalSet(users=test.users[:users], history=test.history[:end],
                   history_offsets=test.history_offsets[: users + 1], targets=test.targets[:users],
                   negatives=test.negatives[:users])


def stage_evaluate(spec: dict) -> dict:
    from bert4rec.evaluate import evaluate
    from bert4rec.trained import load_run

    run = load_run(Path(spec["run"]))
    test = eval_subset(run.test_set(), spec.get("users"))
    started = time.perf_counter()
    metrics = evaluate(run.model.predict, test, run.model.num_items, 256)
    seconds = time.perf_counter() - started
    return {"ok": True, "rate": round(len(test) / seconds, 1), "unit": "users/s", "scored_users": len(test),
            "evaluation_seconds": round(seconds, 1), "full_ndcg10": round(metrics["full"]["NDCG@10"], 4)}


def stage_recommend(spec: dict) -> dict:
    out = Path(spec["run"]) / "recommendations.csv"
    if spec.get("users") is None:
        from bert4rec.cli.recommend import main

        code = main(["--CHECKPOINTS", spec["run"], "--all", "--output", str(out), "--k", "10"])
        return {"ok": code == 0, "count": spec["sizes"][0], "unit": "users/s", "scored_users": "all"}
    from bert4rec.recommending import recommendations
    from bert4rec.trained import load_run

    run = load_run(Path(spec["run"]))
    users = run.catalogue().user_original[1: spec["users"] + 1]
    frame = recommendations(run, users=users, k=10, progress=False)
    frame.to_csv(out, index=False)
    return {"ok": len(frame) == 10 * len(users), "count": len(users), "unit": "users/s", "scored_users": len(users)}


def stage_export(spec: dict) -> dict:
    import numpy as np

    from bert4rec.cli.export import main
    from bert4rec.cpu import describe_machine
    from bert4rec.export import Predictor
    from bert4rec.trained import load_run

    exported = Path(spec["run"]) / "exported"
    shutil.rmtree(exported, ignore_errors=True)
    started = time.perf_counter()
    code = main(["--CHECKPOINTS", spec["run"], "--output", str(exported), "--k", "10"])
    export_seconds = time.perf_counter() - started
    test = load_run(Path(spec["run"])).test_set()
    predictor = Predictor(exported, threads=describe_machine()["cores"])
    rng = np.random.default_rng(0)
    requests = [list(test.user_history(int(i))) for i in rng.choice(len(test), size=min(100, len(test)),
                                                                    replace=False)]
    predictor.recommend(requests[:1])
    latencies = []
    for history in requests:
        t = time.perf_counter()
        predictor.recommend([history])
        latencies.append((time.perf_counter() - t) * 1000)
    return {"ok": code == 0, "unit": "", "export_seconds": round(export_seconds, 1),
            "latency_ms_p50": round(float(np.percentile(latencies, 50)), 2),
            "latency_ms_p99": round(float(np.percentile(latencies, 99)), 2)}


def child(spec: dict) -> None:
    """Run one stage in this process and print its row (timed from here, so interpreter start is excluded)."""
    if spec["stage"] != "synthetic":
        import bert4rec  # noqa: F401  (CPU settings before Paddle loads)
    started = time.perf_counter()
    out = globals()[f"stage_{spec['stage']}"](spec)
    seconds = time.perf_counter() - started
    out["seconds"] = round(seconds, 1)
    if "count" in out:
        out["rate"] = round(out.pop("count") / seconds, 1)
    out["peak_rss_mb"] = peak_rss_mb()
    print("ROW " + json.dumps(out), flush=True)


# --------------------------------------------------------------------------------------------- the driver


def plan(size: str, stages: tuple[str, ...], work: Path, steps: int, catalogue_users: int) -> list[dict]:
    """The stage specs of one size, in order (the first trained model serves evaluate/recommend/export)."""
    users, items, rows = SIZES[size]
    base = {"preset": size, "sizes": [users, items, rows], "csv": str(work / f"{size}.csv"),
            "data": str(work / size / "data")}
    big = items >= BIG_CATALOGUE
    sample = catalogue_users if big else None
    models = [m for m in MODELS if not (big and m in SKIPPED_AT_1M)]
    run = str(work / size / f"run_{models[0]}")
    specs = []
    for stage in stages:
        if stage == "train":
            specs += [{**base, "stage": "train", "model": m, "steps": steps, "run": str(work / size / f"run_{m}")}
                      for m in models]
            specs += [{**base, "stage": "train", "model": m, "skipped": SKIPPED_AT_1M[m]}
                      for m in MODELS if big and m in SKIPPED_AT_1M]
        else:
            specs.append({**base, "stage": stage, "run": run, "users": sample})
    return specs


def run_stage(spec: dict) -> dict:
    row = {"preset": spec["preset"], "users": spec["sizes"][0], "items": spec["sizes"][1],
           "interactions": spec["sizes"][2], "stage": spec["stage"] + (f":{spec['model']}" if "model" in spec else "")}
    if "skipped" in spec:
        return {**row, "skipped": spec["skipped"]}
    from machine import cpu_snapshot, other_cores  # bench/machine.py: was anything else running meanwhile?

    started, before = time.perf_counter(), cpu_snapshot(children=True)
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
    busy = other_cores(before, cpu_snapshot(children=True))
    found = [line for line in proc.stdout.splitlines() if line.startswith("ROW ")]
    if proc.returncode != 0 or not found:
        raise SystemExit(f"error: {row['stage']} at {spec['preset']} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(found[-1][4:])
    return {**row, **out, "process_seconds": round(time.perf_counter() - started, 1),
            "other_cores_busy": round(busy, 2) if busy is not None else None}


def markdown(rows: list[dict], machine: str) -> str:
    head = "| size | users | items | rows | stage | seconds | peak RSS | rate | notes |\n|" + " --- |" * 9
    lines = [f"Measured by `python bench/scale.py` on {machine}.", "", head]
    for r in rows:
        if "skipped" in r:
            cells = ["–", "–", "–", f"not run: {r['skipped']}"]
        else:
            notes = {k: r[k] for k in ("steps", "scored_users", "full_ndcg10", "export_seconds", "latency_ms_p50",
                                       "latency_ms_p99") if k in r}
            rate = f"{r['rate']:,} {r['unit']}" if r.get("rate") is not None else "–"
            cells = [f"{r['seconds']:.1f}", f"{r['peak_rss_mb'] / 1024:.2f} GB", rate,
                     ", ".join(f"{k} {v}" for k, v in notes.items())]
        lines.append(f"| {r['preset']} | {r['users']:,} | {r['items']:,} | {r['interactions']:,} | {r['stage']} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default=",".join(DEFAULT_SIZES), help=f"comma-separated, of {', '.join(SIZES)}")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {', '.join(STAGES)}")
    p.add_argument("--work", type=Path, default=Path("/tmp/bert4rec-scale"), help="where data and runs go")
    p.add_argument("--steps", type=int, default=60, help="training steps per model (default: %(default)s)")
    p.add_argument("--catalogue_users", type=int, default=10_000,
                   help="users evaluated / recommended at 1 M items (default: %(default)s)")
    p.add_argument("--out", type=Path, help="the JSON to write (default: results/bench/scale-<date>.json)")
    p.add_argument("--update", action="store_true",
                   help="keep the other rows of an existing --out file, replacing those of the stages run now")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(json.loads(args.child))
        return 0
    sizes, stages = args.sizes.split(","), tuple(args.stages.split(","))
    for name, known, flag in ((sizes, SIZES, "--sizes"), (stages, STAGES, "--stages")):
        bad = [x for x in name if x not in known]
        if bad:
            raise SystemExit(f"error: {flag}: unknown {bad[0]!r} (known: {', '.join(known)})")
    from bert4rec.cpu import describe_machine  # the CPU, named next to every number

    machine = describe_machine()
    out = args.out or REPO / "results" / "bench" / f"scale-{datetime.date.today().isoformat()}.json"
    rows: list[dict] = json.loads(out.read_text())["rows"] if args.update and out.is_file() else []
    args.work.mkdir(parents=True, exist_ok=True)
    for size in sizes:
        for spec in plan(size, stages, args.work, args.steps, args.catalogue_users):
            row = run_stage(spec)
            same = [i for i, r in enumerate(rows) if (r["preset"], r["stage"]) == (row["preset"], row["stage"])]
            if same:
                rows[same[0]] = row
            else:
                rows.append(row)
            print(json.dumps(row), flush=True)
            rows.sort(key=lambda r: list(SIZES).index(r["preset"]))  # by size; stages keep their order
            out.parent.mkdir(parents=True, exist_ok=True)  # written after every stage: a long run keeps its rows
            out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
            out.with_suffix(".md").write_text(markdown(rows, machine.get("cpu", "?")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
