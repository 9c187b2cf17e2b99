"""Transformer pieces shared by BERT4Rec (bidirectional) and SASRec (causal): the config, the post-LN encoder
(as in BERT and RecBole's SASRec) and a base model with item + position embeddings.

One fused QKV projection per layer, padded keys never receive attention, optionally a causal mask (position t
sees positions <= t only), and the original BERT's tanh-approximated gelu. Each layer runs either as plain Paddle
ops (any device) or, on CPU, as matrix products without bias (Paddle/MKL) plus the fused kernels of
``bert4rec.fused_ops`` for everything elementwise (same maths and parameters, several times faster on CPU; tests
check both agree). Padding never changes the outputs at real positions, which is what lets the trainer cut
batches to their longest sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import paddle
import paddle.nn.functional as F
from paddle import nn

from bert4rec.config import ModelConfig
from bert4rec.errors import UserError
from bert4rec.fused_ops import ACTIVATIONS as FUSED_ACTIVATIONS
from bert4rec.fused_ops import (
    bias_act,
    bias_dropout_residual_layernorm,
    embedding_layernorm_dropout,
    fused_attention,
)
from bert4rec.models.base import SequentialRecommender, truncated_normal

MASK_FILL = -1e9
PAD_ID = 0
ACTIVATIONS = tuple(FUSED_ACTIVATIONS)  # hidden_act values: the ones the fused kernels implement
KERNEL_MODES = ("auto", "fused", "plain")
LAYER_NORM_EPS = 1e-12


@dataclass(frozen=True)
class TransformerConfig(ModelConfig):
    """The encoder of a transformer model; keys as in the original BERT4Rec configs."""

    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    intermediate_size: int = 256
    max_position_embeddings: int = 200
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.2
    attention_probs_dropout_prob: float = 0.2
    initializer_range: float = 0.02
    layer_norm_eps: float = LAYER_NORM_EPS
    # softmax cross-entropy over all items: this share of the target's probability is spread evenly over every
    # item (Szegedy et al., 2016); 0 is the plain loss
    label_smoothing: float = 0.0

    def problem(self) -> str | None:
        problem = (super().problem()
                   or self._positive_ints("hidden_size", "num_hidden_layers", "num_attention_heads",
                                          "intermediate_size", "max_position_embeddings")
                   or self._choice("hidden_act", ACTIVATIONS)
                   or self._fractions("hidden_dropout_prob", "attention_probs_dropout_prob", "label_smoothing")
                   or self._positive_numbers("initializer_range", "layer_norm_eps"))
        if problem:
            return problem
        if self.max_position_embeddings < 2:
            return f"max_position_embeddings: must be at least 2, got {self.max_position_embeddings}"
        if self.hidden_size % self.num_attention_heads:
            return (f"hidden_size: {self.hidden_size} is not divisible by num_attention_heads "
                    f"{self.num_attention_heads}")
        return None

    def check_run(self, max_len: int, source: str) -> None:
        if max_len > self.max_position_embeddings:
            raise UserError(f"--MAX_LEN {max_len} exceeds max_position_embeddings {self.max_position_embeddings} "
                            f"in {source}")


def activation(name: str):
    """The feed-forward activation named in the config."""
    if name == "gelu":  # BERT's tanh approximation, as in the original BERT4Rec code
        return lambda x: F.gelu(x, approximate=True)
    return {"gelu_exact": F.gelu, "relu": F.relu, "swish": F.swish, "tanh": paddle.tanh,
            "sigmoid": F.sigmoid}[name]


@dataclass
class AttentionMask:
    """Which keys each position may see: real lengths for the fused kernels (right padding), an additive bias
    for plain ops; ``causal`` adds "no key after the query". ``fused`` also selects the path of the encoder."""

    fused: bool
    causal: bool = False
    lengths: paddle.Tensor | None = None  # [B] int64, real tokens per row
    bias: paddle.Tensor | None = None     # [B, 1, 1 or L, L] float32, 0 or a large negative number


def attention_mask(input_ids: paddle.Tensor, fused: bool, causal: bool = False) -> AttentionMask:
    """The padding (and causal) mask for right-padded ``input_ids`` in the form the chosen path needs."""
    is_real = input_ids != PAD_ID
    if fused:
        return AttentionMask(True, causal, lengths=is_real.astype("int64").sum(axis=1))
    bias = ((~is_real).astype("float32") * MASK_FILL).unsqueeze([1, 2])  # [B, 1, 1, L]
    if causal:
        length = paddle.shape(input_ids)[1]  # a tensor: also traceable with a dynamic length (export)
        later = paddle.triu(paddle.ones([length, length], dtype="float32"), diagonal=1)
        bias = bias + (later * MASK_FILL).unsqueeze([0, 1])  # [B, 1, L, L]
    return AttentionMask(False, causal, bias=bias)


class SelfAttention(nn.Layer):
    def __init__(self, config: TransformerConfig, weight_attr) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, weight_attr=weight_attr)
        self.out = nn.Linear(config.hidden_size, config.hidden_size, weight_attr=weight_attr)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def forward_unbiased(self, x: paddle.Tensor, mask: AttentionMask) -> paddle.Tensor:
        """Fused CPU path: the attention output *without* the output projection's bias (the caller fuses it)."""
        batch, length, hidden = x.shape
        qkv = paddle.matmul(x.reshape([-1, hidden]), self.qkv.weight).reshape([batch, length, 3 * hidden])
        context = fused_attention(qkv, self.qkv.bias, mask.lengths, self.num_heads, self.dropout.p, self.training,
                                  mask.causal)
        return paddle.matmul(context.reshape([-1, hidden]), self.out.weight).reshape([batch, length, hidden])

    def forward(self, x: paddle.Tensor, mask: AttentionMask) -> paddle.Tensor:
        if mask.fused:
            return self.forward_unbiased(x, mask) + self.out.bias
        # reshape's 0 keeps that dimension: batch and length may be dynamic (an exported graph)
        qkv = self.qkv(x).reshape([0, 0, 3, self.num_heads, self.head_dim])
        q, k, v = paddle.unbind(qkv.transpose([2, 0, 3, 1, 4]), axis=0)  # each [B, heads, L, head_dim]
        scores = paddle.matmul(q, k, transpose_y=True) * (1.0 / math.sqrt(self.head_dim)) + mask.bias
        probs = self.dropout(F.softmax(scores, axis=-1))
        context = paddle.matmul(probs, v).transpose([0, 2, 1, 3]).reshape([0, 0, self.num_heads * self.head_dim])
        return self.out(context)


class EncoderLayer(nn.Layer):
    def __init__(self, config: TransformerConfig, weight_attr) -> None:
        super().__init__()
        self.attention = SelfAttention(config, weight_attr)
        self.attention_norm = nn.LayerNorm(config.hidden_size, epsilon=config.layer_norm_eps)
        self.ffn_in = nn.Linear(config.hidden_size, config.intermediate_size, weight_attr=weight_attr)
        self.ffn_out = nn.Linear(config.intermediate_size, config.hidden_size, weight_attr=weight_attr)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, epsilon=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.hidden_act = config.hidden_act
        self.act = activation(config.hidden_act)

    def forward(self, x: paddle.Tensor, mask: AttentionMask) -> paddle.Tensor:
        if mask.fused:
            return self._forward_fused(x, mask)
        x = self.attention_norm(x + self.dropout(self.attention(x, mask)))
        return self.ffn_norm(x + self.dropout(self.ffn_out(self.act(self.ffn_in(x)))))

    def _forward_fused(self, x: paddle.Tensor, mask: AttentionMask) -> paddle.Tensor:
        """The same layer with the same parameters: bias-free matmuls + fused CPU kernels."""
        batch, length, hidden = x.shape
        p, norm1, norm2 = self.dropout.p, self.attention_norm, self.ffn_norm
        a = self.attention.forward_unbiased(x, mask)
        x = bias_dropout_residual_layernorm(a, self.attention.out.bias, x, norm1.weight, norm1.bias, p,
                                            self.training, norm1._epsilon)
        h = bias_act(paddle.matmul(x.reshape([-1, hidden]), self.ffn_in.weight), self.ffn_in.bias, self.hidden_act)
        f = paddle.matmul(h, self.ffn_out.weight).reshape([batch, length, hidden])
        return bias_dropout_residual_layernorm(f, self.ffn_out.bias, x, norm2.weight, norm2.bias, p, self.training,
                                               norm2._epsilon)

    def at_positions(self, x: paddle.Tensor, lengths: paddle.Tensor, causal: bool, flat_positions: paddle.Tensor
                     ) -> paddle.Tensor:
        """This layer's outputs [M, H] at ``flat_positions`` only (indices into the flattened [B*L] grid), for
        scoring in eval mode (no dropout): keys and values of every position, queries and the feed-forward only
        where an output is read -- the same function as running the layer on every position and gathering."""
        batch, length, hidden = x.shape
        heads = self.attention.num_heads
        head_dim = hidden // heads
        qkv = self.attention.qkv(x.reshape([-1, hidden]))                      # [B*L, 3H]
        q = paddle.gather(qkv[:, :hidden], flat_positions).reshape([-1, heads, 1, head_dim])
        rows = flat_positions // length

        def per_row(part: int) -> paddle.Tensor:  # [M, heads, L, head_dim]: the keys / values of each output's row
            t = qkv[:, part * hidden:(part + 1) * hidden].reshape([batch, length, heads, head_dim])
            return paddle.gather(t.transpose([0, 2, 1, 3]), rows)

        keys = paddle.arange(length, dtype="int64").unsqueeze(0)                 # [1, L]
        visible = keys < paddle.gather(lengths, rows).unsqueeze(1)
        if causal:
            visible = visible & (keys <= (flat_positions % length).unsqueeze(1))
        bias = paddle.where(visible, paddle.zeros(visible.shape, "float32"),
                            paddle.full(visible.shape, MASK_FILL, "float32")).unsqueeze([1, 2])
        scores = paddle.matmul(q, per_row(1), transpose_y=True) * (1.0 / math.sqrt(head_dim)) + bias
        context = paddle.matmul(F.softmax(scores, axis=-1), per_row(2)).reshape([-1, hidden])
        y = self.attention_norm(paddle.gather(x.reshape([-1, hidden]), flat_positions) + self.attention.out(context))
        return self.ffn_norm(y + self.ffn_out(self.act(self.ffn_in(y))))


class TransformerEncoder(nn.Layer):
    """A stack of ``num_hidden_layers`` encoder layers over [B, L, H] inputs."""

    def __init__(self, config: TransformerConfig, weight_attr=None) -> None:
        super().__init__()
        self.layers = nn.LayerList([EncoderLayer(config, weight_attr) for _ in range(config.num_hidden_layers)])

    def forward(self, x: paddle.Tensor, mask: AttentionMask, layers: int | None = None) -> paddle.Tensor:
        """The first ``layers`` layers (all by default)."""
        for layer in self.layers[:layers]:
            x = layer(x, mask)
        return x


class TransformerRecommender(SequentialRecommender):
    """Item + learned position embeddings -> LayerNorm, dropout -> transformer encoder (causal or not).

    ``kernels``: auto (fused CPU kernels when available), fused (required) or plain (Paddle ops only). Both paths
    have the same parameters (same ``state_dict``), so a checkpoint loads into either.
    """

    causal: ClassVar[bool] = False

    def __init__(self, config: TransformerConfig, kernels: str = "auto") -> None:
        super().__init__(config)
        if kernels not in KERNEL_MODES:
            raise ValueError(f"kernels must be auto, fused or plain, got {kernels!r}")
        self.kernels = kernels
        self.weight_attr = truncated_normal(config.initializer_range)
        hidden = config.hidden_size
        self.item_embeddings = nn.Embedding(config.vocab_size, hidden, weight_attr=self.weight_attr)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, hidden, weight_attr=self.weight_attr)
        self.embedding_norm = nn.LayerNorm(hidden, epsilon=config.layer_norm_eps)
        self.embedding_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.encoder = TransformerEncoder(config, self.weight_attr)

    def describe(self) -> str:
        c = self.config
        path = "fused CPU kernels" if self.uses_kernels() else "plain Paddle ops"
        return (f"{c.hidden_size} hidden, {c.num_hidden_layers} layers, {c.num_attention_heads} heads, {path}, "
                f"{self.num_parameters():,} parameters")

    def encode(self, input_ids: paddle.Tensor, layers: int | None = None) -> paddle.Tensor:
        """[B, L] item ids (0 = padding, right-padded) -> [B, L, H] contextual item representations (after the
        first ``layers`` encoder layers; all by default)."""
        length = input_ids.shape[1]  # not an int while tracing a graph of dynamic length (export)
        if isinstance(length, int) and length > self.config.max_position_embeddings:
            raise ValueError(f"sequence length {length} exceeds max_position_embeddings "
                             f"{self.config.max_position_embeddings}")
        fused = self.uses_kernels()
        tokens = self.input_vectors(input_ids)
        norm = self.embedding_norm
        if fused:
            x = embedding_layernorm_dropout(tokens, self.position_embeddings.weight, norm.weight, norm.bias,
                                            self.embedding_dropout.p, self.training, norm._epsilon)
        else:
            positions = paddle.arange(paddle.shape(input_ids)[1], dtype="int64").unsqueeze(0)
            x = self.embedding_dropout(norm(tokens + self.position_embeddings(positions)))
        return self.encoder(x, attention_mask(input_ids, fused, self.causal), layers)

    def input_vectors(self, input_ids: paddle.Tensor) -> paddle.Tensor:
        """[B, L] item ids -> [B, L, H] the vectors the encoder starts from (SASRecF adds item features)."""
        return self.item_embeddings(input_ids)

    def states_at(self, input_ids: paddle.Tensor, flat_positions: paddle.Tensor) -> paddle.Tensor:
        """[M, H] encoder outputs at ``flat_positions``, indices into the flattened [B*L] grid. Scoring (eval mode,
        fused kernels: the dygraph model, not the exported graph) runs the last layer at those positions only,
        about 40 % of a 2-layer encoder saved when one position per history is read."""
        if self.training or not self.uses_kernels():
            states = self.encode(input_ids)
            return paddle.gather(states.reshape([-1, self.config.hidden_size]), flat_positions)
        x = self.encode(input_ids, layers=len(self.encoder.layers) - 1)
        lengths = (input_ids != 0).astype("int64").sum(axis=1)
        return self.encoder.layers[-1].at_positions(x, lengths, self.causal, flat_positions)

    def max_history(self) -> int:
        """The longest input it was trained on leaves one position for the item to predict."""
        return self.max_len - 1
