"""Export a trained model as a static scoring graph for Paddle Inference, and answer requests with it.

The graph (``paddle.jit.to_static`` + ``paddle.jit.save``) takes ``history`` [B, L] int64 -- item ids, oldest
first, right-padded with 0, any length -- and returns the ``k`` best items per row and their scores: the model
reads the last ``max_history`` items of each row, and every item of the row (and the padding id) is excluded
inside the graph. It is built from plain Paddle
ops (the model is rebuilt with ``kernels="plain"``; the custom CPU kernels are not in it), through the model's own
``score_histories``, so every model of the project exports the same way. Under Paddle 3.x (PIR) ``jit.save``
writes ``model.json`` (the program) and ``model.pdiparams`` (the weights); ``export.json`` records what a client
needs (k, max_history, the number of items, the model) and ``items.txt`` maps item ids to original (MovieLens)
ids and titles.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import paddle
from paddle import nn

from bert4rec.errors import UserError
from bert4rec.fileio import atomic_dir, current_umask
from bert4rec.models import SequentialRecommender
from bert4rec.trained import TrainedRun

MODEL_NAME = "model"
NEVER = -1e30  # the score of an excluded item


def last_items(history: paddle.Tensor, keep: int) -> paddle.Tensor:
    """The last ``keep`` items of each right-padded row of ``history`` [B, L], right-padded to width
    min(L, keep): what the model reads, while the whole history is excluded from the recommendations."""
    lengths = (history != 0).astype("int64").sum(axis=1, keepdim=True)
    full_width = paddle.shape(history)[1].astype("int64")
    width = paddle.minimum(full_width, paddle.full([], keep, "int64"))
    start = paddle.maximum(lengths - keep, paddle.zeros_like(lengths))
    index = start + paddle.arange(width, dtype="int64").unsqueeze(0)
    picked = paddle.take_along_axis(history, paddle.minimum(index, full_width - 1), axis=1)
    return paddle.where(index < lengths, picked, paddle.zeros_like(picked))


class TopKScorer(nn.Layer):
    """History in, the ``k`` best unseen items and their scores out."""

    def __init__(self, model: SequentialRecommender, k: int) -> None:
        super().__init__()
        self.model = model
        self.k = k

    def forward(self, history: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        scores = self.model.score_histories(last_items(history, self.model.max_history()))  # [B, N + 1]
        seen = paddle.put_along_axis(paddle.zeros_like(scores), history, paddle.ones_like(history, "float32"),
                                     axis=1, reduce="assign")
        scores = paddle.where(seen > 0, paddle.full_like(scores, NEVER), scores)
        scores = paddle.concat([paddle.full_like(scores[:, :1], NEVER), scores[:, 1:]], axis=1)  # never [PAD]
        items = stable_top_k(scores, self.k)
        return items, paddle.take_along_axis(scores, items, axis=1)


def stable_top_k(scores: paddle.Tensor, k: int) -> paddle.Tensor:
    """The ``k`` best columns of each row of ``scores`` [B, N], equal scores ranking the smaller column first (as
    ``recommend.py`` does; ``paddle.topk`` alone orders ties arbitrarily), in time linear in N, not a sort: the
    columns above the k-th best score, plus the first of those equal to it; then those k sorted stably."""
    kth = paddle.topk(scores, k, axis=1)[0][:, k - 1:]
    above = scores > kth
    tied = scores == kth
    wanted = k - above.astype("int64").sum(axis=1, keepdim=True)
    chosen = above | (tied & (paddle.cumsum(tied.astype("int64"), axis=1) <= wanted))
    ids = paddle.arange(paddle.shape(scores)[1], dtype="int64").unsqueeze(0)
    picked = paddle.topk(paddle.where(chosen, -ids, paddle.full_like(ids, -(2 ** 62)).expand_as(scores)), k,
                         axis=1)[1]  # the chosen columns, smallest first
    order = paddle.argsort(paddle.take_along_axis(scores, picked, axis=1), axis=1, descending=True, stable=True)
    return paddle.take_along_axis(picked, order, axis=1)


def export_run(run: TrainedRun, output: Path, k: int) -> dict:
    """Write the scoring graph of ``run`` (rebuilt on plain ops) and its metadata to the folder ``output``."""
    from bert4rec.models import build_model

    plain = build_model(run.model.config, kernels="plain", max_len=run.model.max_len)
    plain.set_state_dict(run.model.state_dict())
    plain.eval()
    if not 1 <= k <= plain.num_items:
        raise UserError(f"--k must be in 1..{plain.num_items} (the number of items), got {k}")
    scorer = TopKScorer(plain, k)
    scorer.eval()
    spec = [paddle.static.InputSpec([None, None], "int64", name="history")]
    static = paddle.jit.to_static(scorer, input_spec=spec, full_graph=True)
    meta = {"model": run.results.get("model"), "k": k, "max_history": plain.max_history(),
            "num_items": plain.num_items,
            "inputs": {"history": "[B, L] int64: whole histories, oldest first, right-padded with 0"},
            "outputs": ["items [B, k] int64", "scores [B, k] float32"], "run": str(run.path.resolve()),
            "checkpoint": run.checkpoint.name}
    with atomic_dir(output) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Paddle's tracing chatter ("Tensor do not have 'place' interface")
        paddle.jit.save(static, str(tmp / MODEL_NAME))
        (tmp / "export.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        catalogue = run.catalogue()
        lines = [f"{item}\t{catalogue.item_original[item]}\t{catalogue.titles.get(item, ('', ''))[0]}"
                 for item in range(1, plain.num_items + 1)]
        (tmp / "items.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        tmp.chmod(0o777 & ~current_umask())
    meta["files"] = sorted(p.name for p in output.iterdir())
    return meta


def check_export_target(output: Path) -> None:
    """The export folder must be new, empty, or an earlier export (only its own files): nothing else is replaced."""
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output}: is a file, not a folder")
    if output.is_dir():
        own = {f"{MODEL_NAME}.json", f"{MODEL_NAME}.pdiparams", "export.json", "items.txt", f"{MODEL_NAME}.pdmodel"}
        foreign = sorted(p.name for p in output.iterdir() if p.name not in own)
        if foreign:
            raise UserError(f"--output {output}: holds {foreign[0]!r}, not an earlier export; choose a new folder")


class Predictor:
    """A Paddle Inference predictor of an exported folder: ``recommend(histories)`` -> (items, scores)."""

    def __init__(self, folder: Path, threads: int = 1) -> None:
        from paddle import inference

        folder = Path(folder)
        self.meta = json.loads((folder / "export.json").read_text(encoding="utf-8"))
        program = folder / f"{MODEL_NAME}.json"
        if not program.is_file():  # Paddle without PIR writes the older .pdmodel
            program = folder / f"{MODEL_NAME}.pdmodel"
        config = inference.Config(str(program), str(folder / f"{MODEL_NAME}.pdiparams"))
        config.disable_gpu()
        # oneDNN builds new kernels for every new input shape, and every history length is one: measured on the
        # exported SASRec (2 cores), p50 latency 7.4 ms with it, 2.6 ms without
        config.disable_mkldnn()
        config.set_cpu_math_library_num_threads(threads)
        config.disable_glog_info()
        self.predictor = inference.create_predictor(config)
        self.input = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        self.outputs = [self.predictor.get_output_handle(n) for n in self.predictor.get_output_names()]

    def recommend(self, histories: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """The top-k item ids and scores for each history (item ids of the data, oldest first)."""
        rows = [np.asarray(h, dtype=np.int64) for h in histories]
        batch = np.zeros((len(rows), max(1, max(len(r) for r in rows))), dtype=np.int64)
        for i, r in enumerate(rows):
            batch[i, : len(r)] = r
        self.input.copy_from_cpu(batch)
        self.predictor.run()
        items, scores = (o.copy_to_cpu() for o in self.outputs)
        return items, scores

