"""BERT4Rec (Sun et al., CIKM 2019): a bidirectional transformer trained to fill in masked items.

input ids -> item + learned position embeddings -> LayerNorm, dropout -> bidirectional transformer encoder ->
at the positions to predict: dense + gelu + LayerNorm -> dot product with the (tied) item embeddings + output bias.
Logits are computed only where they are needed (masked positions in training, the ``[MASK]`` appended to the
history at evaluation), which is most of the output layer's cost saved.

Training batches come from the shared windows, masked afresh every epoch (config ``"masking": "dynamic"``, with
``mask_last_prob`` of the windows always masking their last item), or from the instances ``gen_data_fin.py``
masked once into ``train.txt`` (``"masking": "fixed"``, the original); ``trainrec.py --MASKING`` etc. set them.
On CPU the head's dense + gelu + LayerNorm and the loss's bias + softmax cross-entropy run as fused kernels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import paddle
from paddle import nn

from bert4rec.config import TrainOptions
from bert4rec.data.dataset import TrainingData, check_item_ids
from bert4rec.data.files import load_train_instances
from bert4rec.errors import UserError
from bert4rec.fused_ops import bias_act_layernorm
from bert4rec.instances import TrainInstances, mask_windows
from bert4rec.models.base import TrainingBatches, full_softmax_cross_entropy, last_positions
from bert4rec.models.transformer import TransformerConfig, TransformerRecommender, activation


@dataclass(frozen=True)
class BERT4RecConfig(TransformerConfig):
    MODEL: ClassVar[str] = "BERT4Rec"
    REQUIRED: ClassVar[tuple[str, ...]] = ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                           "intermediate_size", "max_position_embeddings")
    IGNORED: ClassVar[tuple[str, ...]] = ("type_vocab_size",)  # BERT's segments: BERT4Rec has none
    LOWERCASE: ClassVar[tuple[str, ...]] = ("loss",)

    loss: str = "ce"  # softmax cross-entropy over all items at the masked positions
    # how training windows are masked: dynamic re-masks them every epoch (``trainrec.py --MASKING``); fixed reads
    # the instances gen_data_fin.py masked once into train.txt (the original)
    masking: str = "dynamic"
    masked_lm_prob: float = 0.2   # dynamic: share of a window's items masked (--MASKED_LM_PROB)
    max_predictions: int = 40     # dynamic: at most this many per window (--MAX_PREDICTIONS)
    mask_last_prob: float = 0.5   # dynamic: share of windows whose last item is always masked (--MASK_LAST_PROB)

    def problem(self) -> str | None:
        return (super().problem() or self._choice("loss", ("ce",)) or self._choice("masking", ("dynamic", "fixed"))
                or self._positive_ints("max_predictions") or self._share("masked_lm_prob", zero=False)
                or self._share("mask_last_prob", zero=True))

    def training_files(self, opts, sessions: bool) -> list[tuple[str, Path]]:
        """``masking: fixed`` reads the instances gen_data_fin.py masked once (``train.txt``)."""
        if self.masking != "fixed":
            return []
        if sessions:
            raise UserError("masking fixed (--MASKING) reads train.txt, which --split date data does not have; "
                            "use dynamic")
        return [("--TRAIN_DATA_DIR", Path(opts.train_path))]


@dataclass
class MaskedBatch:
    input_ids: np.ndarray       # [B, L] int64, right-padded with 0, masked positions hold [MASK]
    flat_positions: np.ndarray  # [M] int64 indices into the flattened [B*L] grid
    labels: np.ndarray          # [M] int64 items to predict

    @property
    def num_sequences(self) -> int:
        return int(self.input_ids.shape[0])


def collate_masked(instances: TrainInstances, idx: np.ndarray, pad_to: int | None = None) -> MaskedBatch:
    """Gather the instances ``idx`` into one padded batch (width = their longest, or ``pad_to``)."""
    starts, ends = instances.token_offsets[idx], instances.token_offsets[idx + 1]
    width = int(pad_to if pad_to is not None else (ends - starts).max())
    input_ids = np.zeros((len(idx), width), dtype=np.int64)
    flat_pos, flat_lab = [], []
    for row, (a, b, i) in enumerate(zip(starts, ends, idx, strict=True)):
        input_ids[row, : b - a] = instances.tokens[a:b]
        m0, m1 = instances.mask_offsets[i], instances.mask_offsets[i + 1]
        flat_pos.append(instances.positions[m0:m1].astype(np.int64) + row * width)
        flat_lab.append(instances.labels[m0:m1])
    return MaskedBatch(input_ids, np.concatenate(flat_pos), np.concatenate(flat_lab).astype(np.int64))


class MaskedItemBatches(TrainingBatches):
    """BERT4Rec's training batches: the windows masked afresh each epoch, or train.txt's fixed instances."""

    def __init__(self, data: TrainingData, opts: TrainOptions, config: BERT4RecConfig) -> None:
        self.data, self.seed, self.config = data, opts.seed, config
        self.fixed = load_train_instances(data.train_path) if config.masking == "fixed" else None
        if self.fixed is not None:
            if len(self.fixed) == 0:
                raise UserError(f"{data.train_path}: no training instances")
            check_item_ids(data.train_path, self.fixed.tokens, self.fixed.token_offsets, data.num_items, "item",
                           allowed_extra=data.vocab.mask_id)
            check_item_ids(data.train_path, self.fixed.labels, self.fixed.mask_offsets, data.num_items, "label")
            if int(self.fixed.lengths.max()) > opts.max_len:
                raise UserError(f"{data.train_path}: instances of length {int(self.fixed.lengths.max())} exceed "
                                f"--MAX_LEN {opts.max_len}")
        self.num_examples = len(self.fixed) if self.fixed is not None else len(data.windows)

    def examples(self, epoch: int) -> TrainInstances:
        """The instances of one epoch: the fixed file, or every window freshly masked from (seed, epoch)."""
        if self.fixed is not None:
            return self.fixed
        config, vocab, windows = self.config, self.data.vocab, self.data.windows
        rng = np.random.default_rng([self.seed, epoch, 1])
        tokens, positions, labels, mask_offsets = mask_windows(
            windows.items, windows.offsets, rng, masked_lm_prob=config.masked_lm_prob,
            max_predictions=config.max_predictions, mask_prob=1.0, mask_id=vocab.mask_id, num_items=vocab.num_items,
            mask_last_prob=config.mask_last_prob)
        return TrainInstances(users=windows.users, tokens=tokens, token_offsets=np.asarray(windows.offsets),
                              positions=positions, labels=labels, mask_offsets=mask_offsets)

    def collate(self, examples: TrainInstances, idx: np.ndarray, rng: np.random.Generator) -> MaskedBatch:
        return collate_masked(examples, idx)


class BERT4Rec(TransformerRecommender):
    config_class = BERT4RecConfig

    def __init__(self, config: BERT4RecConfig, kernels: str = "auto") -> None:
        super().__init__(config, kernels)
        hidden = config.hidden_size
        self.head_transform = nn.Linear(hidden, hidden, weight_attr=self.weight_attr)
        self.head_act = activation(config.hidden_act)
        self.head_norm = nn.LayerNorm(hidden, epsilon=config.layer_norm_eps)
        self.output_bias = self.create_parameter(
            [config.vocab_size], is_bias=True, default_initializer=nn.initializer.Constant(0.0))

    @property
    def mask_id(self) -> int:
        return self.num_items + 1

    def training_batches(self, data: TrainingData, opts: TrainOptions) -> MaskedItemBatches:
        return MaskedItemBatches(data, opts, self.config)

    def _head(self, states: paddle.Tensor, fused: bool) -> paddle.Tensor:
        """[N, H] hidden states -> [N, H] output representations (dense + gelu + LayerNorm)."""
        norm = self.head_norm
        if fused:
            dense = paddle.matmul(states, self.head_transform.weight)
            return bias_act_layernorm(dense, self.head_transform.bias, norm.weight, norm.bias,
                                      self.config.hidden_act, norm._epsilon)
        return norm(self.head_act(self.head_transform(states)))

    def logits(self, input_ids: paddle.Tensor, flat_positions: paddle.Tensor) -> paddle.Tensor:
        """[M, vocab] logits at ``flat_positions`` (indices into the flattened [B*L] grid); the output projection
        is the item embedding table."""
        h = self._head(self.states_at(input_ids, flat_positions), self.uses_kernels())
        return paddle.matmul(h, self.item_embeddings.weight, transpose_y=True) + self.output_bias

    def loss(self, input_ids: paddle.Tensor, flat_positions: paddle.Tensor, labels: paddle.Tensor) -> paddle.Tensor:
        """Mean cross-entropy over all masked positions of the batch (the original BERT4Rec objective)."""
        fused = self.uses_kernels()
        h = self._head(self.states_at(input_ids, flat_positions), fused)
        return full_softmax_cross_entropy(h, self.item_embeddings.weight, labels.astype("int64"),
                                          bias=self.output_bias, fused=fused, smoothing=self.config.label_smoothing)

    def forward(self, batch: MaskedBatch) -> paddle.Tensor:
        return self.loss(*(paddle.to_tensor(x) for x in (batch.input_ids, batch.flat_positions, batch.labels)))

    def score_histories(self, history: paddle.Tensor) -> paddle.Tensor:
        """Scores for the next item: [MASK] appended after each history, logits read at that position."""
        lengths, at_mask = last_positions(history, 0)
        ids = paddle.concat([history, paddle.zeros_like(history[:, :1])], axis=1)
        slot = paddle.arange(paddle.shape(ids)[1], dtype="int64").unsqueeze(0) == lengths.unsqueeze(1)
        ids = paddle.where(slot, paddle.full_like(ids, self.mask_id), ids)
        return self.logits(ids, at_mask)[:, : self.num_items + 1]
