"""Bidirectional transformer encoder (post-LN, as in BERT) written on plain Paddle ops.

One fused QKV projection per layer (one matmul instead of three), an additive padding mask so padded keys never
receive attention, and the original BERT's tanh-approximated gelu. Padding never changes the outputs at real
positions, which is what lets the trainer cut batches to their longest sequence (see tests).
"""

from __future__ import annotations

import math

import paddle
import paddle.nn.functional as F
from paddle import nn

from bert4rec.config import BertConfig

MASK_FILL = -1e9


def activation(name: str):
    """The feed-forward activation named in the config."""
    if name == "gelu":  # BERT's tanh approximation, as in the original BERT4Rec code
        return lambda x: F.gelu(x, approximate=True)
    if name == "gelu_exact":
        return F.gelu
    return F.relu


def attention_bias(input_ids: paddle.Tensor, pad_id: int = 0) -> paddle.Tensor:
    """[B, 1, 1, L] additive bias: 0 for real keys, a large negative number for padding."""
    is_pad = (input_ids == pad_id).astype("float32")
    return (is_pad * MASK_FILL).unsqueeze([1, 2])


class SelfAttention(nn.Layer):
    def __init__(self, config: BertConfig, weight_attr) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, weight_attr=weight_attr)
        self.out = nn.Linear(config.hidden_size, config.hidden_size, weight_attr=weight_attr)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def forward(self, x: paddle.Tensor, bias: paddle.Tensor) -> paddle.Tensor:
        batch, length, hidden = x.shape
        qkv = self.qkv(x).reshape([batch, length, 3, self.num_heads, self.head_dim])
        q, k, v = paddle.unbind(qkv.transpose([2, 0, 3, 1, 4]), axis=0)  # each [B, heads, L, head_dim]
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
        self.act = activation(config.hidden_act)

    def forward(self, x: paddle.Tensor, bias: paddle.Tensor) -> paddle.Tensor:
        x = self.attention_norm(x + self.dropout(self.attention(x, bias)))
        return self.ffn_norm(x + self.dropout(self.ffn_out(self.act(self.ffn_in(x)))))


class TransformerEncoder(nn.Layer):
    """A stack of ``num_hidden_layers`` encoder layers over [B, L, H] inputs."""

    def __init__(self, config: BertConfig, weight_attr=None) -> None:
        super().__init__()
        self.layers = nn.LayerList([EncoderLayer(config, weight_attr) for _ in range(config.num_hidden_layers)])

    def forward(self, x: paddle.Tensor, bias: paddle.Tensor) -> paddle.Tensor:
        for layer in self.layers:
            x = layer(x, bias)
        return x
