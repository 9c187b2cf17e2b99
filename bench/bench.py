"""BERT4Rec and SASRec on CPU, measured in one run on one machine: data generation, training throughput (ours
against straightforward Paddle ports), evaluation.

    python bench/bench.py            # full run (about 25 minutes on 2 cores); writes bench/bench.json
    python bench/bench.py --quick    # a smoke run with rough numbers (about a minute)
    python bench/bench.py --raw_path /path/to/ml-1m.txt --out /tmp/bench.json

What is measured (details and results in bench/README.md):
1. data generation: ``generate_dataset`` on the ML-1M sequence file (default options: holdout valid_test,
   dupe 10) into a temporary folder, with force;
2. training throughput at batch 256 in sequences/s and predicted items/s, for BERT4Rec configs 64 and 256 and
   SASRec (``bert_train/sasrec_config_ml-1m.json``, cross-entropy over all items at every position):
   - ours: the trainer's path (its length-bucketed batches, ``train_step``, AdamW of ``make_optimizer``, fused
     CPU kernels and CPU tuning on);
   - naive: straightforward ports (``bench/naive_ports.py``: ``paddle.nn.TransformerEncoder``, every batch padded
     to 200; BERT4Rec gathers the masked positions before its output layer, as the original does; SASRec scores
     every position) in Paddle's default environment (no MKL_DEBUG_CPU_TYPE, no OMP_NUM_THREADS);
   both on the same real training sequences (``bench/samples.py``);
3. evaluation of all test users (FULL and POP100 separately) with an untrained BERT4Rec config-64 model.

Measurements run in child processes of this script (``--worker ours|naive --jobs ...``, ``bench/jobs.py``),
because thread and MKL settings must be fixed before Paddle is imported: the naive child gets the environment
the user started us with, minus our CPU settings. A full run gives every measurement its own child; ``--quick``
runs one child per environment (fewer Paddle start-ups). Each child prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The environment as the user started us, before anything imports ``bert4rec`` (which writes CPU defaults into
# os.environ): the naive child must get Paddle's defaults, not ours.
ORIGINAL_ENV = dict(os.environ)

REPO_ROOT = Path(__file__).resolve().parents[1]
for _path in (REPO_ROOT, Path(__file__).resolve().parent):  # the package, and bench/'s own modules
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from machine import cpu_info, cpu_snapshot, load_average, other_cores, parse_lscpu  # noqa: E402,F401
from samples import write_sample, write_window_sample  # noqa: E402  (numpy only: no bert4rec, no Paddle yet)

DEFAULT_RAW = REPO_ROOT.parent / "shared" / "data" / "ml-1m-sas" / "ml-1m.txt"
DEFAULT_OUT = REPO_ROOT / "bench" / "bench.json"
CONFIGS = {"64": REPO_ROOT / "bert_train" / "bert_config_ml-1m_64.json",
           "256": REPO_ROOT / "bert_train" / "bert_config_ml-1m_256.json",
           "sasrec": REPO_ROOT / "bert_train" / "sasrec_config_ml-1m.json",
           "gru4rec": REPO_ROOT / "bert_train" / "gru4rec_config_session.json"}
TUNING_VARS = ("MKL_DEBUG_CPU_TYPE", "OMP_NUM_THREADS")  # what bert4rec.cpu sets; absent for the naive run
REPORTED_VARS = ("OMP_NUM_THREADS", "MKL_DEBUG_CPU_TYPE", "MKL_NUM_THREADS", "BERT4REC_CPU_TUNING",
                 "BERT4REC_FUSED", "BERT4REC_MALLOC_TUNING", "PADDLE_LOCAL_SIZE")
MODELS = ("64", "256", "sasrec", "gru4rec")
TRAIN_KEYS = tuple(f"{impl}_{m}" for m in MODELS for impl in ("ours", "naive"))
MODEL_LABEL = {"64": "BERT4Rec 64", "256": "BERT4Rec 256", "sasrec": "SASRec ce", "gru4rec": "GRU4Rec s-par"}
# Per mode: timed steps (after ``warmup`` untimed ones) and the batch of every training measurement. A naive
# step at batch 256 takes several seconds to a minute on 2 cores, so the quick mode times the naive ports on 16
# of the 256 rows of each batch (every row is padded to 200, so their cost per sequence depends little on the
# batch); the full mode uses 256 everywhere.
PLANS = {
    "quick": {
        "ours_64": {"steps": 4, "warmup": 1, "batch": 256},
        "naive_64": {"steps": 1, "warmup": 1, "batch": 16},
        "ours_256": {"steps": 1, "warmup": 1, "batch": 256},
        "naive_256": {"steps": 1, "warmup": 1, "batch": 16},
        "ours_sasrec": {"steps": 2, "warmup": 1, "batch": 256},
        "naive_sasrec": {"steps": 1, "warmup": 1, "batch": 16},
        "ours_gru4rec": {"steps": 20, "warmup": 2, "batch": 256},
        "naive_gru4rec": {"steps": 20, "warmup": 2, "batch": 256},
        "eval": {"repeats": 1},
    },
    "full": {
        "ours_64": {"steps": 40, "warmup": 3, "batch": 256},
        "naive_64": {"steps": 8, "warmup": 1, "batch": 256},
        "ours_256": {"steps": 20, "warmup": 3, "batch": 256},
        "naive_256": {"steps": 4, "warmup": 1, "batch": 256},
        "ours_sasrec": {"steps": 30, "warmup": 3, "batch": 256},
        "naive_sasrec": {"steps": 4, "warmup": 1, "batch": 256},
        "ours_gru4rec": {"steps": 300, "warmup": 10, "batch": 256},
        "naive_gru4rec": {"steps": 300, "warmup": 10, "batch": 256},
        "eval": {"repeats": 3},
    },
}
WORKER_TIMEOUT_S = 3 * 3600
BUSY_WARNING_CORES = 0.25  # other processes' average use above which the table warns that numbers are low
RESULT_KEY = "bench_job"


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ pure helpers


def worker_env(kind: str, base: dict[str, str]) -> dict[str, str]:
    """The environment of a child: ours with CPU tuning and fused kernels on (a value the user set for
    OMP_NUM_THREADS or MKL_DEBUG_CPU_TYPE is kept, as the trainer keeps it); naive with Paddle's defaults."""
    env = dict(base)
    if kind == "naive":
        for var in (*TUNING_VARS, "BERT4REC_FUSED"):
            env.pop(var, None)
        env["BERT4REC_CPU_TUNING"] = "0"
    elif kind == "ours":
        env["BERT4REC_CPU_TUNING"] = "1"
        env["BERT4REC_FUSED"] = "1"
    else:
        raise ValueError(f"unknown worker kind {kind!r}")
    return env


def reported_env(env: dict[str, str]) -> dict[str, str | None]:
    return {var: env.get(var) for var in REPORTED_VARS}


def format_jobs(jobs: dict[str, dict]) -> str:
    """``{"ours_64": {"steps": 3, ...}, "eval": {...}}`` -> ``ours_64:steps=3:...,eval:repeats=1``."""
    return ",".join(":".join([name, *(f"{k}={v}" for k, v in spec.items())]) for name, spec in jobs.items())


def parse_jobs(text: str) -> dict[str, dict[str, int]]:
    """The inverse of ``format_jobs``."""
    jobs = {}
    for item in text.split(","):
        name, *pairs = item.split(":")
        spec = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep:
                raise ValueError(f"bad job spec {item!r}")
            spec[key] = int(value)
        jobs[name] = spec
    return jobs


def parse_worker_output(stdout: str) -> dict[str, dict]:
    """Every JSON line carrying ``RESULT_KEY`` in a child's stdout, by job name (other output is skipped)."""
    results = {}
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and RESULT_KEY in value:
            results[value[RESULT_KEY]] = value
    return results


def setting_source(job: dict, var: str) -> str:
    """A worker's value of ``var`` and who set it: the user, bert4rec.cpu, or Paddle (at import)."""
    value = (job.get("env_after_paddle_import") or {}).get(var)
    if value is None:
        return "unset"
    if (job.get("env") or {}).get(var) == value:
        return f"{value} (user)"
    if (job.get("cpu_settings_applied") or {}).get(var) == value:
        return f"{value} (bert4rec)"
    return f"{value} (Paddle's default)"


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def fmt(value, spec: str = ",.0f", missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def results_table(result: dict) -> str:
    """The human-readable summary printed at the end of a run."""
    cpu = result["cpu"]
    avx = ("avx2" if cpu["avx2"] else "no avx2") + (", avx512" if cpu["avx512"] else ", no avx512")
    load = result["load_average"]
    lines = [
        f"BERT4Rec / SASRec CPU benchmark ({result['mode']} mode), {result['date']}",
        f"CPU: {cpu['model_name']} (family {cpu['family']} model {cpu['model']}, {avx}), "
        f"{cpu['usable_cores']} usable cores; paddle {result['paddle_version']}",
        f"load average (1/5/15 min): start {load['start']}, end {load['end']}; other processes kept "
        f"{fmt(result.get('other_processes_cores'), '.2f')} cores busy on average during the run",
    ]
    others = result.get("other_processes_cores")
    if others is not None and others > BUSY_WARNING_CORES:
        lines.append(f"WARNING: the machine was shared (other processes used {others:.2f} of {cpu['cpus']} cores): "
                     "these numbers are lower than it can do; see the 'others' column")
    lines.append("")
    gen = result["gen_data_seconds"]
    lines.append(f"{'data generation (ML-1M, valid_test, dupe 10)':<46}"
                 + (f"{gen:>8.2f} s" if gen is not None else f"  skipped: {result['gen_data']['skipped']}"))
    lines.append("")
    lines.append(f"{'training':<24}{'batch':>6}{'seq/s':>9}{'targets/s':>10}{'steps':>6}{'others':>7}  environment")
    seq, items = result["train_seq_per_s"], result["masked_items_per_s"]
    for config in MODELS:
        for impl in ("ours", "naive"):
            key = f"{impl}_{config}"
            job = result["jobs"].get(key) or {}
            settings = " ".join(f"{var}={setting_source(job, var)}" for var in TUNING_VARS[::-1])
            if impl == "ours" and job:
                fused = job.get("fused")
                settings += " fused=" + ("?" if fused is None else "on" if fused else "OFF")
            if job.get("error"):
                settings = f"FAILED: {job['error']}"
            lines.append(f"  {impl + ' ' + MODEL_LABEL[config]:<22}{fmt(job.get('batch'), 'd'):>6}"
                         f"{fmt(seq.get(key)):>9}{fmt(items.get(key)):>10}{fmt(job.get('steps'), 'd'):>6}"
                         f"{fmt(job.get('other_processes_cores'), '.2f'):>7}  {settings}")
        speedup = result[f"speedup_{config}"]
        lines.append(f"  {'speedup ' + MODEL_LABEL[config]:<28}{fmt(speedup, '.2f') + 'x':>9}")
    lines.append("")
    ev = result["jobs"].get("eval") or {}
    if ev.get("error"):
        lines.append(f"evaluation: FAILED: {ev['error']}")
    else:
        lines.append(f"evaluation of {ev.get('num_users', '?')} test users (untrained BERT4Rec config 64, batch "
                     f"{ev.get('batch', '?')}, median of {ev.get('repeats', '?')})")
    if ev.get("other_processes_cores") is not None:
        lines[-1] += f"; others busy on {ev['other_processes_cores']:.2f} cores"
    lines.append(f"  {'FULL (rank among all items)':<44}{fmt(result['eval_full_seconds'], '.2f'):>8} s")
    lines.append(f"  {'POP100 (rank among 100 sampled negatives)':<44}{fmt(result['eval_pop100_seconds'], '.2f'):>8} s")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ child side


def run_worker(args) -> int:
    """Child process: run the jobs in ``args.jobs`` and print one JSON line per job."""
    from jobs import cpu_defaults, run_job

    env_given = reported_env(dict(os.environ))
    applied = cpu_defaults() if args.worker == "ours" else {}
    if args.worker == "ours":
        from bert4rec.cpu import import_paddle

        paddle = import_paddle()  # without its start-up noise
    else:
        import paddle  # the naive child: first, in Paddle's default environment

    paddle.set_device("cpu")
    env_after = reported_env(dict(os.environ))  # Paddle sets OMP_NUM_THREADS=1 when it is unset
    ctx = {"work_dir": args.work_dir, "data_dir": args.data_dir}
    status = 0
    for name, spec in parse_jobs(args.jobs).items():
        load_start, started, snap = load_average(), time.perf_counter(), cpu_snapshot()
        result = run_job(name, spec, args.worker, ctx, CONFIGS)
        status = 1 if "error" in result else status
        result.update({
            RESULT_KEY: name,
            "paddle_version": paddle.__version__,
            "env": env_given,
            "env_after_paddle_import": env_after,
            "cpu_settings_applied": applied,
            "affinity_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "load_average_start": load_start,
            "load_average_end": load_average(),
            "other_processes_cores": other_cores(snap, cpu_snapshot()),
            "job_seconds": round(time.perf_counter() - started, 2),
        })
        print(json.dumps(result), flush=True)
    return status


# ------------------------------------------------------------------------------------------ parent side


def spawn(kind: str, jobs: dict[str, dict], work_dir: Path, data_dir: Path) -> dict[str, dict]:
    """Run ``jobs`` in one child process with the ``kind`` environment; a result (or ``error``) per job."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--jobs", format_jobs(jobs),
           "--work_dir", str(work_dir), "--data_dir", str(data_dir)]
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=worker_env(kind, ORIGINAL_ENV), cwd=REPO_ROOT, stdout=subprocess.PIPE,
                              text=True, timeout=WORKER_TIMEOUT_S)
        results, problem = parse_worker_output(proc.stdout), f"child exited with status {proc.returncode}"
    except subprocess.TimeoutExpired:
        results, problem = {}, f"child timed out after {WORKER_TIMEOUT_S} s"
    for name in jobs:
        results.setdefault(name, {"error": f"{problem} (see its messages above)"})
    if len(jobs) == 1:
        results[next(iter(jobs))]["process_seconds"] = round(time.perf_counter() - started, 2)
    return results


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad flags as a one-line ``UserError`` (exit code 2, no usage dump)."""

    def error(self, message: str):  # type: ignore[override]
        from bert4rec.errors import UserError

        raise UserError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="bench/bench.py", allow_abbrev=False,
                description="Measure data generation, training throughput (ours vs naive Paddle ports) of "
                            "BERT4Rec and SASRec, and evaluation time on ML-1M, in one run on this machine.")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: few steps, the naive port on 32-row batches, one evaluation each")
    p.add_argument("--raw_path", type=Path, default=None,
                   help=f"the ML-1M 'user item' sequence file to generate the data from (default: {DEFAULT_RAW})")
    p.add_argument("--data_dir", type=Path, default=None,
                   help="benchmark on this already generated dataset (gen_data_fin.py output) instead; data "
                        "generation is then not timed")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the JSON results")
    # internal: the child processes
    p.add_argument("--worker", choices=("ours", "naive"), help=argparse.SUPPRESS)
    p.add_argument("--jobs", help=argparse.SUPPRESS)
    p.add_argument("--work_dir", type=Path, help=argparse.SUPPRESS)
    return p


def resolve_data(args, work: Path) -> tuple[Path, dict]:
    """The dataset to benchmark on: generated (and timed) from the raw file, or ``--data_dir``."""
    from bert4rec.errors import UserError

    if args.data_dir is not None:
        if args.raw_path is not None:
            raise UserError("give --raw_path (generate and time the data) or --data_dir (use generated data), "
                            "not both")
        missing = [f for f in ("train.txt", "test.txt", "vocab.txt") if not (args.data_dir / f).is_file()]
        if missing:
            raise UserError(f"--data_dir {args.data_dir}: {missing[0]} not found (generate the data with "
                            "`python bert_train/gen_data_fin.py`)")
        log(f"data generation skipped: using the data in {args.data_dir}")
        return args.data_dir, {"seconds": None, "skipped": f"--data_dir {args.data_dir} given"}
    raw = args.raw_path if args.raw_path is not None else DEFAULT_RAW
    if not raw.is_file():
        if args.raw_path is not None:
            raise UserError(f"--raw_path {raw}: file not found")
        raise UserError(f"ML-1M data not found at {raw}, so data generation cannot be timed and there are no "
                        "training instances to benchmark on: pass --raw_path FILE (the ML-1M 'user item' "
                        "sequence file) or --data_dir DIR (data generated by bert_train/gen_data_fin.py)")
    from bert4rec.data import GenerateOptions, generate_dataset

    out = work / "ml-1m"
    log(f"generating the ML-1M data from {raw} (default options, force) into {out}")
    start = time.perf_counter()
    stats = generate_dataset(GenerateOptions(raw_path=raw, output_dir=out, force=True), progress=False,
                             log=lambda m: log(str(m)))
    seconds = round(time.perf_counter() - start, 3)
    log(f"  {seconds:.2f} s, {stats['num_train_instances']} training instances")
    opts = stats.get("options", {})
    return out, {"seconds": seconds, "raw_path": str(raw), "stages_seconds": stats.get("timings_seconds"),
                 "num_users": stats["num_users"], "num_items": stats["num_items"],
                 "num_train_instances": stats["num_train_instances"],
                 "options": {k: opts.get(k) for k in ("holdout", "dupe_factor", "max_seq_length")}}


def check_vocab(data_dir: Path) -> None:
    """The configs are for ML-1M (3,420 tokens); another dataset would fail inside the children."""
    from bert4rec.data import load_vocab
    from bert4rec.errors import UserError
    from bert4rec.models import load_config

    size = load_vocab(data_dir / "vocab.txt").size
    for name, path in CONFIGS.items():
        if load_config(path).vocab_size not in ("auto", size):
            raise UserError(f"{data_dir / 'vocab.txt'} has {size} tokens but config {name} ({path}) expects "
                            f"{load_config(path).vocab_size}: the benchmark is for ML-1M")


def run_benchmark(args) -> int:
    from bert4rec.errors import UserError

    mode = "quick" if args.quick else "full"
    if args.out.is_dir():
        raise UserError(f"--out {args.out}: is a directory")
    plan = PLANS[mode]
    load_start, snap = load_average(), cpu_snapshot(children=True)
    log(f"{mode} mode; load average {load_start} on {os.cpu_count()} CPUs")
    jobs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bert4rec-bench-") as tmp:
        work = Path(tmp)
        data_dir, gen = resolve_data(args, work)
        check_vocab(data_dir)
        log("choosing the training batches")
        def most(models: tuple[str, ...], kind: str) -> int:
            return max(plan[f"{impl}_{m}"][kind] for m in models for impl in ("ours", "naive"))

        bert, sas = ("64", "256"), ("sasrec",)  # GRU4Rec steps through the events of SASRec's sampled windows
        sample = {"bert4rec": write_sample(data_dir, work / "sample.npz", most(bert, "steps"), most(bert, "warmup")),
                  "sasrec": write_window_sample(data_dir, work / "windows.npz", most(sas, "steps"),
                                                most(sas, "warmup"))}
        for key in TRAIN_KEYS:
            impl, config = key.split("_")
            spec = plan[key]
            env = "Paddle defaults" if impl == "naive" else "CPU tuning, fused kernels"
            log(f"planned: {impl} {MODEL_LABEL[config]}, batch {spec['batch']}: {spec['warmup']} warm-up + "
                f"{spec['steps']} timed steps ({env})")
        log(f"planned: evaluation of every test user, FULL then POP100, {plan['eval']['repeats']} run(s) each")
        if mode == "quick":  # one child per environment: fewer Paddle start-ups
            groups = [("ours", {k: plan[k] for k in (*TRAIN_KEYS[::2], "eval")}),
                      ("naive", {k: plan[k] for k in TRAIN_KEYS[1::2]})]
        else:  # every measurement in its own fresh process, ours and naive of a config one after the other
            groups = [(k.split("_")[0], {k: plan[k]}) for k in TRAIN_KEYS] + [("ours", {"eval": plan["eval"]})]
        for kind, group in groups:
            log(f"running {', '.join(group)} in a child process ({kind} environment)")
            for name, result in spawn(kind, group, work, data_dir).items():
                jobs[name] = result
                if "error" in result:
                    log(f"  {name}: FAILED: {result['error']}")
                elif name == "eval":
                    log(f"  eval: FULL {result['full_seconds']:.2f} s, POP100 {result['pop100_seconds']:.2f} s")
                else:
                    log(f"  {name}: {result['seq_per_s']:.1f} seq/s, {result['masked_items_per_s']:.0f} predicted "
                        f"items/s (other processes busy on {result['other_processes_cores']} cores)")
    seq = {k: jobs[k].get("seq_per_s") for k in TRAIN_KEYS}
    items = {k: jobs[k].get("masked_items_per_s") for k in TRAIN_KEYS}
    ev = jobs["eval"]
    paddle_versions = {j.get("paddle_version") for j in jobs.values()} - {None}
    result = {
        "mode": mode,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join(["python", *sys.argv]),
        "cpu": cpu_info(ORIGINAL_ENV),
        "paddle_version": ", ".join(sorted(paddle_versions)) or None,
        "python_version": platform.python_version(),
        "load_average": {"start": load_start, "end": load_average()},
        "other_processes_cores": other_cores(snap, cpu_snapshot(children=True)),
        "gen_data_seconds": gen["seconds"],
        "gen_data": gen,
        "train_seq_per_s": seq,
        "masked_items_per_s": items,
        **{f"speedup_{m}": ratio(seq[f"ours_{m}"], seq[f"naive_{m}"]) for m in MODELS},
        "batch_size": {k: plan[k]["batch"] for k in TRAIN_KEYS},
        "eval_full_seconds": ev.get("full_seconds"),
        "eval_pop100_seconds": ev.get("pop100_seconds"),
        "sample": sample,
        "plan": plan,
        "jobs": jobs,
        "environment_at_start": reported_env(ORIGINAL_ENV),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(results_table(result))
    print(f"\nresults written to {args.out}")
    failed = [k for k, j in jobs.items() if "error" in j]
    if failed:
        log(f"failed measurements: {', '.join(failed)}")
        return 1
    return 0


def main() -> int:
    args = build_parser().parse_args()
    if args.worker:
        return run_worker(args)
    return run_benchmark(args)


if __name__ == "__main__":
    if "--worker" in sys.argv:  # a child: nothing may import bert4rec before it decides (naive: Paddle first)
        sys.exit(main())
    from bert4rec.errors import run_cli

    run_cli(main)
