"""What a run leaves behind besides checkpoints: the event log (``events.jsonl``), the plot of its curves
(``training.png``) and the test table printed at the end."""

from __future__ import annotations

import json
from pathlib import Path

from bert4rec.fileio import atomic_path, atomic_write_text

# BERT4Rec paper, Table 2, ML-1m row (POP100 protocol: 100 popularity-sampled negatives)
ML1M_ITEMS = 3416
PAPER_ML1M_POP100 = {"HR@1": 0.2863, "HR@5": 0.5876, "HR@10": 0.6970, "NDCG@10": 0.4818, "MRR": 0.4254}


class EventLog:
    """JSON-lines event log plus a PNG of the curves, both in the checkpoint directory (rank 0 only)."""

    def __init__(self, directory: Path, enabled: bool) -> None:
        self.path = directory / "events.jsonl"
        self.plot_path = directory / "training.png"
        self.enabled = enabled

    def write(self, event: dict) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(event) + "\n")

    def cut_after(self, step: int) -> None:
        """Keep only what happened up to ``step`` (resuming from a checkpoint of that step: the steps after it are
        run again and logged again; a test event belongs to a finished run)."""
        if self.enabled and self.path.exists():
            kept = [e for e in self.events() if e.get("event") != "test" and e.get("step", 0) <= step]
            atomic_write_text(self.path, "".join(json.dumps(e) + "\n" for e in kept))

    def events(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line]

    def plot(self) -> None:
        if self.enabled:
            plot_training_curves(self.events(), self.plot_path)


CURVES = {"full": (("full", "NDCG@10", "FULL NDCG@10"), ("full", "HR@10", "FULL HR@10"),
                   ("pop100", "HR@10", "POP100 HR@10")),
          "session": (("session", "Recall@20", "Recall@20"), ("session", "MRR@20", "MRR@20"),
                      ("session", "NDCG@10", "NDCG@10"))}


def subplots(*args, **kwargs):
    """A matplotlib figure on the file-only backend (no screen needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def label_axes(ax, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def save_png(fig, path: Path) -> None:
    """Write the figure to ``path`` atomically and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def validation_summary(metrics: dict) -> str:
    """One line of validation metrics (leave-one-out or session protocol)."""
    if "session" in metrics:
        m = metrics["session"]
        return (f"valid Recall@20 {m['Recall@20']:.4f} MRR@20 {m['MRR@20']:.4f} | HR@10 {m['HR@10']:.4f} "
                f"NDCG@10 {m['NDCG@10']:.4f}")
    return (f"valid FULL NDCG@10 {metrics['full']['NDCG@10']:.4f} HR@10 {metrics['full']['HR@10']:.4f} | "
            f"POP100 HR@10 {metrics['pop100']['HR@10']:.4f} NDCG@10 {metrics['pop100']['NDCG@10']:.4f}")


def plot_training_curves(events: list[dict], path: Path) -> None:
    """Training loss and the validation metrics against steps and wall time."""
    train = [e for e in events if e.get("event") == "train"]
    valid = [e for e in events if e.get("event") == "valid" and ("full" in e or "session" in e)]
    curves = CURVES["session" if valid and "session" in valid[0] else "full"]
    fig, axes = subplots(2, 2, figsize=(11, 7))
    for col, xkey, xlabel in ((0, "step", "step"), (1, "minutes", "training wall time (min)")):
        ax = axes[0][col]
        ax.plot([e[xkey] for e in train], [e["loss"] for e in train], lw=0.8, label="training loss")
        label_axes(ax, xlabel, "training loss")
        ax = axes[1][col]
        for (protocol, metric, label), marker in zip(curves, ("o-", "s-", "^-"), strict=True):
            ax.plot([e[xkey] for e in valid], [e[protocol][metric] for e in valid], marker, label=label)
        label_axes(ax, xlabel, "validation")
    save_png(fig, path)


def results_table(test: dict, num_items: int) -> str:
    """Test metrics; leave-one-out next to the paper's ML-1M row (POP100) when the data is ML-1M (3,416 items)."""

    def cell(value: float | None, width: int = 10) -> str:
        return f"{value:>{width}.4f}" if value is not None else f"{'-':>{width}}"

    if "session" in test:
        return "\n".join([f"{'metric':<14}{'session':>10}"] + [f"{name:<14}{cell(test['session'].get(name))}"
                                                               for name in ("Recall@20", "MRR@20", "HR@10",
                                                                            "NDCG@10")])
    with_paper = num_items == ML1M_ITEMS
    lines = [f"{'metric':<14}{'POP100':>10}{'paper ML-1m' if with_paper else '':>12}{'FULL':>10}"]
    for name in ("HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR", "Recall@10", "Precision@10"):
        paper = cell(PAPER_ML1M_POP100.get(name), 12) if with_paper else " " * 12
        lines.append(f"{name:<14}{cell(test['pop100'].get(name))}{paper}{cell(test['full'].get(name))}")
    return "\n".join(lines)
