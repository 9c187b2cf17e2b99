"""What straightforward Paddle ports of BERT4Rec and SASRec look like: the speed reference of ``bench.py``.

Both use ``paddle.nn.TransformerEncoder`` (post-LN, gelu, the config's sizes and dropouts), item + position
embeddings + LayerNorm + dropout, and every batch padded to 200; they run in Paddle's default CPU environment.

* BERT4Rec, as the original TensorFlow code does it: the encoder runs over the padded batch, the hidden states
  of the **masked positions are gathered first**, and only there the output head (dense + gelu + LayerNorm, tied
  item embeddings + bias) and the softmax cross-entropy are computed.
* SASRec with the cross-entropy loss, as its straightforward ports (e.g. the "SASRec+" code) do it: a causal plus
  padding mask, logits over all items at **every one of the 200 positions**, the loss averaged over the real ones.
* GRU4Rec, session-parallel: ``paddle.nn.GRU`` one step at a time, a Python loop over the slots finding each one's
  next event and resetting the state of slots whose session ended, ``Linear`` output, ``cross_entropy``.
"""

from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import nn


class NaiveTransformer(nn.Layer):
    """Embeddings + ``paddle.nn.TransformerEncoder`` over right-padded item ids (0 = padding)."""

    def __init__(self, c: dict, vocab: int) -> None:
        super().__init__()
        hidden = c["hidden_size"]
        init = paddle.ParamAttr(initializer=nn.initializer.TruncatedNormal(std=c.get("initializer_range", 0.02)))
        self.item_embeddings = nn.Embedding(vocab, hidden, weight_attr=init)
        self.position_embeddings = nn.Embedding(c["max_position_embeddings"], hidden, weight_attr=init)
        self.embedding_norm = nn.LayerNorm(hidden, epsilon=1e-12)
        self.embedding_dropout = nn.Dropout(c["hidden_dropout_prob"])
        layer = nn.TransformerEncoderLayer(
            hidden, c["num_attention_heads"], c["intermediate_size"], dropout=c["hidden_dropout_prob"],
            activation="gelu", attn_dropout=c["attention_probs_dropout_prob"], act_dropout=0.0,
            normalize_before=False)
        self.encoder = nn.TransformerEncoder(layer, c["num_hidden_layers"])
        self.vocab = vocab

    def encode(self, input_ids: paddle.Tensor, causal: bool) -> paddle.Tensor:
        length = input_ids.shape[1]
        positions = paddle.arange(length, dtype="int64").unsqueeze(0)
        x = self.item_embeddings(input_ids) + self.position_embeddings(positions)
        x = self.embedding_dropout(self.embedding_norm(x))
        mask = (input_ids != 0).unsqueeze([1, 2])  # [B, 1, 1, L], True = may attend
        if causal:
            mask = paddle.logical_and(mask, paddle.tril(paddle.ones([length, length], dtype="bool")))
        return self.encoder(x, src_mask=mask)


class NaiveBERT4Rec(NaiveTransformer):
    def __init__(self, c: dict, vocab: int) -> None:
        super().__init__(c, vocab)
        self.head_transform = nn.Linear(c["hidden_size"], c["hidden_size"])
        self.head_norm = nn.LayerNorm(c["hidden_size"], epsilon=1e-12)
        self.output_bias = self.create_parameter([vocab], is_bias=True)

    def loss(self, input_ids, flat_positions, labels):
        x = self.encode(input_ids, causal=False)
        picked = paddle.gather(x.reshape([-1, x.shape[-1]]), flat_positions)  # the masked positions first
        h = self.head_norm(F.gelu(self.head_transform(picked)))
        logits = paddle.matmul(h, self.item_embeddings.weight, transpose_y=True) + self.output_bias
        return F.cross_entropy(logits, labels.unsqueeze(-1)).mean()


class NaiveSASRec(NaiveTransformer):
    def loss(self, input_ids, targets):
        """``targets`` [B, L]: the next item at each position, 0 at padding (ignored)."""
        x = self.encode(input_ids, causal=True)
        logits = paddle.matmul(x, self.item_embeddings.weight, transpose_y=True)  # [B, L, V] at every position
        return F.cross_entropy(logits, targets.unsqueeze(-1), ignore_index=0)


class NaiveGRU4Rec(nn.Layer):
    """GRU4Rec as third-party ports write it: ``paddle.nn.GRU`` fed one event per session per step, a Python loop
    keeping each slot's session and position, ``Linear`` output over all items, ``cross_entropy``."""

    def __init__(self, c: dict, vocab: int) -> None:
        super().__init__()
        hidden = c["hidden_size"]
        size = hidden if c.get("constrained_embedding", True) or not c.get("embedding_size") else c["embedding_size"]
        self.embedding = nn.Embedding(vocab, size)
        self.gru = nn.GRU(size, hidden, num_layers=c.get("num_hidden_layers", 1))
        self.dropout = nn.Dropout(c.get("hidden_dropout_prob", 0.0))
        self.output = nn.Linear(hidden, vocab)
        self.hidden, self.layers = hidden, c.get("num_hidden_layers", 1)

    def session_feeder(self, sessions, order, slots: int):
        """A function returning (batch-like counts, loss) of the next session-parallel step."""
        state = {"current": [-1] * slots, "position": [0] * slots, "next": 0,
                 "h": paddle.zeros([self.layers, slots, self.hidden])}
        for s in range(slots):
            state["current"][s], state["next"] = int(order[state["next"]]), state["next"] + 1

        class Counts:
            def __init__(self, active):
                self.active = active

        def step():
            inputs, targets, active = [], [], []
            for s in range(slots):  # find each slot's next event, restart slots whose session ended
                session = state["current"][s]
                if session < 0:
                    inputs.append(0), targets.append(0), active.append(False)
                    continue
                items = sessions.window(session)
                inputs.append(int(items[state["position"][s]]))
                targets.append(int(items[state["position"][s] + 1]))
                active.append(True)
                state["position"][s] += 1
                if state["position"][s] + 1 >= len(items):
                    if state["next"] < len(order):
                        state["current"][s], state["next"] = int(order[state["next"]]), state["next"] + 1
                    else:
                        state["current"][s] = -1
                    state["position"][s] = 0
                    mask = paddle.ones([1, slots, 1])
                    mask[0, s, 0] = 0.0
                    state["h"] = state["h"] * mask
            x = self.embedding(paddle.to_tensor(inputs)).unsqueeze(1)
            out, h = self.gru(x, state["h"])
            state["h"] = h.detach()
            logits = self.output(self.dropout(out[:, 0]))
            keep = paddle.to_tensor([i for i, a in enumerate(active) if a])
            loss = F.cross_entropy(paddle.gather(logits, keep), paddle.to_tensor(targets).gather(keep).unsqueeze(-1))
            return Counts(active), loss

        return step


def naive_optimizer(model: nn.Layer) -> paddle.optimizer.AdamW:
    """The trainer's optimiser (AdamW, no decay on LayerNorm weights and biases, global-norm clipping)."""
    no_decay = {p.name for n, p in model.named_parameters() if "norm" in n or n.endswith("bias") or p.ndim == 1}
    return paddle.optimizer.AdamW(
        learning_rate=1e-4, parameters=model.parameters(), weight_decay=0.01, beta1=0.9, beta2=0.999,
        epsilon=1e-6, grad_clip=paddle.nn.ClipGradByGlobalNorm(5.0),
        apply_decay_param_fun=lambda name: name not in no_decay)
