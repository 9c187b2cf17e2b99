"""SASRec (Kang and McAuley, ICDM 2018): a causal transformer that predicts the next item at every position.

input ids -> item + learned position embeddings -> LayerNorm, dropout -> transformer encoder in which position t
only sees positions <= t -> at every real position, the next item's score = dot product with the item embeddings
(shared with the input, no output bias). The blocks are the post-LN ones of BERT and RecBole's SASRec, so SASRec
runs on the same fused CPU kernels as BERT4Rec (the attention kernel's causal mode).

Training sequences are the shared windows of ``train_windows.txt``: a window of n items gives n - 1 predictions
(input = its first n - 1 items, targets = its last n - 1). At evaluation the model reads the last ``max_len - 1``
items of the history, the longest input it was trained on, and scores the next item. Losses (``"loss"``):

* ``ce``: softmax cross-entropy over all items at every position ("SASRec+", Klenitskiy and Vasilev, RecSys 2023);
* ``bce``: one sampled negative per position, binary cross-entropy for the target and the negative (the original
  SASRec; the negative is uniform over the items not in the window);
* ``bpr``: the same negative, -log sigmoid(target score - negative score) (RecBole's BPR);
* ``sampled_ce``: cross-entropy over the target and ``num_negatives`` items shared by the batch, drawn without
  replacement uniformly or by training popularity (``negative_sampling``; popularity logits are corrected by
  -log of each item's inclusion probability, so the softmax stays unbiased); a negative equal to a position's
  target is left out of that position's softmax.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import paddle
import paddle.nn.functional as F

from bert4rec.batches import pad_rows
from bert4rec.config import TrainOptions
from bert4rec.data.dataset import TrainingData
from bert4rec.data.files import Windows
from bert4rec.errors import UserError
from bert4rec.instances import offsets_from_lengths, ragged_gather
from bert4rec.models.base import (
    TrainingBatches,
    full_softmax_cross_entropy,
    item_logits,
    last_positions,
    softmax_cross_entropy_sum,
)
from bert4rec.models.transformer import TransformerConfig, TransformerRecommender

LOSSES = ("ce", "bce", "bpr", "sampled_ce")
SAMPLINGS = ("uniform", "popularity")
NEGATIVE_RESAMPLES = 20  # rounds of redrawing a bce/bpr negative that falls inside its window


@dataclass(frozen=True)
class SASRecConfig(TransformerConfig):
    MODEL: ClassVar[str] = "SASRec"
    LOWERCASE: ClassVar[tuple[str, ...]] = ("loss", "negative_sampling")

    num_attention_heads: int = 1
    hidden_dropout_prob: float = 0.2
    attention_probs_dropout_prob: float = 0.2
    loss: str = "ce"
    num_negatives: int = 3000          # sampled_ce only
    negative_sampling: str = "uniform"  # sampled_ce only: uniform or popularity

    def problem(self) -> str | None:
        problem = (super().problem() or self._choice("loss", LOSSES) or self._positive_ints("num_negatives")
                   or self._choice("negative_sampling", SAMPLINGS))
        if not problem and self.label_smoothing and self.loss != "ce":
            return f"label_smoothing: applies to loss ce (the softmax over all items), not {self.loss!r}"
        return problem


@dataclass
class NextItemBatch:
    input_ids: np.ndarray       # [B, L] int64, right-padded with 0
    flat_positions: np.ndarray  # [M] int64: every real position, indices into the flattened [B*L] grid
    labels: np.ndarray          # [M] int64: the next item at each of them
    negatives: np.ndarray | None = None  # bce/bpr: [M], one per position; sampled_ce: [K] shared; ce: None
    negative_log_q: np.ndarray | None = None  # sampled_ce by popularity: [K] log inclusion probabilities

    @property
    def num_sequences(self) -> int:
        return int(self.input_ids.shape[0])


def uniform_negatives_outside(windows: list[np.ndarray], num_items: int, rng: np.random.Generator) -> np.ndarray:
    """One uniformly drawn item per prediction (``len(w) - 1`` per window) that is not in its window."""
    counts = np.array([len(w) - 1 for w in windows])
    row = np.repeat(np.arange(len(windows)), counts)
    seen = np.zeros((len(windows), num_items + 1), dtype=bool)
    seen[np.repeat(np.arange(len(windows)), [len(w) for w in windows]), np.concatenate(windows)] = True
    negatives = rng.integers(1, num_items + 1, size=len(row))
    for _ in range(NEGATIVE_RESAMPLES):
        clash = np.flatnonzero(seen[row, negatives])
        if not len(clash):
            break
        negatives[clash] = rng.integers(1, num_items + 1, size=len(clash))
    return negatives.astype(np.int64)


def popularity_negatives(counts: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``k`` distinct items drawn by popularity without replacement (Efraimidis-Spirakis keys), and the log of
    each one's probability of being among the ``k`` (estimated as for ``k`` draws with replacement)."""
    num_items = len(counts) - 1
    weights = np.maximum(counts[1:].astype(np.float64), 1e-12)
    keys = rng.standard_exponential(num_items) / weights
    chosen = np.argpartition(keys, k - 1)[:k] + 1 if k < num_items else np.arange(1, num_items + 1)
    p = weights / weights.sum()
    inclusion = 1.0 - np.power(1.0 - p[chosen - 1], k)
    return chosen.astype(np.int64), np.log(np.maximum(inclusion, 1e-12)).astype(np.float32)


def target_columns(negatives: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """For each target, its column among the (distinct) ``negatives``, or ``len(negatives)`` when it is none."""
    order = np.argsort(negatives, kind="stable")
    at = np.minimum(np.searchsorted(negatives[order], labels), len(negatives) - 1)
    found = negatives[order][at] == labels
    return np.where(found, order[at], len(negatives)).astype(np.int64)


def collate_next_items(windows: Windows, idx: np.ndarray, pad_to: int | None = None) -> NextItemBatch:
    """Windows ``idx`` as inputs (all but the last item, right-padded to the longest or ``pad_to``) and the
    next item at every real position."""
    chosen = [windows.window(i) for i in idx]
    inputs = pad_rows([w[:-1] for w in chosen], width=pad_to)
    counts = np.array([len(w) - 1 for w in chosen])
    row = np.repeat(np.arange(len(chosen)), counts)
    col = np.concatenate([np.arange(c) for c in counts])
    return NextItemBatch(inputs, (row * inputs.shape[1] + col).astype(np.int64),
                         np.concatenate([w[1:] for w in chosen]).astype(np.int64))


class NextItemBatches(TrainingBatches):
    """SASRec's training batches: every window of >= 2 items, its next-item targets, negatives by loss."""

    def __init__(self, data: TrainingData, config: SASRecConfig) -> None:
        lengths = data.windows.lengths
        keep = np.flatnonzero(lengths >= 2)
        if not len(keep):
            raise UserError(f"{data.train_path.with_name('train_windows.txt')}: no window has the 2 items a "
                            "next-item prediction needs")
        w = data.windows
        self.windows = Windows(w.users[keep], ragged_gather(w.items, w.offsets[keep], lengths[keep]),
                               offsets_from_lengths(lengths[keep]))
        self.num_examples = len(self.windows)
        self.config = config
        self.num_items = data.num_items
        self.popularity = data.training_item_counts() if config.negative_sampling == "popularity" else None
        self.shared_draws = config.loss == "sampled_ce"  # its negatives are the global batch's

    def examples(self, epoch: int) -> Windows:
        return self.windows

    def collate(self, examples: Windows, idx: np.ndarray, rng: np.random.Generator) -> NextItemBatch:
        batch = collate_next_items(examples, idx)
        loss = self.config.loss
        if loss in ("bce", "bpr"):
            batch.negatives = uniform_negatives_outside([examples.window(i) for i in idx], self.num_items, rng)
        elif loss == "sampled_ce":
            k = min(self.config.num_negatives, self.num_items)
            if self.popularity is None:
                batch.negatives = rng.choice(self.num_items, size=k, replace=False).astype(np.int64) + 1
            else:
                batch.negatives, batch.negative_log_q = popularity_negatives(self.popularity, k, rng)
        return batch


class SASRec(TransformerRecommender):
    config_class = SASRecConfig
    causal = True

    def training_batches(self, data: TrainingData, opts: TrainOptions) -> NextItemBatches:
        return NextItemBatches(data, self.config)

    def item_table(self) -> paddle.Tensor:
        """[N + 1, H] the item vectors the output layer scores against (rows 0..N; tied to the input)."""
        return self.item_embeddings.weight[: self.num_items + 1]

    def item_vectors(self, items: paddle.Tensor) -> paddle.Tensor:
        """The output-layer vectors of the given item ids."""
        return self.item_embeddings(items)

    def forward(self, batch: NextItemBatch) -> paddle.Tensor:
        h = self.states_at(paddle.to_tensor(batch.input_ids), paddle.to_tensor(batch.flat_positions))
        labels = paddle.to_tensor(batch.labels)
        loss = self.config.loss
        if loss == "ce":
            return self._full_cross_entropy(h, labels - 1)
        if loss in ("bce", "bpr"):
            pos = (h * self.item_vectors(labels)).sum(axis=-1)
            neg = (h * self.item_vectors(paddle.to_tensor(batch.negatives))).sum(axis=-1)
            if loss == "bpr":
                return F.softplus(neg - pos).mean()
            return (F.softplus(-pos) + F.softplus(neg)).mean()
        return self._sampled_cross_entropy(h, labels, batch)

    def _sampled_cross_entropy(self, h: paddle.Tensor, labels: paddle.Tensor, batch: NextItemBatch) -> paddle.Tensor:
        """Softmax over each position's target and the shared negatives but its own target, without editing the
        [M, K] block: a position whose target is among the negatives is scored at that negative's column (the
        same dot product) and its separate target column is masked instead; one more column carries the targets
        that are not among the negatives. Popularity negatives are corrected by -log q in the kernel's bias, and
        a target scored at a negative's column gets its log q back, so targets are never corrected."""
        k = len(batch.negatives)
        columns = paddle.to_tensor(target_columns(batch.negatives, batch.labels))          # [M], k: not a negative
        pos = (h * self.item_vectors(labels)).sum(axis=-1, keepdim=True)                    # [M, 1]
        pos = paddle.where(columns.unsqueeze(1) < k, paddle.full_like(pos, -1e9), pos)
        fused = self.uses_kernels()
        logits = paddle.concat([item_logits(h, self.item_vectors(paddle.to_tensor(batch.negatives)), fused), pos],
                               axis=1)                                                       # [M, K + 1]
        bias = None
        if batch.negative_log_q is not None:
            log_q = paddle.to_tensor(np.append(batch.negative_log_q, np.float32(0.0)))
            bias = -log_q
            at = columns.unsqueeze(1)
            logits = paddle.put_along_axis(logits, at, paddle.gather(log_q, columns).unsqueeze(1), axis=1, reduce="add")
        return softmax_cross_entropy_sum(logits, bias, columns, fused) / logits.shape[0]

    def _full_cross_entropy(self, h: paddle.Tensor, targets: paddle.Tensor) -> paddle.Tensor:
        """Mean softmax cross-entropy over all N items (``targets`` 0-based)."""
        return full_softmax_cross_entropy(h, self.item_table()[1:], targets, fused=self.uses_kernels(),
                                          smoothing=self.config.label_smoothing)

    def score_histories(self, history: paddle.Tensor) -> paddle.Tensor:
        """Scores for the next item: the output at each history's last item against every item embedding."""
        _, last = last_positions(history, -1)
        h = self.states_at(history, last)
        return paddle.matmul(h, self.item_table(), transpose_y=True)
