"""BERT4Rec (Sun et al., CIKM 2019): a bidirectional transformer trained to fill in masked items.

input ids -> item + learned position embeddings -> LayerNorm, dropout -> transformer encoder -> at the
positions to predict: dense + gelu + LayerNorm -> dot product with the (tied) item embeddings + output bias.
Logits are computed only where they are needed (masked positions in training, the last position at
evaluation), which is most of the output-layer cost saved.
"""

from __future__ import annotations

import paddle
from paddle import nn

from bert4rec.config import BertConfig
from bert4rec.fused_ops import fused_attention_available
from bert4rec.transformer_encoder import TransformerEncoder, activation, attention_mask

PAD_ID = 0


class BERT4Rec(nn.Layer):
    def __init__(self, config: BertConfig, attention: str = "auto") -> None:
        super().__init__()
        if attention not in ("auto", "fused", "plain"):
            raise ValueError(f"attention must be auto, fused or plain, got {attention!r}")
        self.config = config
        self.attention = attention  # auto: the fused CPU kernel when it is available
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
        positions = paddle.arange(length, dtype="int64").unsqueeze(0)
        x = self.item_embeddings(input_ids) + self.position_embeddings(positions)
        x = self.embedding_dropout(self.embedding_norm(x))
        return self.encoder(x, attention_mask(input_ids, PAD_ID, self._use_fused()))

    def _use_fused(self) -> bool:
        if self.attention == "plain":
            return False
        available = fused_attention_available()
        if self.attention == "fused" and not available:
            raise RuntimeError("fused attention requested but the CPU kernel is unavailable")
        return available

    def output_logits(self, states: paddle.Tensor) -> paddle.Tensor:
        """[N, H] hidden states -> [N, vocab] logits; the output projection is the item embedding table."""
        h = self.head_norm(self.head_act(self.head_transform(states)))
        return paddle.matmul(h, self.item_embeddings.weight, transpose_y=True) + self.output_bias

    def forward(self, input_ids: paddle.Tensor, flat_positions: paddle.Tensor) -> paddle.Tensor:
        """Logits at the given positions; ``flat_positions`` index the flattened [B*L] sequence grid."""
        states = self.encode(input_ids)
        flat = states.reshape([-1, states.shape[-1]])
        return self.output_logits(paddle.gather(flat, flat_positions))

    def loss(self, input_ids: paddle.Tensor, flat_positions: paddle.Tensor, labels: paddle.Tensor) -> paddle.Tensor:
        """Mean cross-entropy over all masked positions of the batch (the original BERT4Rec objective)."""
        logits = self(input_ids, flat_positions)
        return nn.functional.cross_entropy(logits, labels.unsqueeze(-1)).mean()
