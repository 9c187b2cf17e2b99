"""Shared test fixtures: small synthetic rating data in every raw format the data pipeline reads."""

from __future__ import annotations

import functools
import importlib.util
import json
import random
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bert4rec.cpu import import_paddle  # noqa: E402

import_paddle()  # CPU settings first, and none of Paddle's start-up noise in the test output

GEN_SCRIPT = REPO_ROOT / "bert_train" / "gen_data_fin.py"
# The real ML-1M sequence benchmark, next to the checkout (absent on some machines: tests skip then).
ML1M_SAS = Path(__file__).resolve().parents[2] / "shared/data/ml-1m-sas/ml-1m.txt"


@dataclass
class Synthetic:
    """Synthetic ratings with a known structure.

    * ``rows``: ``(user, item, rating, timestamp)`` in file order (shuffled; some equal timestamps).
    * ``sequences``: original user id -> original item ids in chronological order (ties: file order).
    * Every user's second-to-last item is from ``valid_items`` and last item from ``test_items``; those
      items occur nowhere else, so a leak of a held-out target into training data is detectable.
    * ``rare_items`` have fewer than 5 interactions (removed by ``--min_item_count 5``).
    * ``short_users`` have exactly 2 interactions (dropped by ``--holdout valid_test``, kept by ``test``).
    """

    rows: list[tuple[int, int, int, int]]
    sequences: dict[int, list[int]]
    valid_items: set[int] = field(default_factory=set)
    test_items: set[int] = field(default_factory=set)
    history_items: set[int] = field(default_factory=set)
    rare_items: set[int] = field(default_factory=set)
    short_users: set[int] = field(default_factory=set)

    def filtered_sequences(self, min_len: int) -> dict[int, list[int]]:
        """Chronological sequences without rare items, users shorter than ``min_len`` removed."""
        out = {}
        for user, items in self.sequences.items():
            kept = [i for i in items if i not in self.rare_items]
            if len(kept) >= min_len:
                out[user] = kept
        return out


def make_synthetic(seed: int = 0, n_users: int = 40, max_history: int = 60) -> Synthetic:
    rng = random.Random(seed)
    history_items = list(range(1000, 1040))
    valid_items = [2000, 2001, 2002]
    test_items = [3000, 3001, 3002]
    rare_items = [9001, 9002]
    users = sorted(rng.sample(range(10, 500), n_users + 2))
    short_users = set(users[-2:])
    rows: list[tuple[int, int, int, int]] = []
    sequences: dict[int, list[int]] = {}
    for idx, user in enumerate(users):
        t = rng.randrange(10**8, 2 * 10**8)
        if user in short_users:
            chrono = [rng.choice(history_items), test_items[idx % 3]]
        else:
            n = rng.randint(3, max_history)
            chrono = [rng.choice(history_items) for _ in range(n)]
            if idx < 4:  # a few users touch a rare item somewhere in the middle
                chrono.insert(1, rare_items[idx % 2])
            chrono += [valid_items[idx % 3], test_items[(idx + 1) % 3]]
        stamped = []
        for item in chrono:
            if rng.random() < 0.8:  # else: same second as the previous rating (a tie)
                t += rng.randint(1, 5000)
            stamped.append((user, item, rng.randint(1, 5), t))
        sequences[user] = chrono
        rows.extend(stamped)
    # Shuffle the file order, then put the rows of each (user, timestamp) tie back into chronological
    # order among the slots they got: a stable sort by time must then recover the chronology exactly.
    perm = list(range(len(rows)))  # perm[slot] = index into rows (rows are chronological per user)
    rng.shuffle(perm)
    slot_of = {i: slot for slot, i in enumerate(perm)}
    ties: dict[tuple[int, int], list[int]] = {}
    for i, (user, _item, _rating, t) in enumerate(rows):
        ties.setdefault((user, t), []).append(i)
    for members in ties.values():
        for i, slot in zip(members, sorted(slot_of[i] for i in members), strict=True):
            slot_of[i] = slot
    file_rows: list[tuple[int, int, int, int]] = [rows[0]] * len(rows)
    for i, slot in slot_of.items():
        file_rows[slot] = rows[i]
    return Synthetic(
        rows=file_rows,
        sequences=sequences,
        valid_items=set(valid_items),
        test_items=set(test_items),
        history_items=set(history_items),
        rare_items=set(rare_items),
        short_users=short_users,
    )


def ratings_text(data: Synthetic, fmt: str) -> str:
    """The synthetic ratings in a raw format: ml-1m, ml-100k, ml-20m or seq."""
    if fmt == "ml-1m":
        return "".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in data.rows)
    if fmt == "ml-100k":
        return "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in data.rows)
    if fmt == "ml-20m":
        return "userId,movieId,rating,timestamp\n" + "".join(
            f"{u},{i},{r - 0.5 if r > 1 else r:.1f},{t}\n" for u, i, r, t in data.rows
        )
    if fmt == "seq":
        return "".join(f"{u} {i}\n" for u in sorted(data.sequences) for i in data.sequences[u])
    raise ValueError(fmt)


RATINGS_NAME = {"ml-1m": "ratings.dat", "ml-100k": "u.data", "ml-20m": "ratings.csv", "seq": "seq.txt"}


def write_raw(data: Synthetic, directory: Path, fmt: str, packaging: str = "file") -> Path:
    """Write the synthetic data as a plain file, a GroupLens-like folder or zip; returns the path."""
    directory.mkdir(parents=True, exist_ok=True)
    name = RATINGS_NAME[fmt]
    text = ratings_text(data, fmt)
    if packaging == "file":
        path = directory / name
        path.write_text(text)
        return path
    if packaging == "folder":
        folder = directory / fmt
        folder.mkdir(exist_ok=True)
        (folder / name).write_text(text)
        (folder / "README").write_text("synthetic\n")
        return folder
    if packaging == "zip":
        path = directory / f"{fmt}.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(f"{fmt}/README", "synthetic\n")
            zf.writestr(f"{fmt}/{name}", text)
        return path
    raise ValueError(packaging)


@pytest.fixture(scope="session")
def synthetic() -> Synthetic:
    return make_synthetic()


# ---------------------------------------------------------------------------------------------------------
# Training on a planted sequential pattern (every model learns it in seconds)
# ---------------------------------------------------------------------------------------------------------

NUM_ITEMS = 60


def write_planted_sequences(path: Path, n_users: int = 300, seed: int = 0, num_items: int = NUM_ITEMS) -> None:
    """Each user walks a fixed permutation of the items (next = perm[current]) with 10% random jumps."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(num_items) + 1
    lines = []
    for user in range(1, n_users + 1):
        item = int(rng.integers(1, num_items + 1))
        for _ in range(int(rng.integers(10, 25))):
            lines.append(f"{user} {item}")
            item = int(perm[item - 1]) if rng.random() < 0.9 else int(rng.integers(1, num_items + 1))
    path.write_text("\n".join(lines) + "\n")


def tiny_config(path: Path, **overrides) -> Path:
    cfg = dict(vocab_size=NUM_ITEMS + 4, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=64, max_position_embeddings=50, hidden_dropout_prob=0.1,
               attention_probs_dropout_prob=0.1, hidden_act="gelu", initializer_range=0.02)
    cfg.update(overrides)
    path.write_text(json.dumps(cfg))
    return path


@pytest.fixture(scope="session")
def planted(tmp_path_factory):
    """Generated data (``valid_test``, 20 negatives) of 300 users walking a permutation of 60 items."""
    from bert4rec.data import GenerateOptions, generate_dataset

    root = tmp_path_factory.mktemp("planted")
    raw = root / "seq.txt"
    write_planted_sequences(raw)
    data_dir = root / "data"
    opts = GenerateOptions(raw_path=raw, format="seq", output_dir=data_dir, max_seq_length=50, dupe_factor=3,
                           min_item_count=1, num_negatives=20)
    generate_dataset(opts, progress=False, log=lambda *a: None)
    return root, data_dir



def mostpop_results(root: Path, data_dir: Path) -> dict:
    """MostPop through the trainer, the floor every model must beat."""
    from bert4rec.train import train

    config = root / "mostpop_model.json"
    config.write_text('{"model": "MostPop"}')
    return train(options(root, data_dir, "mostpop", config_path=config))


def options(root: Path, data_dir: Path, name: str, **kw):
    """Training options of a short run on the planted data (config: ``tiny_config`` unless given)."""
    from bert4rec.config import TrainOptions

    if "config_path" not in kw:
        kw["config_path"] = tiny_config(root / f"{name}.json")
    base = dict(train_path=data_dir / "train.txt",
                valid_path=data_dir / "valid.txt", test_path=data_dir / "test.txt",
                vocab_path=data_dir / "vocab.txt", checkpoints=root / name, batch_size=64, lr=5e-3,
                warmup_steps=10, max_len=50, num_train_steps=150, eval_every=50, patience=5, progress=False,
                seed=7)
    base.update(kw)
    return TrainOptions(**base)


def assert_resume_matches(root: Path, data_dir: Path, stop_at: int, **kw) -> None:
    """A run interrupted at ``stop_at`` and resumed ends exactly like the uninterrupted run."""
    from bert4rec.checkpoint import load_checkpoint
    from bert4rec.train import train

    tag = f"resume_{stop_at}_{abs(hash(str(kw))) % 10**6}"
    whole = train(options(root, data_dir, f"{tag}_whole", **kw))
    try:
        train(options(root, data_dir, f"{tag}_split", stop_at_step=stop_at, **kw))
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the run was not interrupted")
    split = root / f"{tag}_split"
    assert load_checkpoint(split / "last.pdparams")["state"]["step"] == stop_at
    resumed = train(options(root, data_dir, f"{tag}_split", init_checkpoint=split / "last.pdparams", **kw))
    assert resumed["test"] == whole["test"] and resumed["best_step"] == whole["best_step"]
    a = load_checkpoint(root / f"{tag}_whole" / "last.pdparams")["model"]
    b = load_checkpoint(split / "last.pdparams")["model"]
    for name in a:
        np.testing.assert_allclose(np.asarray(a[name]), np.asarray(b[name]), rtol=0, atol=1e-6)


# ---------------------------------------------------------------- generating small datasets (gen_data_fin.py)

SMALL = dict(max_seq_length=12, dupe_factor=3, max_predictions_per_seq=5, num_negatives=3)
SMALL_ARGS = ["--max_seq_length", "12", "--dupe_factor", "3", "--max_predictions_per_seq", "5"]
SMALL_ARGS += ["--num_negatives", "3", "--no_progress"]
DATA_FILES = ("vocab.txt", "users.txt", "item_counts.txt", "train.txt", "train_windows.txt", "test.txt")


def generate(raw: Path, out: Path, **kw) -> dict:
    from bert4rec.data import GenerateOptions, generate_dataset

    opts = GenerateOptions(raw_path=raw, output_dir=out, **{**SMALL, **kw})
    return generate_dataset(opts, progress=False, log=lambda msg: None)


def read_lines(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


@functools.lru_cache(maxsize=1)
def _cli_module():
    spec = importlib.util.spec_from_file_location("gen_data_fin", GEN_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_cli_inprocess(args: list[str], capsys) -> tuple[int, str, str]:
    """Run gen_data_fin.py's ``run_cli(main)`` in this process; returns (exit code, stdout, stderr)."""
    from bert4rec.errors import run_cli

    module = _cli_module()
    with pytest.raises(SystemExit) as exc:
        run_cli(lambda: module.main(args))
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def assert_user_error(code: int, err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
