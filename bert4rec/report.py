"""One comparison of any runs: a Markdown table of their test metrics next to published numbers and the
popularity baseline, and one PNG of their validation curves against training time (``report.py``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from bert4rec.errors import UserError
from bert4rec.fileio import atomic_write_text
from bert4rec.metrics import FULL_METRICS
from bert4rec.reporting import label_axes, save_png, subplots

ML1M_ITEMS = 3416
COLUMNS = ("HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR")
SESSION_COLUMNS = ("Recall@20", "MRR@20", "HR@10", "NDCG@10")
# Published ML-1M numbers the README names (the same leave-one-out split on the ML-1M sequence file).
PUBLISHED = [
    ("BERT4Rec, paper (Sun et al., CIKM 2019)", "POP100",
     {"HR@1": 0.2863, "HR@5": 0.5876, "HR@10": 0.6970, "NDCG@10": 0.4818, "MRR": 0.4254}),
    ("SASRec+ ce (Klenitskiy and Vasilev, RecSys 2023)", "FULL", {"NDCG@10": 0.1821}),
    ("SASRec+ sampled ce, 3,000 negatives (same paper)", "FULL", {"NDCG@10": 0.1857}),
    ("GRU4Rec (Klenitskiy and Vasilev, RecSys 2023, as quoted)", "FULL", {"HR@10": 0.2811, "NDCG@10": 0.1648}),
]
# The BERT4Rec paper's ML-20M row (its Table 2), shown when a run's data was generated from ML-20M's ratings.csv
PUBLISHED_ML20M = [("BERT4Rec, paper (Sun et al., CIKM 2019)", "POP100", {"HR@10": 0.7473, "NDCG@10": 0.5340})]


@dataclass
class Run:
    path: Path
    results: dict
    events: list[dict]

    @property
    def label(self) -> str:
        return self.path.name

    def config_name(self) -> str:
        config = self.results.get("config") or {}
        name = Path((self.results.get("options") or {}).get("config_path", "?")).stem
        return f"{name} ({config['loss']})" if "loss" in config and self.results.get("model") != "BERT4Rec" else name

    def data(self) -> str:
        d = self.results.get("data") or {}
        return f"{d.get('dataset', '?')}, {d.get('holdout', '?')}, {d.get('num_users', 0):,} users"

    @cached_property
    def stats(self) -> dict:
        """The generator's ``stats.json`` of the run's data ({} when it is not on this machine); read once."""
        test_path = (self.results.get("options") or {}).get("test_path")
        try:
            return json.loads(Path(test_path).with_name("stats.json").read_text(encoding="utf-8")) if test_path \
                else {}
        except (OSError, ValueError):
            return {}

    def leakage(self) -> str:
        """The data's leakage audit (``stats.json``), as a warning when evaluation targets precede training."""
        audit = self.stats.get("leakage")
        if not audit:
            return "not audited"
        before = audit.get("eval_targets_before_train_end")
        if before is None:
            return "no timestamps"
        if before == 0:
            return "none"
        return f"WARNING: {before:,} of {audit.get('eval_targets', 0):,} targets precede training's end"

    def cpu(self) -> str:
        machine = self.results.get("machine") or {}
        return f"{machine['cpu']}, {machine.get('cores', '?')} cores" if "cpu" in machine else "not recorded"

    def valid_curve(self) -> list[tuple[float, float]]:
        """Validation selection metric against training minutes (FULL NDCG@10; sessions: MRR@20)."""
        curve = []
        for e in self.events:
            if e.get("event") == "valid" and ("full" in e or "session" in e):
                curve.append((e["minutes"], e["full"]["NDCG@10"] if "full" in e else e["session"]["MRR@20"]))
        return curve


def read_run(path: Path) -> Run:
    results_path = Path(path) / "results.json"
    if not Path(path).is_dir():
        raise UserError(f"{path}: no such run folder")
    try:
        results = json.loads(results_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{results_path}: not found (not a finished training run)") from None
    except (OSError, ValueError) as err:
        raise UserError(f"{results_path}: not a readable results file ({err})") from None
    if not isinstance(results, dict) or not isinstance(results.get("test"), dict):
        raise UserError(f"{results_path}: no test metrics in it")
    events_path = Path(path) / "events.jsonl"
    events = []
    if events_path.is_file():
        for line in events_path.read_text(encoding="utf-8").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue  # a line cut by a crash: the curve just misses that point
    return Run(Path(path), results, events)


def _cells(metrics: dict, columns: tuple[str, ...] = COLUMNS) -> list[str]:
    return [f"{metrics[name]:.4f}" if name in metrics else "–" for name in columns]


def session_table(runs: list[Run], baselines: dict[str, dict]) -> str:
    """Runs on session data (``--split date``): every next event of every test session."""
    head = ["run", "model", "config", "data", *SESSION_COLUMNS, "predictions", "training min", "steps (best)", "CPU",
            "leakage"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for run in runs:
        r, m = run.results, run.results["test"]["session"]
        lines.append("| " + " | ".join([run.label, r.get("model", "?"), run.config_name(), run.data(),
                                         *_cells(m, SESSION_COLUMNS), f"{m.get('predictions', 0):,}",
                                         f"{r.get('train_seconds', 0) / 60:.1f}",
                                         f"{r.get('steps', '?'):,} ({r.get('best_step', '?'):,})", run.cpu(),
                                         run.leakage()]) + " |")
    for dataset, metrics in baselines.items():
        if "session" in metrics:
            lines.append("| " + " | ".join(["popularity baseline", "MostPop", "training-part counts", dataset,
                                             *_cells(metrics["session"], SESSION_COLUMNS), "–", "0", "–", "–", "–"])
                         + " |")
    return "\n".join(lines)


def table(runs: list[Run], baselines: dict[str, dict]) -> str:
    """The Markdown table of leave-one-out runs: every run under both protocols, the popularity baseline of each
    dataset, and the published rows of ML-1M / ML-20M when the runs are on them (``write_report`` passes only
    those)."""
    head = ["run", "model", "config", "data", "protocol", *COLUMNS, "training min", "steps (best)", "CPU", "leakage"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for run in runs:
        r = run.results
        for protocol in ("full", "pop100"):
            lines.append("| " + " | ".join([
                run.label, r.get("model", "?"), run.config_name(), run.data(), protocol.upper(),
                *_cells(r["test"].get(protocol) or {}), f"{r.get('train_seconds', 0) / 60:.1f}",
                f"{r.get('steps', '?'):,} ({r.get('best_step', '?'):,})", run.cpu(), run.leakage()]) + " |")
    for dataset, metrics in baselines.items():
        for protocol in ("full", "pop100"):
            lines.append("| " + " | ".join(["popularity baseline", "MostPop", "training-part counts", dataset,
                                             protocol.upper(), *_cells(metrics[protocol]), "0", "–", "–", "–"])
                         + " |")
    published = []
    if any((r.results.get("data") or {}).get("num_items") == ML1M_ITEMS for r in runs):
        published += [("ML-1M", *row) for row in PUBLISHED]
    if any(r.stats.get("format") == "ml-20m" for r in runs):
        published += [("ML-20M", *row) for row in PUBLISHED_ML20M]
    for dataset, name, protocol, metrics in published:
        lines.append("| " + " | ".join(["published", name, "–", dataset, protocol, *_cells(metrics), "–", "–", "–",
                                         "–"]) + " |")
    return "\n".join(lines)


def popularity_baselines(runs: list[Run]) -> dict[str, dict]:
    """MostPop's test metrics on each dataset the runs used (its counts from the training part only)."""
    from bert4rec.data.dataset import load_training_data, protocol_metrics
    from bert4rec.models.mostpop import MostPop, MostPopConfig

    out: dict[str, dict] = {}
    for run in runs:
        options = run.results.get("options") or {}
        key = run.data()
        if key in out or run.results.get("model") == "MostPop" or "vocab_path" not in options:
            continue
        paths = [Path(options[k]) if options.get(k) else None for k in ("vocab_path", "train_path", "valid_path",
                                                                        "test_path")]
        if not all(p is None or p.is_file() for p in paths) or not paths[0].is_file():
            continue  # the run's data is not on this machine: no baseline row for it
        data = load_training_data(paths[0], paths[1], paths[2], paths[3], int(options.get("max_len", 200)))
        model = MostPop(MostPopConfig(vocab_size=data.vocab.size))
        model.prepare(data)
        out[key] = protocol_metrics(data.evaluate(model, "test", 256))
    return out


def plot(runs: list[Run], path: Path) -> None:
    """Validation FULL NDCG@10 (sessions: MRR@20) against training minutes, one line per run."""
    fig, ax = subplots(figsize=(8, 5))
    for run in runs:
        curve = run.valid_curve()
        if curve:
            ax.plot(*zip(*curve, strict=True), "o-", ms=3, label=f"{run.label} ({run.results.get('model', '?')})")
    label_axes(ax, "training time (min)", "validation FULL NDCG@10 (session data: MRR@20)")
    save_png(fig, path)


def write_report(run_dirs: list[Path], output: Path) -> tuple[Path, Path]:
    """Read the runs, write ``output`` (Markdown) and the PNG beside it; returns both paths."""
    runs = [read_run(Path(p)) for p in run_dirs]
    png = output.with_suffix(".png")
    baselines = popularity_baselines(runs)
    loo = [r for r in runs if "session" not in r.results["test"]]
    sessions = [r for r in runs if "session" in r.results["test"]]
    parts = []
    if loo:
        parts.append(table(loo, {k: v for k, v in baselines.items() if "full" in v}))
    if sessions:
        parts.append("Session protocol (`--split date`): the next item at every event of every test session, "
                     "ranked among all items.\n\n" + session_table(sessions, baselines))
    text = (f"# Comparison of {len(runs)} run{'s' if len(runs) > 1 else ''}\n\n"
            "Test metrics of every user, each run's checkpoint chosen on validation FULL NDCG@10 and tested once; "
            "FULL ranks the target among all items (history excluded), POP100 among 100 popularity-sampled "
            f"negatives. FULL also has Recall@10 = HR@10 and Precision@10 = HR@10 / 10 ({', '.join(FULL_METRICS)} "
            "in results.json). *leakage*: the data's audit (`stats.json`): how many evaluation targets are earlier "
            "than the last training event (leave-one-out splits per user, not by time, so it is rarely none).\n\n"
            + "\n\n".join(parts)
            + f"\n\n![validation FULL NDCG@10 against training time]({png.name})\n")
    plot(runs, png)
    atomic_write_text(output, text)
    return output, png
