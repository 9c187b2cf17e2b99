"""Using trained runs: recommendations (ids, titles, history never recommended), the comparison report, and
the exported model served by Paddle Inference (same top-k as the training-time model)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import options

from bert4rec.data import GenerateOptions, generate_dataset
from bert4rec.errors import UserError
from bert4rec.train import train
from bert4rec.trained import load_run, top_k

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sasrec_run(planted):
    root, data_dir = planted
    config = root / "use_sasrec.json"
    config.write_text(json.dumps({"model": "SASRec", "hidden_size": 32, "intermediate_size": 64,
                                  "max_position_embeddings": 50}))
    train(options(root, data_dir, "use_sasrec", config_path=config, num_train_steps=60, eval_every=30))
    return root / "use_sasrec"


def cli(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / script), *args], capture_output=True, text=True, timeout=300)


def one_error_line(proc, needle):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], \
        proc.stderr[-2000:]


def test_top_k_excludes_seen_items_and_breaks_ties_by_the_smaller_id():
    scores = np.array([[9.0, 1.0, 5.0, 5.0, 7.0, 5.0, 0.5]])  # column 0 is [PAD]: never recommended
    items, best = top_k(scores, [np.array([4])], 3)
    assert items.tolist() == [[2, 3, 5]] and best.tolist() == [[5.0, 5.0, 5.0]]
    items, _ = top_k(scores, [np.array([1, 2, 3, 4, 5])], 3)  # only item 6 is left
    assert items.tolist() == [[6, 0, 0]]


def test_recommendations_never_repeat_the_history(sasrec_run, tmp_path):
    run = load_run(sasrec_run)
    test = run.test_set()
    seen = [list(test.user_history(i)) + [int(test.targets[i])] for i in range(len(test))]
    items, _ = top_k(run.model.predict(seen), seen, 10)
    assert all(not set(row.tolist()) & set(s) for row, s in zip(items, seen, strict=True))
    out = tmp_path / "recs.csv"
    proc = cli("recommend.py", "--CHECKPOINTS", str(sasrec_run), "--all", "--output", str(out), "--k", "5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 5 * len(test) and list(rows[0].keys()) == ["user", "rank", "item", "score"]
    catalogue = run.catalogue()
    lookup = catalogue.original_item_lookup()
    by_user: dict[str, list[int]] = {}
    for row in rows:
        by_user.setdefault(row["user"], []).append(lookup[row["item"]])  # the CSV speaks original ids
    for i in range(len(test)):
        recommended = by_user[catalogue.user_original[int(test.users[i])]]
        assert recommended == items[i][:5].tolist() and not set(recommended) & set(seen[i])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recs.csv"]  # written atomically, nothing else left


def test_titles_map_to_the_right_movies(tmp_path, capsys):
    """MostPop on a hand-made ML-1M folder with movies.dat. Training parts (all but the last two plays): user 1
    10 40 50 30, user 2 40 30 20, user 3 40 20 10, user 7 10 20; user 7 saw 10, 20, 60, so the most popular
    movies left for them are 40 (3 training plays), 30 (2), 50 (1)."""
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    plays = {1: [10, 40, 50, 30, 20, 40], 2: [40, 30, 20, 10, 60], 3: [40, 20, 10, 30, 60], 7: [10, 20, 60, 10]}
    lines, t = [], 1000
    for user, movies in plays.items():
        for movie in movies:
            t += 1
            lines.append(f"{user}::{movie}::5::{t}")
    (folder / "ratings.dat").write_text("\n".join(lines) + "\n")
    names = {10: "Ten", 20: "Twenty", 30: "Thirty", 40: "Forty", 50: "Fifty", 60: "Sixty"}
    (folder / "movies.dat").write_bytes("".join(f"{m}::{n} (199{m // 10})::Drama\n" for m, n in names.items())
                                        .encode("iso-8859-1"))
    generate_dataset(GenerateOptions(raw_path=folder, output_dir=tmp_path / "data", min_item_count=1,
                                     num_negatives=1), progress=False, log=lambda *a: None)
    config = tmp_path / "pop.json"
    config.write_text('{"model": "MostPop"}')
    train(options(tmp_path, tmp_path / "data", "pop_run", config_path=config))
    proc = cli("recommend.py", "--CHECKPOINTS", str(tmp_path / "pop_run"), "--user", "7", "--k", "3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = proc.stdout.split("rank ", 1)[1].splitlines()[1:4]
    ranked = [line.split() for line in table]
    assert [(r[0], r[1], r[3]) for r in ranked] == [("1", "40", "Forty"), ("2", "30", "Thirty"),
                                                    ("3", "50", "Fifty")]
    assert "movie ids are MovieLens ids" in proc.stdout and str(folder / "movies.dat") in proc.stdout


def test_recommend_and_export_refuse_bad_input_in_one_line(sasrec_run, tmp_path):
    one_error_line(cli("recommend.py", "--CHECKPOINTS", str(tmp_path / "nope"), "--user", "1"), "no such run folder")
    one_error_line(cli("recommend.py", "--CHECKPOINTS", str(sasrec_run), "--user", "100000"),
                   "--user 100000: no such user")
    one_error_line(cli("recommend.py", "--CHECKPOINTS", str(sasrec_run), "--user", "1", "--k", "0"),
                   "--k must be >= 1")
    one_error_line(cli("recommend.py", "--CHECKPOINTS", str(sasrec_run), "--history", "1,2,777"),
                   "unknown item id 777")
    one_error_line(cli("export.py", "--CHECKPOINTS", str(sasrec_run), "--output", str(tmp_path / "x"), "--k", "0"),
                   "--k must be >= 1")


def test_a_checkpoint_of_another_model_is_refused(sasrec_run, planted, tmp_path):
    root, data_dir = planted
    bert = train(options(root, data_dir, "use_bert", num_train_steps=2, eval_every=2))
    assert bert["model"] == "BERT4Rec"
    mixed = tmp_path / "mixed"
    shutil.copytree(sasrec_run, mixed)
    shutil.copy(root / "use_bert" / "best.pdparams", mixed / "best.pdparams")
    with pytest.raises(UserError, match="a BERT4Rec checkpoint, but .*results.json describes a SASRec run"):
        load_run(mixed)


def test_report_numbers_equal_the_results_files(sasrec_run, tmp_path):
    out = tmp_path / "report.md"
    proc = cli("report.py", str(sasrec_run), "--output", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    results = json.loads((sasrec_run / "results.json").read_text())
    row = next(line for line in text.splitlines() if line.startswith("| use_sasrec |") and "| FULL |" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    metrics = results["test"]["full"]
    assert cells[5:11] == [f"{metrics[m]:.4f}" for m in ("HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR")]
    assert "| popularity baseline | MostPop |" in text and (tmp_path / "report.png").stat().st_size > 1000
    assert "published" not in text  # not ML-1M: no published rows


@pytest.mark.parametrize("model", ["SASRec", "BERT4Rec", "MostPop"])
def test_the_exported_model_answers_like_the_trained_one(sasrec_run, planted, tmp_path, model):
    """The same items in the same order, ties included (MostPop's counts tie often: the smaller id first), for
    histories longer than the model reads too (all of it excluded)."""
    from bert4rec.export import Predictor

    run_dir = sasrec_run
    root, data_dir = planted
    if model == "BERT4Rec":
        train(options(root, data_dir, "use_bert_export", num_train_steps=30, eval_every=30))
        run_dir = root / "use_bert_export"
    elif model == "MostPop":
        config = root / "use_pop_export.json"
        config.write_text('{"model": "MostPop"}')
        train(options(root, data_dir, "use_pop_export", config_path=config))
        run_dir = root / "use_pop_export"
    proc = cli("export.py", "--CHECKPOINTS", str(run_dir), "--output", str(tmp_path / "exported"), "--k", "7")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {"model.json", "model.pdiparams", "export.json", "items.txt"} <= {p.name for p in
                                                                             (tmp_path / "exported").iterdir()}
    run = load_run(run_dir)
    test = run.test_set()
    histories = [list(test.user_history(i)) for i in range(0, len(test), 7)]
    rng = np.random.default_rng(0)
    histories += [rng.permutation(np.arange(1, 61))[:52].tolist() for _ in range(4)]  # > max_history, 8 items left
    assert max(len(h) for h in histories) > run.model.max_history()
    expected_items, expected_scores = top_k(run.model.predict(histories), histories, 7)
    if model == "MostPop":
        ties = [len(set(row.tolist())) < len(row) for row in np.round(expected_scores, 6)]
        assert sum(ties) > len(histories) // 2  # the case that used to differ
    items, scores = Predictor(tmp_path / "exported").recommend(histories)
    assert np.array_equal(items, expected_items)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-4, rtol=1e-4)


def test_rescore_recomputes_the_results_from_the_checkpoint(sasrec_run, tmp_path):
    proc = cli("bench/rescore.py", str(sasrec_run))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "largest difference" in proc.stdout
    tampered = tmp_path / "tampered"
    shutil.copytree(sasrec_run, tampered)
    results = json.loads((tampered / "results.json").read_text())
    results["test"]["full"]["NDCG@10"] += 0.01
    (tampered / "results.json").write_text(json.dumps(results))
    one_error_line(cli("bench/rescore.py", str(tampered)), "differ from results.json by up to 0.0100")


def test_report_shows_the_papers_ml20m_row_for_ml20m_data(synthetic, tmp_path):
    from conftest import generate, write_raw

    data_dir = tmp_path / "ml-20m"
    generate(write_raw(synthetic, tmp_path / "raw", "ml-20m"), data_dir, num_negatives=5)
    assert json.loads((data_dir / "stats.json").read_text())["format"] == "ml-20m"
    config = tmp_path / "mostpop.json"
    config.write_text('{"model": "MostPop"}')
    train(options(tmp_path, data_dir, "pop20m", config_path=config, max_len=60))
    out = tmp_path / "report.md"
    proc = cli("report.py", str(tmp_path / "pop20m"), "--output", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in out.read_text().splitlines() if line.startswith("| published |")]
    assert len(rows) == 1 and "| ML-20M | POP100 |" in rows[0] and "0.7473" in rows[0] and "0.5340" in rows[0]


def test_top_k_of_a_large_catalogue_equals_the_full_sort_with_ties_and_exclusions():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 40, size=(64, 5001)).astype(np.float32)  # many ties at every boundary
    scores[5, :] = 1.0  # a row of nothing but ties
    scores[6, 100:] = -np.inf  # fewer than k items left
    scores[7, 10:20] = np.nan
    seen = [rng.choice(np.arange(1, 5001), size=rng.integers(0, 50), replace=False) for _ in range(64)]
    items, best = top_k(scores, seen, 20)
    masked = scores.copy()
    masked[:, 0] = -np.inf
    for row, s in enumerate(seen):
        masked[row, s] = -np.inf
    expected = np.argsort(-masked, axis=1, kind="stable")[:, :20]  # the plain definition
    expected_best = np.take_along_axis(masked, expected, axis=1)
    expected[~np.isfinite(expected_best)] = 0
    assert items.shape == (64, 20) and np.array_equal(items, expected)
    finite = np.isfinite(expected_best)
    assert np.array_equal(best[finite], expected_best[finite]) and not np.isfinite(best[~finite]).any()
    assert items[5].tolist() == [i for i in range(1, 60) if i not in set(seen[5].tolist())][:20]


def test_the_exported_graphs_top_k_equals_a_stable_sort_in_linear_time():
    import paddle

    from bert4rec.export import stable_top_k

    rng = np.random.default_rng(5)
    scores = rng.integers(0, 30, size=(32, 3000)).astype(np.float32)  # ties everywhere, at every boundary
    scores[3, :] = 2.0
    scores[4, 7:] = -1e30  # the graph's excluded items
    got = stable_top_k(paddle.to_tensor(scores), 25).numpy()
    assert np.array_equal(got, np.argsort(-scores, axis=1, kind="stable")[:, :25])
