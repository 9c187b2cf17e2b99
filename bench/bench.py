"""BERT4Rec on CPU, measured in one run on one machine: data generation, training throughput, evaluation.

    python bench/bench.py            # full run (about 20 minutes on 2 cores); writes bench/bench.json
    python bench/bench.py --quick    # a smoke run with rough numbers (about a minute)
    python bench/bench.py --raw_path /path/to/ml-1m.txt --out /tmp/bench.json

What is measured (details and results in bench/README.md):
1. data generation: ``generate_dataset`` on the ML-1M sequence file (default options: holdout valid_test,
   dupe 10) into a temporary folder, with force;
2. training throughput at batch 256 for configs 64 and 256, in sequences/s and masked items/s:
   - ours: the trainer's path (length-bucketed batches of ``epoch_batches``, ``collate``, ``train_step``, AdamW
     of ``make_optimizer``, fused CPU kernels and CPU tuning on);
   - naive: a straightforward port (``paddle.nn.TransformerEncoder``, every batch padded to 200, logits at all
     200 positions), in Paddle's default environment (no MKL_DEBUG_CPU_TYPE, no OMP_NUM_THREADS);
   both on the same real training instances;
3. evaluation of all test users (FULL and POP100 separately) with an untrained config-64 model.

Measurements run in child processes of this script (``--worker ours|naive --jobs ...``), because thread and MKL
settings must be fixed before Paddle is imported: the naive child gets the environment the user started us with,
minus our CPU settings. A full run gives every measurement its own child; ``--quick`` runs one child per
environment (fewer Paddle start-ups). Each child prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

# The environment as the user started us, before anything imports ``bert4rec`` (which writes CPU defaults into
# os.environ): the naive child must get Paddle's defaults, not ours.
ORIGINAL_ENV = dict(os.environ)

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

DEFAULT_RAW = REPO_ROOT.parent / "shared" / "data" / "ml-1m-sas" / "ml-1m.txt"
DEFAULT_OUT = REPO_ROOT / "bench" / "bench.json"
CONFIGS = {"64": REPO_ROOT / "bert_train" / "bert_config_ml-1m_64.json",
           "256": REPO_ROOT / "bert_train" / "bert_config_ml-1m_256.json"}
TUNING_VARS = ("MKL_DEBUG_CPU_TYPE", "OMP_NUM_THREADS")  # what bert4rec.cpu sets; absent for the naive run
REPORTED_VARS = ("OMP_NUM_THREADS", "MKL_DEBUG_CPU_TYPE", "MKL_NUM_THREADS", "BERT4REC_CPU_TUNING",
                 "BERT4REC_FUSED", "BERT4REC_MALLOC_TUNING", "PADDLE_LOCAL_SIZE")
TRAIN_KEYS = ("ours_64", "naive_64", "ours_256", "naive_256")
BATCH_SIZE = 256
MAX_LEN = 200
SEED = 42
EVAL_BATCH_SIZE = 256
# Per mode: timed steps (after ``warmup`` untimed ones) and the batch of every training measurement. A naive
# step at batch 256 takes ~15 s (config 64) to ~60 s (config 256) on 2 cores, so the quick mode times the naive
# port on 16 of the 256 rows of each batch (every row is padded to 200, so its cost per sequence depends little
# on the batch: measured 20.6 seq/s at 16 rows vs 17.7 at 256, config 64); the full mode uses 256 everywhere.
PLANS = {
    "quick": {
        "ours_64": {"steps": 4, "warmup": 1, "batch": 256},
        "ours_256": {"steps": 1, "warmup": 1, "batch": 256},
        "naive_64": {"steps": 1, "warmup": 1, "batch": 16},
        "naive_256": {"steps": 1, "warmup": 1, "batch": 16},
        "eval": {"repeats": 1},
    },
    "full": {
        "ours_64": {"steps": 40, "warmup": 3, "batch": 256},
        "ours_256": {"steps": 20, "warmup": 3, "batch": 256},
        "naive_64": {"steps": 8, "warmup": 1, "batch": 256},
        "naive_256": {"steps": 4, "warmup": 1, "batch": 256},
        "eval": {"repeats": 3},
    },
}
WORKER_TIMEOUT_S = 3 * 3600
BUSY_WARNING_CORES = 0.25  # other processes' average use above which the table warns that numbers are low
RESULT_KEY = "bench_job"


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux
        return []


def cpu_snapshot(children: bool = False) -> tuple[float, float, float] | None:
    """(wall clock, busy CPU seconds of the whole machine, CPU seconds of this process [and its children]).

    The difference of two snapshots tells how much CPU *other* processes used meanwhile (a shared machine):
    machine busy time (user, nice, system, irq, softirq, steal) minus our own."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait
    own = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN) if children else (resource.RUSAGE_SELF,):
        usage = resource.getrusage(who)
        own += usage.ru_utime + usage.ru_stime
    return time.perf_counter(), busy, own


def other_cores(start, end) -> float | None:
    """Average number of cores other processes kept busy between two ``cpu_snapshot`` s."""
    if start is None or end is None or end[0] <= start[0]:
        return None
    return round(max(0.0, (end[1] - start[1]) - (end[2] - start[2])) / (end[0] - start[0]), 2)


# ------------------------------------------------------------------------------------------ pure helpers


def stratified(n_total: int, k: int) -> np.ndarray:
    """``k`` indices spread evenly over ``range(n_total)`` (the middle of each of ``k`` equal strata)."""
    if not 0 < k <= n_total:
        raise ValueError(f"cannot pick {k} of {n_total}")
    return ((np.arange(k) + 0.5) * n_total / k).astype(np.int64)


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


def parse_lscpu(text: str) -> dict[str, str]:
    """``lscpu`` output as a dict (``Model name`` -> ``AMD EPYC ...``)."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    return fields


def cpu_info() -> dict:
    from bert4rec.cpu import _cpu_flags, usable_cores

    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10,
                              env={**ORIGINAL_ENV, "LC_ALL": "C"}).stdout
    except (OSError, subprocess.SubprocessError):
        text = ""
    fields = parse_lscpu(text)
    flags = set(fields.get("Flags", "").split()) or _cpu_flags()[1]
    return {
        "model_name": fields.get("Model name") or platform.processor() or "unknown",
        "vendor": fields.get("Vendor ID"),
        "family": fields.get("CPU family"),
        "model": fields.get("Model"),
        "hypervisor": fields.get("Hypervisor vendor"),
        "cpus": os.cpu_count(),
        "usable_cores": usable_cores(),
        "avx2": "avx2" in flags,
        "avx512": sorted(f for f in flags if f.startswith("avx512")),
    }


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
        f"BERT4Rec CPU benchmark ({result['mode']} mode), {result['date']}",
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
    lines.append(f"{'training':<20}{'batch':>6}{'seq/s':>9}{'masked/s':>10}{'steps':>6}{'others':>7}  environment")
    seq, items = result["train_seq_per_s"], result["masked_items_per_s"]
    for config in ("64", "256"):
        for impl in ("ours", "naive"):
            key = f"{impl}_{config}"
            job = result["jobs"].get(key) or {}
            settings = " ".join(f"{var}={setting_source(job, var)}" for var in TUNING_VARS[::-1])
            if impl == "ours" and job:
                fused = job.get("fused")
                settings += " fused=" + ("?" if fused is None else "on" if fused else "OFF")
            if job.get("error"):
                settings = f"FAILED: {job['error']}"
            lines.append(f"  {impl + ' config ' + config:<18}{fmt(job.get('batch'), 'd'):>6}"
                         f"{fmt(seq.get(key)):>9}{fmt(items.get(key)):>10}{fmt(job.get('steps'), 'd'):>6}"
                         f"{fmt(job.get('other_processes_cores'), '.2f'):>7}  {settings}")
        speedup = result[f"speedup_{config}"]
        lines.append(f"  {'speedup ' + config:<24}{fmt(speedup, '.2f') + 'x':>9}")
    lines.append("")
    ev = result["jobs"].get("eval") or {}
    if ev.get("error"):
        lines.append(f"evaluation: FAILED: {ev['error']}")
    else:
        lines.append(f"evaluation of {ev.get('num_users', '?')} test users (untrained config 64, batch "
                     f"{EVAL_BATCH_SIZE}, median of {ev.get('repeats', '?')})")
    if ev.get("other_processes_cores") is not None:
        lines[-1] += f"; others busy on {ev['other_processes_cores']:.2f} cores"
    lines.append(f"  {'FULL (rank among all items)':<44}{fmt(result['eval_full_seconds'], '.2f'):>8} s")
    lines.append(f"  {'POP100 (rank among 100 sampled negatives)':<44}{fmt(result['eval_pop100_seconds'], '.2f'):>8} s")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ the sample


def write_sample(data_dir: Path, path: Path, timed_batches: int, warmup: int, seed: int = SEED) -> dict:
    """Choose the batches every training measurement uses and save them with just the instances they need.

    The batches are those of the trainer's first epoch (``epoch_batches`` with the trainer's seed, bucketed,
    full batches only). ``timed_batches`` of them are a stratified sample by padded width (every n-th batch in
    order of width), so the sample pads like the whole epoch; ``warmup`` other ones warm up. Measurements that
    time fewer steps take a stratified subset of the same batches.
    """
    from bert4rec.batches import epoch_batches
    from bert4rec.data import load_train_instances

    instances = load_train_instances(data_dir / "train.txt")
    lengths = instances.lengths
    batches = epoch_batches(lengths, BATCH_SIZE, np.random.default_rng([seed, 0]), bucket=True)
    full = [b for b in batches if len(b) == BATCH_SIZE]
    if len(full) < timed_batches + warmup:
        raise ValueError(f"only {len(full)} full batches of {BATCH_SIZE} in {data_dir / 'train.txt'}")
    widths = np.array([lengths[b].max() for b in full])
    timed = np.argsort(widths, kind="stable")[stratified(len(full), timed_batches)]  # ascending width
    chosen = set(timed.tolist())
    warm = [i for i in range(len(full)) if i not in chosen][:warmup]
    rows = np.stack([full[i] for i in [*warm, *timed.tolist()]])  # [warmup + timed, B] instance ids
    used, inverse = np.unique(rows, return_inverse=True)
    # the instances used, as CSR arrays like TrainInstances; the batches as indices into them
    starts, ends = instances.token_offsets[used], instances.token_offsets[used + 1]
    m_starts, m_ends = instances.mask_offsets[used], instances.mask_offsets[used + 1]
    tokens = np.concatenate([instances.tokens[a:b] for a, b in zip(starts, ends, strict=True)])
    positions = np.concatenate([instances.positions[a:b] for a, b in zip(m_starts, m_ends, strict=True)])
    labels = np.concatenate([instances.labels[a:b] for a, b in zip(m_starts, m_ends, strict=True)])
    token_offsets = np.concatenate([[0], np.cumsum(ends - starts)]).astype(np.int64)
    mask_offsets = np.concatenate([[0], np.cumsum(m_ends - m_starts)]).astype(np.int64)
    inverse = inverse.reshape(rows.shape)
    np.savez(path, tokens=tokens, token_offsets=token_offsets, positions=positions, labels=labels,
             mask_offsets=mask_offsets, warmup=inverse[:warmup], timed=inverse[warmup:], instance_ids=used)
    return {
        "how": f"the trainer's epoch-0 length-bucketed batches (seed {seed}), full ones only, a stratified "
               "sample by padded width; the naive port gets the same instances shuffled, padded to 200",
        "train_instances": len(instances),
        "epoch_batches": len(batches),
        "epoch_mean_padded_width": round(float(widths.mean()), 1),
        "sample_batches": int(timed_batches),
        "sample_mean_padded_width": round(float(widths[timed].mean()), 1),
        "mean_instance_length": round(float(lengths.mean()), 1),
        "mean_masked_per_instance": round(float(np.diff(instances.mask_offsets).mean()), 2),
    }


def load_sample(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def sample_batches(sample: dict[str, np.ndarray], steps: int, naive: bool, seed: int = SEED) -> list[np.ndarray]:
    """The ``steps`` timed batches of a measurement: a stratified subset of the sample, in random order; for the
    naive port the same instances shuffled into unbucketed batches."""
    timed = sample["timed"][stratified(len(sample["timed"]), steps)]
    rng = np.random.default_rng([seed, steps, 7])
    if naive:
        return list(rng.permutation(timed.reshape(-1)).reshape(timed.shape))
    return list(timed[rng.permutation(len(timed))])


# ------------------------------------------------------------------------------------------ child side


def _collate(sample: dict[str, np.ndarray], idx: np.ndarray, pad_to: int | None):
    from bert4rec.instances import TrainInstances
    from bert4rec.models.bert4rec import collate_masked

    instances = TrainInstances(users=np.zeros(len(sample["token_offsets"]) - 1, dtype=np.int32),
                               tokens=sample["tokens"], token_offsets=sample["token_offsets"],
                               positions=sample["positions"], labels=sample["labels"],
                               mask_offsets=sample["mask_offsets"])
    return collate_masked(instances, idx, pad_to=pad_to)


def timed_loop(batches: list[np.ndarray], warmup: int, step) -> dict:
    """Run ``step(i, idx) -> Batch`` on every batch; the first ``warmup`` are not timed. A step is timed whole
    (collation, forward, backward, optimizer update; the loss is read back, so the step has finished)."""
    times, sequences, masked, widths = [], 0, 0, []
    warm_seconds = 0.0
    timed_steps = len(batches) - warmup
    for i, idx in enumerate(batches):
        start = time.perf_counter()
        batch = step(i, idx)
        elapsed = time.perf_counter() - start
        if i < warmup:
            warm_seconds += elapsed
            continue
        times.append(elapsed)
        sequences += batch.num_sequences
        masked += len(batch.labels)
        widths.append(batch.input_ids.shape[1])
        if len(times) % 10 == 0 or len(times) == timed_steps:
            print(f"  step {len(times)}/{timed_steps}: {elapsed:.3f} s", file=sys.stderr, flush=True)
    seconds = sum(times)
    return {
        "steps": len(times),
        "warmup_steps": warmup,
        "warmup_seconds": round(warm_seconds, 3),
        "seconds": round(seconds, 3),
        "sequences": sequences,
        "masked_items": masked,
        "seq_per_s": round(sequences / seconds, 1),
        "masked_items_per_s": round(masked / seconds, 1),
        "median_step_seconds": round(statistics.median(times), 4),
        "mean_padded_width": round(float(np.mean(widths)), 1),
    }


def cpu_defaults() -> dict[str, str]:
    """Import ``bert4rec``, which applies its CPU defaults; must happen before Paddle is imported."""
    if "paddle" in sys.modules:
        raise RuntimeError("bert4rec's CPU defaults must be applied before paddle is imported")
    import bert4rec

    return dict(bert4rec.CPU_SETTINGS)


def fused_in_use(model) -> bool | None:
    """Whether the model runs the fused CPU kernels (None when this version of the model cannot tell)."""
    for name in ("uses_kernels", "_use_fused"):
        probe = getattr(model, name, None)
        if probe is not None:
            try:
                return bool(probe())
            except Exception:  # noqa: BLE001 - a probe, never fatal
                return None
    return None


def job_train_ours(config: str, spec: dict, ctx: dict) -> dict:
    import paddle

    from bert4rec.models import build_model, load_config
    from bert4rec.train import TrainOptions, learning_rate, make_optimizer, train_step

    paddle.seed(SEED)
    model = build_model(load_config(CONFIGS[config]))  # default: fused kernels when available
    model.train()
    data = ctx["data_dir"]
    opts = TrainOptions(config_path=CONFIGS[config], train_path=data / "train.txt", valid_path=None,
                        test_path=data / "test.txt", vocab_path=data / "vocab.txt",
                        checkpoints=ctx["work_dir"] / "checkpoints", batch_size=spec["batch"], max_len=MAX_LEN,
                        progress=False)
    optimizer = make_optimizer(model, opts)
    sample = ctx["sample"]
    batches = [*sample["warmup"][: spec["warmup"]], *sample_batches(sample, spec["steps"], naive=False)]
    batches = [b[: spec["batch"]] for b in batches]

    def step(i, idx):
        batch = _collate(sample, idx, None)  # padded to its own longest sequence, as in the trainer
        train_step(model, optimizer, batch, learning_rate(i, opts, len(batches)))
        return batch

    result = timed_loop(batches, spec["warmup"], step)
    result["fused"] = fused_in_use(model)
    return result


def naive_model(config: dict):
    """What a straightforward port of BERT4Rec to Paddle looks like: ``paddle.nn.TransformerEncoder``, the
    padding mask as ``src_mask``, and the output layer applied at every position ([B, L, V] logits)."""
    import paddle
    import paddle.nn.functional as F
    from paddle import nn

    class NaiveBERT4Rec(nn.Layer):
        def __init__(self, c: dict) -> None:
            super().__init__()
            hidden, vocab = c["hidden_size"], c["vocab_size"]
            init = paddle.ParamAttr(initializer=nn.initializer.TruncatedNormal(std=c["initializer_range"]))
            self.item_embeddings = nn.Embedding(vocab, hidden, weight_attr=init)
            self.position_embeddings = nn.Embedding(c["max_position_embeddings"], hidden, weight_attr=init)
            self.embedding_norm = nn.LayerNorm(hidden, epsilon=1e-12)
            self.embedding_dropout = nn.Dropout(c["hidden_dropout_prob"])
            layer = nn.TransformerEncoderLayer(
                hidden, c["num_attention_heads"], c["intermediate_size"], dropout=c["hidden_dropout_prob"],
                activation="gelu", attn_dropout=c["attention_probs_dropout_prob"], act_dropout=0.0,
                normalize_before=False)
            self.encoder = nn.TransformerEncoder(layer, c["num_hidden_layers"])
            self.head_transform = nn.Linear(hidden, hidden)
            self.head_norm = nn.LayerNorm(hidden, epsilon=1e-12)
            self.output_bias = self.create_parameter([vocab], is_bias=True)
            self.vocab = vocab

        def forward(self, input_ids):
            positions = paddle.arange(input_ids.shape[1], dtype="int64").unsqueeze(0)
            x = self.item_embeddings(input_ids) + self.position_embeddings(positions)
            x = self.embedding_dropout(self.embedding_norm(x))
            src_mask = (input_ids != 0).unsqueeze([1, 2])  # [B, 1, 1, L], True = may attend
            x = self.encoder(x, src_mask=src_mask)
            h = self.head_norm(F.gelu(self.head_transform(x)))
            return paddle.matmul(h, self.item_embeddings.weight, transpose_y=True) + self.output_bias

        def loss(self, input_ids, flat_positions, labels):
            logits = self(input_ids).reshape([-1, self.vocab])  # [B * L, V]
            picked = paddle.gather(logits, flat_positions)
            return F.cross_entropy(picked, labels.unsqueeze(-1)).mean()

    return NaiveBERT4Rec(config)


def job_train_naive(config: str, spec: dict, ctx: dict) -> dict:
    import paddle

    paddle.seed(SEED)
    cfg = json.loads(CONFIGS[config].read_text(encoding="utf-8"))
    model = naive_model(cfg)
    model.train()
    no_decay = {p.name for n, p in model.named_parameters() if "norm" in n or n.endswith("bias") or p.ndim == 1}
    optimizer = paddle.optimizer.AdamW(  # the same optimiser as the trainer's
        learning_rate=1e-4, parameters=model.parameters(), weight_decay=0.01, beta1=0.9, beta2=0.999,
        epsilon=1e-6, grad_clip=paddle.nn.ClipGradByGlobalNorm(5.0),
        apply_decay_param_fun=lambda name: name not in no_decay)
    sample = ctx["sample"]
    batches = [*sample["warmup"][: spec["warmup"]], *sample_batches(sample, spec["steps"], naive=True)]
    batches = [b[: spec["batch"]] for b in batches]

    def step(i, idx):
        batch = _collate(sample, idx, cfg["max_position_embeddings"])  # every batch padded to 200
        loss = model.loss(paddle.to_tensor(batch.input_ids), paddle.to_tensor(batch.flat_positions),
                          paddle.to_tensor(batch.labels))
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        float(loss)
        return batch

    return timed_loop(batches, spec["warmup"], step)


def job_eval(spec: dict, ctx: dict) -> dict:
    import paddle

    from bert4rec.data import load_eval_set, load_vocab
    from bert4rec.evaluate import evaluate
    from bert4rec.models import build_model, load_config

    paddle.seed(SEED)
    model = build_model(load_config(CONFIGS["64"]), max_len=MAX_LEN)
    model.eval()
    vocab = load_vocab(ctx["data_dir"] / "vocab.txt")
    test = load_eval_set(ctx["data_dir"] / "test.txt")
    scorer = model.predict
    start = time.perf_counter()
    offsets = test.history_offsets
    scorer([test.history[offsets[i]:offsets[i + 1]] for i in range(min(16, len(test)))])  # kernels, MKL warm
    result = {"num_users": len(test), "batch": EVAL_BATCH_SIZE, "repeats": spec["repeats"],
              "warmup_seconds": round(time.perf_counter() - start, 3), "fused": fused_in_use(model)}
    for protocol in ("full", "pop100"):
        runs = []
        for r in range(spec["repeats"]):
            start = time.perf_counter()
            evaluate(scorer, test, vocab.num_items, EVAL_BATCH_SIZE, protocols=(protocol,))
            runs.append(round(time.perf_counter() - start, 3))
            print(f"  {protocol} run {r + 1}/{spec['repeats']}: {runs[-1]:.2f} s", file=sys.stderr, flush=True)
        result[f"{protocol}_runs_seconds"] = runs
        result[f"{protocol}_seconds"] = round(statistics.median(runs), 3)
    return result


def run_worker(args) -> int:
    """Child process: run the jobs in ``args.jobs`` and print one JSON line per job."""
    env_given = reported_env(dict(os.environ))
    applied = cpu_defaults() if args.worker == "ours" else {}
    import paddle  # for the naive child: first, in Paddle's default environment

    paddle.set_device("cpu")
    env_after = reported_env(dict(os.environ))  # Paddle sets OMP_NUM_THREADS=1 when it is unset
    ctx = {"work_dir": args.work_dir, "data_dir": args.data_dir, "sample": load_sample(args.work_dir / "sample.npz")}
    status = 0
    for name, spec in parse_jobs(args.jobs).items():
        load_start, started, snap = load_average(), time.perf_counter(), cpu_snapshot()
        try:
            if name == "eval":
                result = job_eval(spec, ctx)
            else:
                impl, config = name.split("_")
                if impl != args.worker:
                    raise ValueError(f"job {name} in a {args.worker} child")
                run = job_train_ours if impl == "ours" else job_train_naive
                result = {"batch": spec["batch"], **run(config, spec, ctx)}
        except Exception as err:  # noqa: BLE001 - reported, and the other jobs still run
            traceback.print_exc()
            result = {"error": f"{type(err).__name__}: {err}"}
            status = 1
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
                description="Measure data generation, training throughput (ours vs a naive Paddle port) and "
                            "evaluation time of BERT4Rec on ML-1M, in one run on this machine.")
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
        if load_config(path).vocab_size != size:
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
        sample = write_sample(data_dir, work / "sample.npz", max(plan[k]["steps"] for k in TRAIN_KEYS),
                              max(plan[k]["warmup"] for k in TRAIN_KEYS))
        for key in TRAIN_KEYS:
            impl, config = key.split("_")
            spec = plan[key]
            env = "Paddle defaults" if impl == "naive" else "CPU tuning, fused kernels"
            log(f"planned: {impl} config {config}, batch {spec['batch']}: {spec['warmup']} warm-up + "
                f"{spec['steps']} timed steps ({env})")
        log(f"planned: evaluation of every test user, FULL then POP100, {plan['eval']['repeats']} run(s) each")
        if mode == "quick":  # one child per environment: fewer Paddle start-ups
            groups = [("ours", {k: plan[k] for k in ("ours_64", "ours_256", "eval")}),
                      ("naive", {k: plan[k] for k in ("naive_64", "naive_256")})]
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
                    log(f"  {name}: {result['seq_per_s']:.1f} seq/s, {result['masked_items_per_s']:.0f} masked "
                        f"items/s (other processes busy on {result['other_processes_cores']} cores)")
    seq = {k: jobs[k].get("seq_per_s") for k in TRAIN_KEYS}
    items = {k: jobs[k].get("masked_items_per_s") for k in TRAIN_KEYS}
    ev = jobs["eval"]
    paddle_versions = {j.get("paddle_version") for j in jobs.values()} - {None}
    result = {
        "mode": mode,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join(["python", *sys.argv]),
        "cpu": cpu_info(),
        "paddle_version": ", ".join(sorted(paddle_versions)) or None,
        "python_version": platform.python_version(),
        "load_average": {"start": load_start, "end": load_average()},
        "other_processes_cores": other_cores(snap, cpu_snapshot(children=True)),
        "gen_data_seconds": gen["seconds"],
        "gen_data": gen,
        "train_seq_per_s": seq,
        "masked_items_per_s": items,
        "speedup_64": ratio(seq["ours_64"], seq["naive_64"]),
        "speedup_256": ratio(seq["ours_256"], seq["naive_256"]),
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
