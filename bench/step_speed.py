"""Training-step throughput of BERT4Rec on CPU: plain Paddle ops vs the fused CPU kernels.

One step = forward + backward + AdamW update on a synthetic batch of ``--batch`` sequences that are all
real (no padding) and of length L, with round(0.2 L) masked positions each (40 at L = 200), as the trainer
runs it. Reports sequences/second: median over ``--steps`` timed steps after ``--warmup`` untimed ones.

Every measurement runs in its own child process (OMP_NUM_THREADS must be set before Paddle loads, and the
allocator setting of one mode must not leak into another). Modes:
  plain        plain Paddle ops (``kernels="plain"``), default allocator
  plain+alloc  plain Paddle ops after ``fused_ops.configure_allocator()`` (no mmap/trim churn)
  fused        fused CPU kernels (``kernels="fused"``; they configure the allocator themselves)
``--repo`` runs the model code of another checkout (e.g. an older commit in a git worktree), where only
the mode names that checkout understands work (``fused`` = its ``attention="fused"``).

    python bench/step_speed.py                                  # h64 and h256, L 200 and 110, plain vs fused
    python bench/step_speed.py --configs h64 --modes fused --threads 1,2
    OMP_NUM_THREADS=1 python bench/step_speed.py --ops     # per-op CPU ms, plain composition vs fused kernel
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {
    "h64": dict(hidden_size=64, num_attention_heads=2, intermediate_size=256, hidden_dropout_prob=0.2),
    "h256": dict(hidden_size=256, num_attention_heads=8, intermediate_size=1024, hidden_dropout_prob=0.5),
}


def measure(config_name: str, length: int, mode: str, batch: int, steps: int, warmup: int) -> dict:
    """One measurement in this process (the child side)."""
    importlib.import_module("bert4rec")  # CPU defaults (threads, MKL) must be set before Paddle loads
    import numpy as np
    import paddle

    from bert4rec.models.bert4rec import BERT4Rec, BERT4RecConfig

    paddle.set_device("cpu")
    if mode == "plain+alloc":
        from bert4rec.fused_ops import configure_allocator

        configure_allocator()
    paddle.seed(0)
    config = BERT4RecConfig(vocab_size=3420, num_hidden_layers=2, max_position_embeddings=200,
                        attention_probs_dropout_prob=0.2, **CONFIGS[config_name])
    model = BERT4Rec(config, mode.split("+")[0])
    model.train()
    opt = paddle.optimizer.AdamW(1e-4, parameters=model.parameters(), weight_decay=0.01)
    rng = np.random.default_rng(0)
    masked = max(1, round(0.2 * length))
    ids = rng.integers(1, config.vocab_size - 1, size=(batch, length))
    pos = np.concatenate([np.sort(rng.choice(length, masked, replace=False)) + r * length for r in range(batch)])
    labels = ids.reshape(-1)[pos]
    ids.reshape(-1)[pos] = config.vocab_size - 1  # [MASK]
    ids_t, pos_t, lab_t = (paddle.to_tensor(a.astype("int64")) for a in (ids, pos, labels))
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        loss = model.loss(ids_t, pos_t, lab_t)
        loss.backward()
        opt.step()
        opt.clear_grad()
        float(loss)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    sec = statistics.median(times)
    return dict(config=config_name, length=length, mode=mode, threads=os.environ.get("OMP_NUM_THREADS", ""),
                step_s=round(sec, 3), seq_per_s=round(batch / sec, 1), load=os.getloadavg()[0])


def op_speed() -> None:
    """Forward and forward+backward CPU time (best of 3) of each fused kernel vs its plain-Paddle composition,
    at the h64, L 200, batch 256 shapes (40 masked positions per sequence for the loss)."""
    importlib.import_module("bert4rec")
    import math

    import paddle
    import paddle.nn.functional as F

    from bert4rec import fused_ops as fo

    assert fo.kernels_available()
    paddle.seed(0)
    b, length, h, inter, vocab, heads = 256, 200, 64, 256, 3420, 2

    def t(shape):
        x = paddle.randn(shape)
        x.stop_gradient = False
        return x

    def cpu_ms(f):
        f()
        best = math.inf
        for _ in range(3):
            start = time.process_time()
            f()
            best = min(best, time.process_time() - start)
        return best * 1000

    def bench(name, fused, plain, inputs):
        def both(f):
            def run():
                y = f()
                paddle.grad([y], inputs, [paddle.ones_like(y)])
            return run
        fp, ff = cpu_ms(plain), cpu_ms(fused)
        bp, bf = cpu_ms(both(plain)), cpu_ms(both(fused))
        print(f"{name:34} plain {fp:6.1f} + {bp - fp:6.1f} = {bp:6.1f}   fused {ff:6.1f} + {bf - ff:6.1f} = "
              f"{bf:6.1f} ms (fwd + bwd)", flush=True)

    x, r, bias, gamma, beta = t([b, length, h]), t([b, length, h]), t([h]), t([h]), t([h])
    pos = t([length, h])
    bench("LayerNorm(r + dropout(x + b))",
          lambda: fo.bias_dropout_residual_layernorm(x, bias, r, gamma, beta, 0.2, True),
          lambda: F.layer_norm(r + F.dropout(x + bias, 0.2), [h], gamma, beta, 1e-12), [x, bias, r, gamma, beta])
    bench("dropout(LayerNorm(tok + pos))",
          lambda: fo.embedding_layernorm_dropout(x, pos, gamma, beta, 0.2, True),
          lambda: F.dropout(F.layer_norm(x + pos, [h], gamma, beta, 1e-12), 0.2), [x, pos, gamma, beta])
    xi, bi = t([b * length, inter]), t([inter])
    bench("gelu(x + b)", lambda: fo.bias_gelu(xi, bi), lambda: F.gelu(xi + bi, approximate=True), [xi, bi])
    z, zb = t([b * 40, vocab]), t([vocab])
    labels = paddle.randint(0, vocab, [b * 40], dtype="int64")
    bench("cross_entropy(z + b)", lambda: fo.bias_softmax_cross_entropy(z, zb, labels),
          lambda: F.cross_entropy(z + zb, labels.unsqueeze(-1), reduction="none"), [z, zb])
    qkv, qb = t([b, length, 3 * h]), t([3 * h])
    lengths = paddle.full([b], length, dtype="int64")

    def plain_attention():
        q, k, v = paddle.unbind((qkv + qb).reshape([b, length, 3, heads, h // heads]).transpose([2, 0, 3, 1, 4]))
        probs = F.dropout(F.softmax(paddle.matmul(q, k, transpose_y=True) / math.sqrt(h // heads), -1), 0.2)
        return paddle.matmul(probs, v).transpose([0, 2, 1, 3]).reshape([b, length, h])

    bench("attention (1 layer, no padding)", lambda: fo.fused_attention(qkv, qb, lengths, heads, 0.2, True),
          plain_attention, [qkv, qb])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="h64,h256")
    parser.add_argument("--lengths", default="200,110")
    parser.add_argument("--modes", default="plain,plain+alloc,fused")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", default="", help="OMP_NUM_THREADS values to compare, e.g. 1,2 "
                        "(default: the package default, all usable cores)")
    parser.add_argument("--repeat", type=int, default=1, help="run the whole matrix this many times, "
                        "interleaved, and summarise best/median per cell (useful on a shared machine)")
    parser.add_argument("--repo", default=str(REPO), help="checkout whose bert4rec package to benchmark")
    parser.add_argument("--ops", action="store_true", help="per-op timings instead of training steps")
    parser.add_argument("--child", nargs=3, metavar=("CONFIG", "LENGTH", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ops:
        sys.path.insert(0, args.repo)
        op_speed()
        return
    if args.child:
        sys.path.insert(0, args.repo)
        name, length, mode = args.child
        print(json.dumps(measure(name, int(length), mode, args.batch, args.steps, args.warmup)), flush=True)
        return
    print(f"{'config':7} {'L':>4} {'mode':12} {'threads':>7} {'step_s':>7} {'seq/s':>7} {'load':>5}", flush=True)
    cells: dict[tuple, list[float]] = {}
    for _ in range(args.repeat):
        for threads in args.threads.split(",") if args.threads else [""]:
            for name in args.configs.split(","):
                for length in args.lengths.split(","):
                    for mode in args.modes.split(","):
                        r = run_child(args, threads, name, length, mode)
                        if r is not None:
                            cells.setdefault((r["config"], r["length"], r["mode"], r["threads"]), []).append(
                                r["seq_per_s"])
    if args.repeat > 1:
        print(f"\n{'config':7} {'L':>4} {'mode':12} {'threads':>7} {'best':>7} {'median':>7}  (seq/s)")
        for (name, length, mode, threads), values in cells.items():
            median = round(statistics.median(values), 1)
            print(f"{name:7} {length:>4} {mode:12} {threads:>7} {max(values):>7} {median:>7}")


def run_child(args, threads: str, name: str, length: str, mode: str) -> dict | None:
    env = dict(os.environ, **({"OMP_NUM_THREADS": threads} if threads else {}))
    cmd = [sys.executable, __file__, "--child", name, length, mode, "--repo", args.repo,
           "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    rows = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    if done.returncode or not rows:
        print(f"{name:7} {length:>4} {mode:12} failed: {done.stderr.strip()[-300:]}", flush=True)
        return None
    r = rows[0]
    print(f"{r['config']:7} {r['length']:>4} {r['mode']:12} {r['threads']:>7} {r['step_s']:>7} "
          f"{r['seq_per_s']:>7} {r['load']:>5.1f}", flush=True)
    return r

if __name__ == "__main__":
    main()
