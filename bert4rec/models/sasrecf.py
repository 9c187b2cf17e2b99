"""SASRecF: SASRec whose item vectors also carry the items' features (RecBole's SASRecF, on our kernels).

Every item's vector is its id embedding fused with one pooled embedding per selected feature (``genre``: the
item's genres, several per item; ``year``: its release decade; both from ``item_features.txt``):

* pooling over the values of a feature: ``sum`` (RecBole's default), ``mean`` or ``max`` (padding ignored);
* fusion: ``concat`` (RecBole: [id | feature_1 | ...] -> Linear -> hidden) or ``sum`` (id + features).

The fused vectors are used at the input *and* by the output layer (RecBole's SASRecF scores with id embeddings
only): every item is scored with its features, so an item seen rarely in training still gets a meaningful score.
MovieLens metadata (``item_features.txt``) uses fixed vocabularies (every MovieLens genre, the decades
1900s-2020s), so the model's size does not depend on the data; an item without metadata, or a genre/decade outside
them, has the ``[UNK]`` token. Features of an item table (``item_features.tsv``: any column, e.g. RecBole's
``class``) take their vocabulary and values-per-item from the data at training time (``feature_vocab``, recorded in
the checkpoint's config). The item->token tables are buffers filled by ``prepare(data)``: checkpoints carry them,
and recommending or exporting needs no data files.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from bert4rec.data.dataset import TrainingData
from bert4rec.errors import UserError
from bert4rec.models.sasrec import SASRec, SASRecConfig

FEATURES = ("genre", "year")
GENRES = ("Action", "Adventure", "Animation", "Children", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "IMAX", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War",
          "Western")
DECADES = tuple(f"{d}s" for d in range(1900, 2030, 10))
TOKENS = {"genre": GENRES, "year": DECADES}
MAX_VALUES = {"genre": 10, "year": 1}  # values per item kept (ML-20M has up to 10 genres)
MAX_WIDTH = 32  # an item table's feature: at most this many values per item
PAD, UNK = 0, 1  # feature tokens: 0 = no value, 1 = [UNK], 2.. the vocabulary
POOLING = ("sum", "mean", "max")
FUSION = ("concat", "sum")


@dataclass(frozen=True)
class SASRecFConfig(SASRecConfig):
    MODEL: ClassVar[str] = "SASRecF"
    LOWERCASE: ClassVar[tuple[str, ...]] = ("loss", "negative_sampling", "pooling_mode", "fusion")

    selected_features: tuple[str, ...] | list[str] = ("genre",)
    pooling_mode: str = "sum"
    fusion: str = "concat"
    feature_vocab: dict[str, list[str]] | None = None  # item-table features: tokens per feature (from the data)
    feature_width: dict[str, int] | None = None  # item-table features: values kept per item

    def __post_init__(self) -> None:
        object.__setattr__(self, "selected_features", tuple(self.selected_features))  # JSON lists -> a tuple
        super().__post_init__()

    def problem(self) -> str | None:
        problem = super().problem() or self._choice("pooling_mode", POOLING) or self._choice("fusion", FUSION)
        if problem:
            return problem
        if not self.selected_features or len(set(self.selected_features)) != len(self.selected_features) or \
                not all(isinstance(f, str) and f for f in self.selected_features):
            return f"selected_features: a non-empty list of distinct feature names (MovieLens metadata: " \
                   f"{list(FEATURES)}; an item table: its feature columns), got {list(self.selected_features)!r}"
        return None

    def with_data(self, data: TrainingData, source: str, vocab_path: str) -> SASRecFConfig:
        """The vocabulary size, and for an item table's features their vocabularies (most frequent first)."""
        config = super().with_data(data, source, vocab_path)
        features = data.item_features()
        missing = [f for f in self.selected_features if f not in features]
        if missing:
            origin = data.features_path if data.has_fixed_features else data.item_table_path
            raise UserError(f"{source}: selected_features {missing[0]!r} is not a feature of the data (its features "
                            f"in {origin.name}: {', '.join(features) or 'none'})")
        if data.has_fixed_features:
            return config
        vocab, width = {}, {}
        for f in self.selected_features:
            counts = Counter(v for values in features[f] for v in values if v)
            vocab[f] = sorted(counts, key=lambda token: (-counts[token], token))
            width[f] = max(1, min(MAX_WIDTH, max((len(v) for v in features[f]), default=1)))
        return dataclasses.replace(config, feature_vocab=vocab, feature_width=width)

    def tokens(self, feature: str) -> tuple[str, ...]:
        return tuple(self.feature_vocab[feature]) if self.feature_vocab else TOKENS[feature]

    def width(self, feature: str) -> int:
        return self.feature_width[feature] if self.feature_width else MAX_VALUES[feature]


def feature_tokens(values: list[tuple[str, ...]], vocabulary: tuple[str, ...], width: int) -> np.ndarray:
    """[items, width] token ids of one feature (0 = none, 1 = [UNK]) from the items' values."""
    index = {name: i + 2 for i, name in enumerate(vocabulary)}
    out = np.zeros((len(values), width), dtype=np.int64)
    for item, names in enumerate(values):
        tokens = [index.get(n, UNK) for n in names if n] if item else []
        out[item, : min(len(tokens), width)] = tokens[:width]
    return out


def pool(vectors: paddle.Tensor, tokens: paddle.Tensor, mode: str) -> paddle.Tensor:
    """[V, T, H] value embeddings -> [V, H], over the values that are not padding (an item without any: 0)."""
    real = (tokens != PAD).astype(vectors.dtype).unsqueeze(-1)  # [V, T, 1]
    if mode == "max":
        masked = vectors * real + (1.0 - real) * -1e9
        return paddle.where(real.sum(axis=1) > 0, masked.max(axis=1), paddle.zeros_like(vectors[:, 0]))
    total = (vectors * real).sum(axis=1)
    if mode == "mean":
        return total / paddle.clip(real.sum(axis=1), min=1.0)
    return total


class SASRecF(SASRec):
    config_class = SASRecFConfig

    def __init__(self, config: SASRecFConfig, kernels: str = "auto") -> None:
        super().__init__(config, kernels)
        self._table: paddle.Tensor | None = None  # the fused item table of the pass under way
        hidden = config.hidden_size
        self.feature_embeddings = nn.LayerDict({
            f: nn.Embedding(len(config.tokens(f)) + 2, hidden, weight_attr=self.weight_attr, padding_idx=PAD)
            for f in config.selected_features})
        for f in config.selected_features:
            self.register_buffer(f"{f}_tokens", paddle.zeros([config.vocab_size, config.width(f)], dtype="int64"))
        self.fuse = (nn.Linear(hidden * (1 + len(config.selected_features)), hidden, weight_attr=self.weight_attr)
                     if config.fusion == "concat" else None)

    def prepare(self, data: TrainingData) -> None:
        features = data.item_features()
        for f in self.config.selected_features:
            values = features[f] + [()] * (self.config.vocab_size - len(features[f]))  # special tokens: none
            tokens = feature_tokens(values, self.config.tokens(f), self.config.width(f))
            getattr(self, f"{f}_tokens").set_value(tokens)

    def describe(self) -> str:
        c = self.config
        return (f"{super().describe()}; features {', '.join(c.selected_features)} ({c.pooling_mode} pooling, "
                f"{c.fusion} fusion)")

    # Within one pass the inputs, the targets and the output layer all read one fused table: built once, its
    # gradient summed once, instead of fusing every item again for each of them.
    def forward(self, batch) -> paddle.Tensor:
        self._table = self._fused_table()
        loss = super().forward(batch)
        self._table = None
        return loss

    def score_histories(self, history: paddle.Tensor) -> paddle.Tensor:
        self._table = self._fused_table()
        scores = super().score_histories(history)
        self._table = None
        return scores

    def all_item_vectors(self) -> paddle.Tensor:
        """[V, H] every token's fused vector (the current pass's table inside ``forward``/``score_histories``)."""
        return self._table if self._table is not None else self._fused_table()

    def _fused_table(self) -> paddle.Tensor:
        """[V, H] every token's fused vector: id embedding with the pooled embedding of each feature."""
        parts = [self.item_embeddings.weight]
        for f in self.config.selected_features:
            tokens = getattr(self, f"{f}_tokens")
            parts.append(pool(self.feature_embeddings[f](tokens), tokens, self.config.pooling_mode))
        if self.fuse is not None:
            return self.fuse(paddle.concat(parts, axis=-1))
        return paddle.add_n(parts)

    def input_vectors(self, input_ids: paddle.Tensor) -> paddle.Tensor:
        return F.embedding(input_ids, self.all_item_vectors())

    def item_table(self) -> paddle.Tensor:
        return self.all_item_vectors()[: self.num_items + 1]

    def item_vectors(self, items: paddle.Tensor) -> paddle.Tensor:
        return F.embedding(items, self.all_item_vectors())
