"""The Python API runs the same code as the command-line tools: the same files, the same metrics, the same
recommendations; string ids go through training, recommending and exporting untouched."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bert4rec as br

REPO = Path(__file__).resolve().parents[1]
TRAIN_FLAGS = {"num_train_steps": 40, "eval_every": 20, "batch_size": 64, "seed": 7, "max_len": 50, "lr": 5e-3,
               "warmup_steps": 10}


def planted_frame(n_users: int = 300, num_items: int = 120, seed: int = 0) -> pd.DataFrame:
    """Users walking a permutation of SKUs, with string ids and ISO-8601 times."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(num_items)
    rows = []
    for user in range(n_users):
        item = int(rng.integers(num_items))
        start = pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(minutes=int(rng.integers(10**5)))
        for k in range(int(rng.integers(10, 25))):
            rows.append((f"c{user:04d}", f"SKU {item:03d}", (start + pd.Timedelta(hours=k)).isoformat()))
            item = int(perm[item]) if rng.random() < 0.9 else int(rng.integers(num_items))
    return pd.DataFrame(rows, columns=["customer", "sku", "when"])


@pytest.fixture(scope="module")
def api_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    config = root / "sasrec.json"
    config.write_text(json.dumps({"model": "SASRec", "hidden_size": 32, "intermediate_size": 64,
                                  "num_attention_heads": 2, "max_position_embeddings": 50}))
    data = br.Dataset.from_frame(planted_frame(), user="customer", item="sku", time="when", max_seq_length=50,
                                 min_item_count=1, num_negatives=20).save(root / "data", progress=False)
    run = br.fit(data, config=config, checkpoints=root / "run", progress=False, **TRAIN_FLAGS)
    return root, config, run


def cli(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / script), *args], capture_output=True, text=True, timeout=300)


def test_fit_and_trainrec_give_the_same_metrics(api_run):
    root, config, run = api_run
    flags = [f"--{k.upper() if k != 'lr' else 'LR_RATE'}={v}" for k, v in TRAIN_FLAGS.items()]
    proc = cli("trainrec.py", f"--CONFIG_PATH={config}", f"--DATA_DIR={root / 'data'}",
               f"--CHECKPOINTS={root / 'cli_run'}", "--no-progress", *flags)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cli_results = json.loads((root / "cli_run" / "results.json").read_text())
    assert run.results["valid"] == cli_results["valid"] and run.results["test"] == cli_results["test"]
    assert run.results["test"]["full"]["NDCG@10"] > 0.2  # it learned the walk (MostPop is far below)
    assert br.load_run(root / "cli_run").results == cli_results


def test_recommend_through_the_api_equals_recommend_py(api_run, tmp_path):
    root, _config, run = api_run
    out = tmp_path / "all.csv"
    proc = cli("recommend.py", "--CHECKPOINTS", str(root / "run"), "--all", "--output", str(out), "--k", "5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    shell = pd.read_csv(out, dtype={"user": str, "item": str})
    api = run.recommend(k=5, progress=False)
    assert list(api.columns) == ["user", "rank", "item", "score"]
    assert api[["user", "rank", "item"]].equals(shell[["user", "rank", "item"]])
    assert np.allclose(api["score"], shell["score"], rtol=1e-5)
    some = run.recommend(users=["c0007", "c0002"], k=5)
    assert some["user"].tolist() == ["c0007"] * 5 + ["c0002"] * 5
    for user in ("c0007", "c0002"):
        assert some[some.user == user]["item"].tolist() == shell[shell.user == user]["item"].tolist()
    proc = cli("recommend.py", "--CHECKPOINTS", str(root / "run"), "--user", "c0007", "--k", "5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    listed = [line.split()[1:3] for line in proc.stdout.split("title\n", 1)[1].splitlines()[:5]]
    assert [" ".join(x) for x in listed] == some[some.user == "c0007"]["item"].tolist()  # "SKU 042": 2 words


def test_new_histories_and_unknown_ids(api_run):
    root, _config, run = api_run
    recs = run.recommend(histories=[["SKU 001", "SKU 002"], ["SKU 003"]], k=4)
    assert recs["user"].tolist() == [0] * 4 + [1] * 4
    assert not {"SKU 001", "SKU 002"} & set(recs[recs.user == 0]["item"])
    with pytest.raises(br.UserError, match="no such user in"):
        run.recommend(users=["c9999"])
    with pytest.raises(br.UserError, match="unknown item id SKU 999"):
        run.recommend(histories=[["SKU 999"]])
    proc = cli("recommend.py", "--CHECKPOINTS", str(root / "run"), "--history", "SKU 001,nope")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "unknown item id nope" in proc.stderr


def test_export_speaks_the_input_ids(api_run, tmp_path):
    root, _config, run = api_run
    proc = cli("export.py", "--CHECKPOINTS", str(root / "run"), "--output", str(tmp_path / "exp"), "--k", "5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split("\t") for line in (tmp_path / "exp" / "items.txt").read_text().splitlines()]
    assert [r[1] for r in rows] == run.trained.catalogue().item_original[1:]
    proc = cli("examples/predict.py", str(tmp_path / "exp"), "SKU 001,SKU 002")
    assert proc.returncode == 0, proc.stderr[-2000:]
    exported = [line.split()[1:3] for line in proc.stdout.splitlines()]
    api = run.recommend(histories=[["SKU 001", "SKU 002"]], k=5)["item"].tolist()
    assert [" ".join(x) for x in exported] == api


def test_the_example_runs(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "own_data.py"), "--demo", "--steps", "60",
                           "--out", str(tmp_path / "demo")], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "test FULL NDCG@10" in proc.stdout and "customer-00000" in proc.stdout
    results = json.loads((tmp_path / "demo" / "run" / "results.json").read_text())
    assert results["test"]["full"]["NDCG@10"] > 0.1


def test_import_is_quiet():
    proc = subprocess.run([sys.executable, "-c", "import bert4rec as br; print(br.Dataset.__name__)"],
                          capture_output=True, text=True, timeout=120, cwd=str(REPO))
    assert proc.stdout == "Dataset\n" and proc.stderr == ""
