"""Hyper-parameter search: the hyper.test grammar, the grid, resuming, parallel workers, selection on
validation only, and tiny trials end to end."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from conftest import tiny_config

from bert4rec.errors import UserError
from bert4rec.models.bert4rec import BERT4RecConfig
from bert4rec.models.sasrec import SASRecConfig
from bert4rec.tuning.output import best_trial, hyper_result
from bert4rec.tuning.space import grid, parse_space

REPO = Path(__file__).resolve().parents[1]


def space(tmp_path, text: str, config=SASRecConfig):
    path = tmp_path / "hyper.test"
    path.write_text(text)
    return parse_space(path, config)


def test_every_type_and_recbole_names(tmp_path):
    params = space(tmp_path, "learning_rate loguniform -8,0\n"
                             "# a comment\n\n"
                             "n_layers choice [1, 2, 3]\n"
                             "hidden_dropout_prob uniform 0.1,0.5\n"
                             "BATCH_SIZE quniform 64,256,64\n"
                             "hidden_act choice ['gelu', 'relu']\n"
                             "loss_type choice ['CE', 'BPR']\n")
    by_name = {p.name: p for p in params}
    assert (by_name["learning_rate"].target, by_name["learning_rate"].key) == ("train", "lr")
    assert (by_name["learning_rate"].low, by_name["learning_rate"].high) == (-8.0, 0.0)
    assert (by_name["n_layers"].target, by_name["n_layers"].key, by_name["n_layers"].choices) == \
        ("config", "num_hidden_layers", [1, 2, 3])
    assert by_name["BATCH_SIZE"].key == "batch_size" and by_name["BATCH_SIZE"].q == 64
    assert by_name["hidden_act"].choices == ["gelu", "relu"] and by_name["loss_type"].key == "loss"
    assert [p.line for p in params] == [1, 4, 5, 6, 7, 8]


@pytest.mark.parametrize("text,needle", [
    ("learning_rate normal 0,1\n", "hyper.test:1: unknown type 'normal'"),
    ("n_layers choice [1, 2\n", "hyper.test:1: choice needs a Python list"),
    ("n_layers choice []\n", "hyper.test:1: choice needs a non-empty list"),
    ("\nhidden_dropout_prob uniform 0.5,0.1\n", "hyper.test:2: uniform needs low < high"),
    ("embedding_size choice [64]\n", "hyper.test:1: 'embedding_size' is neither a key of the SASRec config"),
    ("learning_rate loguniform -8\n", "hyper.test:1: loguniform needs low,high"),
    ("BATCH_SIZE quniform 64,256,0\n", "hyper.test:1: quniform's q must be > 0"),
    ("n_layers choice [1]\nnum_hidden_layers choice [2]\n", "hyper.test:2: 'num_hidden_layers' sets the same"),
    ("learning_rate\n", "hyper.test:1: expected 'name type values'"),
])
def test_bad_lines_name_file_and_line(tmp_path, text, needle):
    with pytest.raises(UserError, match=needle):
        space(tmp_path, text)


def test_the_grid_is_the_product_of_the_choices(tmp_path):
    params = space(tmp_path, "learning_rate choice [0.001, 0.01]\nn_layers choice [1, 2, 3]\n")
    points = grid(params, "hyper.test")
    assert len(points) == 6 and len({tuple(p.items()) for p in points}) == 6
    assert {(p["learning_rate"], p["n_layers"]) for p in points} == {(a, b) for a in (0.001, 0.01) for b in (1, 2, 3)}
    with pytest.raises(UserError, match="hyper.test:1: --algo exhaustive accepts only choice"):
        grid(space(tmp_path, "learning_rate uniform 0.001,0.01\n"), "hyper.test")


def test_selection_reads_validation_only():
    study = optuna.create_study(direction="maximize")
    good_test = {"Recall@10": 0.9, "MRR@10": 0.9, "NDCG@10": 0.9, "HR@10": 0.9, "Precision@10": 0.09}
    bad_test = {k: v / 9 for k, v in good_test.items()}
    study.add_trial(optuna.trial.create_trial(value=0.50, user_attrs={"values": {"lr": 1}, "valid": {"NDCG@10": 0.5},
                                                                      "test": good_test}))
    study.add_trial(optuna.trial.create_trial(value=0.60, user_attrs={"values": {"lr": 2}, "valid": {"NDCG@10": 0.6},
                                                                      "test": bad_test}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, intermediate_values={3: 0.7},
                                              user_attrs={"values": {"lr": 3}, "valid": {"NDCG@10": 0.7}}))
    assert best_trial(study.trials).user_attrs["values"] == {"lr": 2}  # better validation wins, whatever the test says
    text = hyper_result(study.trials)
    assert text.count("Valid result:") == 3 and text.count("Test result:") == 3  # one block per finished trial
    assert "lr:3\nValid result:\nrecall@10 : nan    mrr@10 : nan    ndcg@10 : 0.7000" in text
    assert text.endswith("Test result:\nrecall@10 : nan    mrr@10 : nan    ndcg@10 : nan    hit@10 : nan    "
                         "precision@10 : nan\n")  # the pruned trial was never tested
    assert "lr:1\nValid result:\nrecall@10 : nan" in text
    assert "ndcg@10 : 0.9000" in text and "hit@10 : 0.1000" in text


def tune(tmp_path, data_dir, *extra, timeout=600):
    cfg = tiny_config(tmp_path / "tiny.json", vocab_size="auto")
    cmd = [sys.executable, str(REPO / "tune.py"), "--CONFIG_PATH", str(cfg), "--DATA_DIR", str(data_dir),
           "--MAX_LEN", "50", "--BATCH_SIZE", "64", "--NUM_TRAIN_STEPS", "6", "--EVAL_EVERY", "3",
           "--CHECKPOINTS", str(tmp_path / "trials"), "--output_file", str(tmp_path / "hyper.result"), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def completed_values(tmp_path, states=("COMPLETE",)) -> list[dict]:
    trials = json.loads((tmp_path / "trials.json").read_text())["trials"]
    return [t["values"] for t in trials if t["state"] in states]


def test_tiny_trials_end_to_end_and_resume(planted, tmp_path):
    _, data_dir = planted
    (tmp_path / "hyper.test").write_text("learning_rate choice [0.001, 0.005, 0.01]\n")
    first = tune(tmp_path, data_dir, "--params_file", str(tmp_path / "hyper.test"), "--max_evals", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    assert len(completed_values(tmp_path)) == 1
    second = tune(tmp_path, data_dir, "--params_file", str(tmp_path / "hyper.test"))  # the same command resumes
    assert second.returncode == 0, second.stderr[-3000:]
    values = completed_values(tmp_path)
    assert sorted(v["learning_rate"] for v in values) == [0.001, 0.005, 0.01]  # each point once: 2 more ran
    assert len(list((tmp_path / "trials").glob("trial_*"))) == 3
    text = (tmp_path / "hyper.result").read_text()
    assert text.count("Valid result:") == 3 and "learning_rate:0.005\nValid result:\nrecall@10 : " in text
    best = json.loads((tmp_path / "best_params.json").read_text())
    trials = json.loads((tmp_path / "trials.json").read_text())["trials"]
    best_valid = max(t["objective"] for t in trials if t["state"] == "COMPLETE")
    assert best["objective"] == best_valid == best["valid"]["NDCG@10"] and Path(best["config_path"]).is_file()
    assert best["objective_metric"] == "FULL NDCG@10" and "--LR_RATE" in best["trainrec_flags"]
    assert "--NUM_TRAIN_STEPS 6" in best["command"] and "--MAX_LEN 50" in best["command"]  # the fixed flags too
    assert (tmp_path / "trials.png").stat().st_size > 1000


def test_a_dead_workers_trial_is_requeued_and_two_workers_share_the_grid(planted, tmp_path):
    import socket

    _, data_dir = planted
    (tmp_path / "hyper.test").write_text("learning_rate choice [0.001, 0.002]\nhidden_dropout_prob choice [0.1, 0.2]\n")
    storage = f"sqlite:///{tmp_path / 'trials' / 'tune.db'}"
    name = "shared"
    # a study whose first grid point was taken by a worker that died (kill -9): its trial is still RUNNING
    from bert4rec.tuning.search import Search, open_study
    from bert4rec.tuning.space import parse_space as parse

    params = parse(tmp_path / "hyper.test", BERT4RecConfig)
    fake = Search(params, None, None, "exhaustive", 4, storage, name, tmp_path / "hyper.test")  # type: ignore[arg-type]
    fake.config = BERT4RecConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                 max_position_embeddings=50, hidden_dropout_prob=0.1,
                                 attention_probs_dropout_prob=0.1)
    (tmp_path / "trials").mkdir()
    study = open_study(fake)
    dead = study.ask()
    dead.set_user_attr("worker", f"{socket.gethostname()}:99999999")
    proc = tune(tmp_path, data_dir, "--params_file", str(tmp_path / "hyper.test"), "--study", storage,
                "--study_name", name, "--workers", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # a grid point is done once it finished: with two workers the order varies, so the fourth one may be pruned
    values = completed_values(tmp_path, states=("COMPLETE", "PRUNED"))
    points = sorted((v["learning_rate"], v["hidden_dropout_prob"]) for v in values)
    assert points == [(0.001, 0.1), (0.001, 0.2), (0.002, 0.1), (0.002, 0.2)]  # every point exactly once
    trials = json.loads((tmp_path / "trials.json").read_text())["trials"]
    assert {t["worker"].rsplit(":", 1)[1] for t in trials if t["state"] == "COMPLETE"} != {"99999999"}
    assert any(t["number"] == dead.number and t["state"] == "FAIL" for t in trials)
    assert math.isfinite(max(t["objective"] for t in trials if t["state"] == "COMPLETE"))


def test_pruner_none_gives_every_trial_its_whole_budget(tmp_path):
    from bert4rec.tuning.search import Search, open_study

    (tmp_path / "hyper.test").write_text("learning_rate choice [0.001, 0.002]\n")
    params = parse_space(tmp_path / "hyper.test", BERT4RecConfig)
    config = BERT4RecConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            max_position_embeddings=50)
    url = f"sqlite:///{tmp_path / 'tune.db'}"
    pruners = {}
    for name in ("median", "none"):
        search = Search(params, config, None, "exhaustive", 2, url, name, tmp_path / "hyper.test",  # type: ignore[arg-type]
                        pruner=name)
        study = open_study(search)
        for value in (0.5, 0.6, 0.7):  # three finished trials, each reported 0.5+ at step 1
            trial = study.ask()
            trial.report(value, 1)
            study.tell(trial, value)
        trial = study.ask()
        trial.report(0.01, 1)  # far below the median
        pruners[name] = trial.should_prune()
    assert pruners == {"median": True, "none": False}


POP_QUEUED = """
import sys, optuna
from bert4rec.tuning.search import make_storage
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.load_study(study_name="race", storage=make_storage(sys.argv[1]))
while True:
    trial = study.ask()
    point = trial.user_attrs.get("grid_point")
    study.tell(trial, 0.0)
    if point is None:
        break
    print(point["i"], flush=True)
"""


def test_concurrent_workers_never_take_the_same_queued_point(tmp_path):
    """Four processes emptying one SQLite queue at once: every queued point is taken exactly once."""
    from bert4rec.tuning.search import make_storage

    url = f"sqlite:///{tmp_path / 'race.db'}"
    study = optuna.create_study(storage=make_storage(url), study_name="race")
    for i in range(40):
        study.enqueue_trial({"i": i}, user_attrs={"grid_point": {"i": i}})
    procs = [subprocess.Popen([sys.executable, "-c", POP_QUEUED, url], stdout=subprocess.PIPE, text=True,
                              cwd=REPO) for _ in range(4)]
    taken = [int(line) for proc in procs for line in proc.communicate(timeout=300)[0].split()]
    assert all(proc.returncode == 0 for proc in procs)
    assert sorted(taken) == list(range(40))


def test_bad_searches_stop_before_any_trial(planted, tmp_path):
    _, data_dir = planted
    (tmp_path / "hyper.test").write_text("learning_rate uniform 0.001,0.01\n")
    proc = tune(tmp_path, data_dir, "--params_file", str(tmp_path / "hyper.test"), "--algo", "random")
    assert proc.returncode == 2 and "--algo random needs --max_evals N" in proc.stderr
    (tmp_path / "hyper.test").write_text("num_attention_heads choice [2, 3]\n")  # 3 does not divide 32
    proc = tune(tmp_path, data_dir, "--params_file", str(tmp_path / "hyper.test"))
    assert proc.returncode == 2 and "hidden_size: 32 is not divisible by num_attention_heads 3" in proc.stderr
    (tmp_path / "hyper.test").write_text("mask_last_prob choice [0.2, 0.5]\n")  # tuned and fixed: which one?
    proc = tune(tmp_path, data_dir, "--params_file", str(tmp_path / "hyper.test"), "--MASK_LAST_PROB", "0.3")
    assert proc.returncode == 2 and "mask_last_prob is tuned and also set on the command line" in proc.stderr
    assert not (tmp_path / "trials").exists()


def test_baseline_first_runs_the_untuned_values_first(planted, tmp_path):
    _, data_dir = planted
    (tmp_path / "hyper.test").write_text("learning_rate choice [0.001, 0.005]\nhidden_dropout_prob uniform 0.0,0.5\n")
    proc = tune(tmp_path, data_dir, "--params_file", str(tmp_path / "hyper.test"), "--algo", "random",
                "--max_evals", "2", "--baseline_first", "--LR_RATE", "0.005")
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = json.loads((tmp_path / "trials.json").read_text())["trials"]
    first = min(trials, key=lambda t: t["number"])
    assert first["baseline"] and first["values"] == {"learning_rate": 0.005, "hidden_dropout_prob": 0.1}
    refused = tune(tmp_path, data_dir, "--params_file", str(tmp_path / "hyper.test"), "--algo", "random",
                   "--max_evals", "2", "--baseline_first", "--study_name", "other")  # LR 5e-3 default is 2e-3
    assert refused.returncode == 2 and "the untuned value of learning_rate (0.002) is not among" in refused.stderr


def fake_search(tmp_path, text: str, algo: str, max_evals: int, monkeypatch, ran: list):
    """A Search whose trials do not train: the objective is a function of the values (recorded in ``ran``)."""
    import bert4rec.tuning.search as search_module
    from bert4rec.tuning.search import Search

    (tmp_path / "hyper.test").write_text(text)
    params = parse_space(tmp_path / "hyper.test", SASRecConfig)

    def run_trial(trial, search):
        values = {p.name: search_module.suggest(trial, p) for p in search.params}
        ran.append(tuple(sorted(values.items())))
        return float(sum(v for v in values.values() if isinstance(v, int | float)))

    monkeypatch.setattr(search_module, "run_trial", run_trial)
    return Search(params, SASRecConfig(), None, algo, max_evals, f"sqlite:///{tmp_path / 'tune.db'}",  # type: ignore[arg-type]
                  "s", tmp_path / "hyper.test")


@pytest.mark.parametrize("algo", ["random", "bayes"])
def test_a_second_worker_or_a_restart_does_not_replay_the_first_workers_draws(tmp_path, monkeypatch, algo):
    from bert4rec.tuning.search import work

    ran: list = []
    first = fake_search(tmp_path, "learning_rate uniform 0.0001,0.01\nhidden_dropout_prob uniform 0.1,0.5\n",
                        algo, 3, monkeypatch, ran)
    work(first)  # worker 1 (or the run before a restart): 3 trials
    second = fake_search(tmp_path, "learning_rate uniform 0.0001,0.01\nhidden_dropout_prob uniform 0.1,0.5\n",
                         algo, 6, monkeypatch, ran)
    work(second)  # a worker started with the same --seed on the same study
    assert len(ran) == 6 and len(set(ran)) == 6


def test_random_and_bayes_never_repeat_a_point_of_a_finite_space(tmp_path, monkeypatch):
    from bert4rec.tuning.search import open_study, tpe_startup_trials, work

    for algo in ("random", "bayes"):
        ran: list = []
        (tmp_path / algo).mkdir()
        search = fake_search(tmp_path / algo, "learning_rate choice [0.001, 0.002, 0.004]\n"
                             "num_hidden_layers choice [1, 2]\n", algo, 10, monkeypatch, ran)
        work(search)
        assert sorted(ran) == sorted(set(ran)) and len(ran) == 6, (algo, ran)  # all 6 points, each once
        study = open_study(search)
        discarded = [t for t in study.trials if "duplicate_of" in t.user_attrs]
        assert all(t.state == optuna.trial.TrialState.FAIL for t in discarded)
    assert tpe_startup_trials(6) == 2 and tpe_startup_trials(100) == 10 and tpe_startup_trials(3) == 2
