"""Bidirectional transformer encoder (post-LN, as in BERT).

One fused QKV projection per layer (one matmul instead of three), padded keys never receive attention, and the
original BERT's tanh-approximated gelu. Each layer runs either as plain Paddle ops (any device) or, on CPU, as
matrix products without bias (Paddle/MKL) plus the fused kernels of ``bert4rec.fused_ops``: attention with the
qkv bias, bias + activation, and bias + dropout + residual + LayerNorm (same maths and parameters, several
times faster on CPU); tests check that both agree. Padding never changes the outputs at real positions, which
is what lets the trainer cut batches to their longest sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import paddle
import paddle.nn.functional as F
from paddle import nn

from bert4rec.config import BertConfig
from bert4rec.fused_ops import bias_act, bias_dropout_residual_layernorm, fused_attention

MASK_FILL = -1e9


def activation(name: str):
    """The feed-forward activation named in the config."""
    if name == "gelu":  # BERT's tanh approximation, as in the original BERT4Rec code
        return lambda x: F.gelu(x, approximate=True)
    if name == "gelu_exact":
        return F.gelu
    return F.relu


@dataclass
class AttentionMask:
    """Which keys are real: lengths for the fused kernels (right padding), an additive bias for plain ops.

    ``fused`` also selects the path of the whole encoder (fused CPU kernels or plain Paddle ops).
    """

    fused: bool
    lengths: paddle.Tensor | None = None  # [B] int64, real tokens per row
    bias: paddle.Tensor | None = None     # [B, 1, 1, L] float32, 0 or a large negative number


def attention_mask(input_ids: paddle.Tensor, pad_id: int, fused: bool) -> AttentionMask:
    """Padding mask for right-padded ``input_ids`` in the form the chosen attention path needs."""
    is_real = input_ids != pad_id
    if fused:
        return AttentionMask(True, lengths=is_real.astype("int64").sum(axis=1))
    return AttentionMask(False, bias=((~is_real).astype("float32") * MASK_FILL).unsqueeze([1, 2]))


class SelfAttention(nn.Layer):
    def __init__(self, config: BertConfig, weight_attr) -> None:
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
        context = fused_attention(qkv, self.qkv.bias, mask.lengths, self.num_heads, self.dropout.p, self.training)
        return paddle.matmul(context.reshape([-1, hidden]), self.out.weight).reshape([batch, length, hidden])

    def forward(self, x: paddle.Tensor, mask: AttentionMask) -> paddle.Tensor:
        if mask.fused:
            return self.forward_unbiased(x, mask) + self.out.bias
        batch, length, hidden = x.shape
        qkv = self.qkv(x).reshape([batch, length, 3, self.num_heads, self.head_dim])
        q, k, v = paddle.unbind(qkv.transpose([2, 0, 3, 1, 4]), axis=0)  # each [B, heads, L, head_dim]
        bias = mask.bias
        scores = paddle.matmul(q, k, transpose_y=True) * (1.0 / math.sqrt(self.head_dim)) + bias
        probs = self.dropout(F.softmax(scores, axis=-1))
        context = paddle.matmul(probs, v).transpose([0, 2, 1, 3]).reshape([batch, length, hidden])
        return self.out(context)


class EncoderLayer(nn.Layer):
    def __init__(self, config: BertConfig, weight_attr) -> None:
        super().__init__()
        self.attention = SelfAttention(config, weight_attr)
        self.attention_norm = nn.LayerNorm(config.hidden_size, epsilon=1e-12)
        self.ffn_in = nn.Linear(config.hidden_size, config.intermediate_size, weight_attr=weight_attr)
        self.ffn_out = nn.Linear(config.intermediate_size, config.hidden_size, weight_attr=weight_attr)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, epsilon=1e-12)
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


class TransformerEncoder(nn.Layer):
    """A stack of ``num_hidden_layers`` encoder layers over [B, L, H] inputs."""

    def __init__(self, config: BertConfig, weight_attr=None) -> None:
        super().__init__()
        self.layers = nn.LayerList([EncoderLayer(config, weight_attr) for _ in range(config.num_hidden_layers)])

    def forward(self, x: paddle.Tensor, mask: AttentionMask) -> paddle.Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return x
