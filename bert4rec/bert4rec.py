"""BERT4Rec (Sun et al., CIKM 2019): a bidirectional transformer trained to fill in masked items.

input ids -> item + learned position embeddings -> LayerNorm, dropout -> transformer encoder -> at the
positions to predict: dense + gelu + LayerNorm -> dot product with the (tied) item embeddings + output bias.
Logits are computed only where they are needed (masked positions in training, the last position at
evaluation), which is most of the output-layer cost saved.

Two interchangeable implementations share the same parameters (same ``state_dict`` keys and shapes, so a
checkpoint loads into either): plain Paddle ops (any device) and, on CPU, bias-free matrix products plus the
fused kernels of ``bert4rec.fused_ops`` for everything elementwise (embedding sum + LayerNorm + dropout,
attention, bias + gelu, bias + dropout + residual + LayerNorm, the head's dense + gelu + LayerNorm, and the
loss's bias + softmax cross-entropy). ``kernels="auto"`` uses the fused kernels when they are available.
"""

from __future__ import annotations

import paddle
from paddle import nn

from bert4rec.config import BertConfig
from bert4rec.fused_ops import (
    bias_act_layernorm,
    bias_softmax_cross_entropy,
    embedding_layernorm_dropout,
    kernels_available,
)
from bert4rec.transformer_encoder import TransformerEncoder, activation, attention_mask

PAD_ID = 0


KERNEL_MODES = ("auto", "fused", "plain")


class BERT4Rec(nn.Layer):
    def __init__(self, config: BertConfig, kernels: str = "auto", attention: str | None = None) -> None:
        """``kernels``: auto (fused CPU kernels when available), fused (required) or plain (Paddle ops only).

        ``attention`` is the former name of ``kernels`` and, when given, takes precedence.
        """
        super().__init__()
        kernels = attention if attention is not None else kernels
        if kernels not in KERNEL_MODES:
            raise ValueError(f"kernels must be auto, fused or plain, got {kernels!r}")
        self.config = config
        self.kernels = kernels
        init = nn.initializer.TruncatedNormal(std=config.initializer_range)
        weight_attr = paddle.ParamAttr(initializer=init)
        hidden = config.hidden_size
        self.item_embeddings = nn.Embedding(config.vocab_size, hidden, weight_attr=weight_attr)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, hidden, weight_attr=weight_attr)
        self.embedding_norm = nn.LayerNorm(hidden, epsilon=1e-12)
        self.embedding_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.encoder = TransformerEncoder(config, weight_attr)
        self.head_transform = nn.Linear(hidden, hidden, weight_attr=weight_attr)
        self.head_act = activation(config.hidden_act)
        self.head_norm = nn.LayerNorm(hidden, epsilon=1e-12)
        self.output_bias = self.create_parameter(
            [config.vocab_size], is_bias=True, default_initializer=nn.initializer.Constant(0.0))

    def encode(self, input_ids: paddle.Tensor) -> paddle.Tensor:
        """[B, L] item ids (0 = padding, right-padded) -> [B, L, H] contextual item representations."""
        length = input_ids.shape[1]
        if length > self.config.max_position_embeddings:
            raise ValueError(f"sequence length {length} exceeds max_position_embeddings "
                             f"{self.config.max_position_embeddings}")
        fused = self.uses_kernels()
        tokens = self.item_embeddings(input_ids)
        norm = self.embedding_norm
        if fused:
            x = embedding_layernorm_dropout(tokens, self.position_embeddings.weight, norm.weight, norm.bias,
                                            self.embedding_dropout.p, self.training, norm._epsilon)
        else:
            positions = paddle.arange(length, dtype="int64").unsqueeze(0)
            x = self.embedding_dropout(norm(tokens + self.position_embeddings(positions)))
        return self.encoder(x, attention_mask(input_ids, PAD_ID, fused))

    def uses_kernels(self) -> bool:
        """Whether this model currently runs the fused CPU kernels (else plain Paddle ops)."""
        if self.kernels == "plain":
            return False
        available = kernels_available()
        if self.kernels == "fused" and not available:
            raise RuntimeError("fused CPU kernels requested but unavailable (BERT4REC_FUSED=0, not on CPU, "
                               "or the build failed)")
        return available

    def _head(self, states: paddle.Tensor, fused: bool) -> paddle.Tensor:
        """[N, H] hidden states -> [N, H] output representations (dense + gelu + LayerNorm)."""
        norm = self.head_norm
        if fused:
            dense = paddle.matmul(states, self.head_transform.weight)
            return bias_act_layernorm(dense, self.head_transform.bias, norm.weight, norm.bias,
                                      self.config.hidden_act, norm._epsilon)
        return norm(self.head_act(self.head_transform(states)))

    def output_logits(self, states: paddle.Tensor) -> paddle.Tensor:
        """[N, H] hidden states -> [N, vocab] logits; the output projection is the item embedding table."""
        h = self._head(states, self.uses_kernels())
        return paddle.matmul(h, self.item_embeddings.weight, transpose_y=True) + self.output_bias

    def _states_at(self, input_ids: paddle.Tensor, flat_positions: paddle.Tensor) -> paddle.Tensor:
        states = self.encode(input_ids)
        return paddle.gather(states.reshape([-1, states.shape[-1]]), flat_positions)

    def forward(self, input_ids: paddle.Tensor, flat_positions: paddle.Tensor) -> paddle.Tensor:
        """Logits at the given positions; ``flat_positions`` index the flattened [B*L] sequence grid."""
        return self.output_logits(self._states_at(input_ids, flat_positions))

    def loss(self, input_ids: paddle.Tensor, flat_positions: paddle.Tensor, labels: paddle.Tensor) -> paddle.Tensor:
        """Mean cross-entropy over all masked positions of the batch (the original BERT4Rec objective)."""
        if not self.uses_kernels():
            logits = self(input_ids, flat_positions)
            return nn.functional.cross_entropy(logits, labels.unsqueeze(-1)).mean()
        h = self._head(self._states_at(input_ids, flat_positions), True)
        # An explicit [H, vocab] transpose (a small copy) makes the backward ~30% faster than transpose_y=True.
        logits = paddle.matmul(h, paddle.transpose(self.item_embeddings.weight, [1, 0]))  # bias: in the loss
        return bias_softmax_cross_entropy(logits, self.output_bias, labels.astype("int64")).mean()
