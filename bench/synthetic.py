"""A deterministic synthetic interaction log shaped like MovieLens-20M, for scale benchmarks without the data.

    python bench/synthetic.py --preset ml20m --output FILE.csv
    python bench/synthetic.py --users U --items I --interactions N --seed S --output FILE.csv

Explicit flags override a preset's values; ``.csv.gz`` is gzipped (bytes depend only on the arguments).
The file is ``user_id,item_id,timestamp`` (ids ``u<n>``/``i<n>`` from 1, epoch seconds), sorted by timestamp
globally like a real event log (ties: in generation order); each user's timestamps strictly increase.

Shape: per-user lengths are 20 + a clipped-lognormal share of the rest (long tail, sum exactly N); item
popularity is Zipf-Mandelbrot, (rank + I/500)^-1, so the top 10% of items hold about two thirds of the events
at any catalogue size; ids are shuffled against popularity. Sequential structure: every item has K=8 successors drawn
by popularity, slot j preferred with weight 1/(j+1); the next item is a successor of the previous one with
probability 0.65, else a popularity draw (immediate repeats become a successor). Items the walk never reached
overwrite spare occurrences of others, so all I items appear when N >= I. Gaps: seconds within a session; a
new session (probability 0.5/sqrt(length)) waits hours to weeks; users start uniformly over 2000-2008.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import time
from pathlib import Path

import numpy as np

PRESETS = {
    "ml20m": (138_493, 26_744, 20_000_000),
    "catalog1m": (300_000, 1_000_000, 30_000_000),
    "small": (2_000, 1_000, 100_000),
}
MIN_LEN = 20
LEN_SIGMA, LEN_Z_CAP = 1.38, 3.7  # lognormal spread of lengths (ML-20M: median 68, mean 144, max 9254)
ZIPF_EXP, ZIPF_OFFSET = 1.0, 1 / 500  # offset as a fraction of the catalogue: a flat head like real catalogues
SUCCESSORS, P_FOLLOW = 8, 0.65
START, START_SPAN = 946_684_800, 8 * 365 * 86_400  # 2000-01-01 and how long new users keep arriving
GAP_IN, GAP_BREAK, GAP_SIGMA, BREAK_SCALE = np.log(15.0), np.log(3 * 86_400.0), 1.1, 0.5
HEADER = b"user_id,item_id,timestamp\n"
CHUNK = 1 << 20


class UsageError(Exception):
    """A user mistake: reported as one ``error:`` line with exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """argparse's own errors follow the same one-line rule as ours instead of printing usage."""
        raise UsageError(message.replace("\n", " "))


def user_lengths(rng: np.random.Generator, users: int, interactions: int) -> np.ndarray:
    """Long-tailed lengths >= MIN_LEN that sum to exactly ``interactions`` (the row count is a promise)."""
    w = np.exp(LEN_SIGMA * np.minimum(rng.standard_normal(users), LEN_Z_CAP))
    rest = interactions - MIN_LEN * users
    cum = np.minimum(np.floor(np.cumsum(w) * (rest / w.sum())).astype(np.int64), rest)
    cum[-1] = rest  # rounding the running total, not each share: the sum is exact by construction
    return np.diff(cum, prepend=0) + MIN_LEN


def popularity_cdf(rng: np.random.Generator, items: int) -> np.ndarray:
    """Cumulative Zipf-Mandelbrot popularity over item indices in shuffled order (ids carry no rank)."""
    w = (np.arange(1, items + 1) + ZIPF_OFFSET * items) ** -ZIPF_EXP
    cdf = np.cumsum(w[rng.permutation(items)])
    return cdf / cdf[-1]


def draw(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Indices drawn from ``cdf`` by the uniforms ``u`` (inverse transform: one searchsorted, no Python)."""
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1).astype(np.int32)


def successor_graph(rng: np.random.Generator, cdf: np.ndarray) -> np.ndarray:
    """[items, K] preferred next items, drawn by popularity; an item is never its own successor."""
    items = len(cdf)
    succ = draw(cdf, rng.random((items, SUCCESSORS)))
    own = np.arange(items, dtype=np.int32)[:, None]
    return np.where(succ == own, (own + 1) % items, succ).astype(np.int32)


def walk(rng: np.random.Generator, lengths: np.ndarray, cdf: np.ndarray, succ: np.ndarray) -> tuple:
    """(user, item, timestamp) in generation order, one vectorised step per position for all users at once.

    Users are ordered by length (longest first) so the users still active at step t are a prefix."""
    order = np.argsort(-lengths, kind="stable")
    active = np.searchsorted(np.sort(lengths), np.arange(int(lengths.max())), side="right")
    active = len(lengths) - active  # active[t] = users with more than t events
    n = int(lengths.sum())
    user, item, stamp = np.empty(n, np.int32), np.empty(n, np.int32), np.empty(n, np.int64)
    p_break = np.minimum(BREAK_SCALE / np.sqrt(lengths[order]), 1.0)
    slot_cdf = np.cumsum(1.0 / np.arange(1, SUCCESSORS + 1))
    slot_cdf /= slot_cdf[-1]
    cur = draw(cdf, rng.random(len(lengths)))
    clock = START + (rng.random(len(lengths)) * START_SPAN).astype(np.int64)
    off = 0
    for t, k in enumerate(active.tolist()):
        if t:
            prev, u = cur[:k], rng.random(k)
            nxt = succ[prev, draw(slot_cdf, u / P_FOLLOW)]  # u / P is uniform on [0, 1) for followers
            jump = draw(cdf, rng.random(k))
            rep = (u >= P_FOLLOW) & (jump == prev)
            cur[:k] = np.where(u < P_FOLLOW, nxt, np.where(rep, nxt, jump))
            brk = rng.random(k) < p_break[:k]
            gap = np.exp(np.where(brk, GAP_BREAK, GAP_IN) + GAP_SIGMA * rng.standard_normal(k))
            clock[:k] += 1 + gap.astype(np.int64)
        user[off : off + k], item[off : off + k], stamp[off : off + k] = order[:k], cur[:k], clock[:k]
        off += k
    return user, item, stamp


def cover_catalogue(rng: np.random.Generator, item: np.ndarray, items: int) -> None:
    """Give every item the walk never reached one event, overwriting spare events (never an item's last one)."""
    missing = np.flatnonzero(np.bincount(item, minlength=items) == 0).astype(np.int32)
    if not len(missing) or len(item) < items:
        return
    keep = np.full(items, -1, np.int64)
    keep[item] = np.arange(len(item))  # one surviving occurrence per present item (whichever write lands)
    spare = np.ones(len(item), bool)
    spare[keep[keep >= 0]] = False
    item[rng.choice(np.flatnonzero(spare), size=len(missing), replace=False)] = rng.permutation(missing)


def generate(users: int, items: int, interactions: int, seed: int) -> dict[str, np.ndarray]:
    """The log as arrays in file order: ``user_id``/``item_id`` numbers (from 1) and ``timestamp`` seconds."""
    if users < 1 or items < 2 or interactions < MIN_LEN * users:
        raise ValueError(f"need users >= 1, items >= 2, interactions >= {MIN_LEN} * users")
    rng = np.random.default_rng(seed)
    lengths = user_lengths(rng, users, interactions)
    cdf = popularity_cdf(rng, items)
    user, item, stamp = walk(rng, lengths, cdf, successor_graph(rng, cdf))
    cover_catalogue(rng, item, items)
    order = np.argsort(stamp, kind="stable")
    return {"user_id": user[order] + 1, "item_id": item[order] + 1, "timestamp": stamp[order]}


def csv_chunks(log: dict[str, np.ndarray]):
    """The CSV body in CHUNK-row pieces: pyarrow's C++ writer when installed, else pandas (same bytes)."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv
    except ImportError:
        pa = None
    for a in range(0, len(log["timestamp"]), CHUNK):
        part = {k: v[a : a + CHUNK] for k, v in log.items()}
        if pa is None:
            import pandas as pd

            frame = pd.DataFrame({"u": np.char.add("u", part["user_id"].astype(str)),
                                  "i": np.char.add("i", part["item_id"].astype(str)), "t": part["timestamp"]})
            yield frame.to_csv(header=False, index=False, lineterminator="\n").encode()
            continue
        cols = [pc.binary_join_element_wise(p, pc.cast(pa.array(part[k]), pa.string()), "")
                for p, k in (("u", "user_id"), ("i", "item_id"))]
        table = pa.table({"u": cols[0], "i": cols[1], "t": pa.array(part["timestamp"])})
        sink = pa.BufferOutputStream()
        opts = pyarrow.csv.WriteOptions(include_header=False, quoting_style="none", batch_size=CHUNK)
        pyarrow.csv.write_csv(table, sink, write_options=opts)
        yield sink.getvalue().to_pybytes()


def write_atomic(log: dict[str, np.ndarray], output: Path) -> None:
    """Write to a temp file beside ``output``, then rename: readers never see half a file, failures leave none."""
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as raw:
            # mtime=0 and no name in the gzip header: the same arguments give the same bytes
            fh = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0, filename="") \
                if output.name.endswith(".gz") else raw
            fh.write(HEADER)
            for piece in csv_chunks(log):
                fh.write(piece)
            if fh is not raw:
                fh.close()
        os.replace(tmp, output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def int_arg(minimum: int):
    """argparse type: an integer >= ``minimum`` (sizes >= 1, seeds >= 0), else an error naming the flag."""

    def parse_int(text: str) -> int:
        if not (text.isascii() and text.isdigit()) or int(text) < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return int(text)

    return parse_int


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse and check everything before any work, so a mistake costs nothing and writes nothing."""
    ap = Parser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), help="sizes of a known shape (flags override them)")
    ap.add_argument("--users", type=int_arg(1))
    ap.add_argument("--items", type=int_arg(1))
    ap.add_argument("--interactions", type=int_arg(1), help=f"rows; at least {MIN_LEN} per user")
    ap.add_argument("--seed", type=int_arg(0), default=0)
    ap.add_argument("--output", type=Path, required=True, help="FILE.csv or FILE.csv.gz")
    ap.add_argument("--force", action="store_true", help="overwrite an existing --output")
    ap.add_argument("--quiet", action="store_true", help="no progress or summary on stderr")
    args = ap.parse_args(argv)
    base = dict(zip(("users", "items", "interactions"), PRESETS.get(args.preset, (None,) * 3), strict=True))
    vars(args).update({k: v for k, v in base.items() if getattr(args, k) is None})  # explicit flags win
    missing = [f"--{k}" for k in base if getattr(args, k) is None]
    if missing:
        raise UsageError(f"{', '.join(missing)} required without --preset")
    if args.items < 2:
        raise UsageError(f"--items must be at least 2, got {args.items}")
    if args.interactions < MIN_LEN * args.users:
        raise UsageError(f"--interactions must be at least {MIN_LEN} x --users = {MIN_LEN * args.users:,}, "
                         f"got {args.interactions:,}")
    out = args.output
    if not (out.name.endswith(".csv") or out.name.endswith(".csv.gz")):
        raise UsageError(f"--output must end with .csv or .csv.gz, got {out}")
    if not out.parent.is_dir():
        raise UsageError(f"--output folder {out.parent} does not exist")
    if out.is_dir():
        raise UsageError(f"--output {out} is a folder")
    if out.exists() and not args.force:
        raise UsageError(f"--output {out} exists (use --force to overwrite)")
    return args


def main(argv: list[str] | None = None) -> int:
    """The command line: 0 when written, 2 for a user mistake (one ``error:`` line), 1 when writing failed."""
    try:
        args = parse(argv)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    say = (lambda msg: None) if args.quiet else (lambda msg: print(f"synthetic: {msg}", file=sys.stderr))
    t0 = time.perf_counter()
    say(f"generating {args.interactions:,} rows ({args.users:,} users, {args.items:,} items, seed {args.seed})")
    log = generate(args.users, args.items, args.interactions, args.seed)
    t1 = time.perf_counter()
    try:
        write_atomic(log, args.output)
    except OSError as exc:
        print(f"error: --output {args.output}: cannot write: {exc.strerror or exc}", file=sys.stderr)
        return 1
    t2 = time.perf_counter()
    seen = np.count_nonzero(np.bincount(log["item_id"]))
    say(f"wrote {args.output}: {len(log['timestamp']):,} rows, {args.users:,} users, {seen:,} items "
        f"in {t2 - t0:.1f} s (generate {t1 - t0:.1f} s, write {t2 - t1:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
