"""BERT4Rec model behaviour, for both implementations (plain Paddle ops and the fused CPU kernels)."""

from __future__ import annotations

import os

# isort: off
import bert4rec  # noqa: F401  (CPU defaults must be set before Paddle loads)
# isort: on
import numpy as np
import paddle
import pytest

from bert4rec import fused_ops
from bert4rec.models.bert4rec import BERT4Rec, BERT4RecConfig

VOCAB, MASK = 40, 39


def kernel_modes():
    modes = ["plain"]
    if os.environ.get("BERT4REC_FUSED", "1") != "0":
        modes.append("fused")
    return modes


@pytest.fixture(params=kernel_modes())
def mode(request):
    if request.param == "fused":
        assert fused_ops.kernels_available(), "the fused CPU kernels failed to build"
    return request.param


def config(dropout=0.3):
    return BERT4RecConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=16, hidden_dropout_prob=dropout,
                      attention_probs_dropout_prob=dropout)


def make_model(mode, dropout=0.3, seed=0):
    paddle.seed(seed)
    return BERT4Rec(config(dropout), mode)


def ids_batch(lengths=(9, 4, 1, 7), width=9, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.zeros((len(lengths), width), dtype="int64")
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.integers(1, MASK, n)
        ids[row, n - 1] = MASK
    return ids


def test_output_shapes(mode):
    model = make_model(mode)
    model.eval()
    ids = paddle.to_tensor(ids_batch())
    assert model.encode(ids).shape == [4, 9, 16]
    positions = paddle.to_tensor([8, 9 + 3, 18, 27 + 6])
    assert model.logits(ids, positions).shape == [4, VOCAB]
    model.train()
    loss = model.loss(ids, positions, paddle.to_tensor([1, 2, 3, 4]))
    assert loss.shape == [] and np.isfinite(float(loss))


def test_padding_never_changes_real_outputs(mode):
    model = make_model(mode)
    model.eval()
    ids = ids_batch()
    padded = np.zeros((4, 15), dtype="int64")
    padded[:, :9] = ids
    short = model.encode(paddle.to_tensor(ids)).numpy()
    long = model.encode(paddle.to_tensor(padded)).numpy()
    for row, n in enumerate((9, 4, 1, 7)):
        np.testing.assert_allclose(long[row, :n], short[row, :n], atol=1e-5, rtol=1e-5)
    # What one row holds where the others are padded never reaches another row: fill row 1's padding with real
    # items (it becomes the longest row) and every other row's real outputs stay the same.
    noisy = padded.copy()
    noisy[1, 4:15] = np.random.default_rng(5).integers(1, MASK, 11)
    other = model.encode(paddle.to_tensor(noisy)).numpy()
    assert not np.allclose(other[1, :4], long[1, :4], atol=1e-4)  # row 1 itself does change (bidirectional)
    for row, n in ((0, 9), (2, 1), (3, 7)):
        np.testing.assert_allclose(other[row, :n], long[row, :n], atol=1e-6, rtol=1e-6)


def test_output_projection_is_the_item_embedding_table(mode):
    model = make_model(mode)
    model.eval()
    ids = paddle.to_tensor(ids_batch())
    positions = paddle.to_tensor([8, 12])
    assert model.output_bias.shape == [VOCAB]
    names = [name for name, _ in model.named_parameters()]
    assert not any("output_weight" in n or "decoder" in n for n in names)  # no separate output matrix
    before = model.logits(ids, positions).numpy()
    # The logits are h @ E^T + b: recompute them from the head output and the embedding table.
    states = paddle.gather(model.encode(ids).reshape([-1, 16]), positions)
    h = model._head(states, model.uses_kernels()).numpy()
    table, bias = model.item_embeddings.weight.numpy(), model.output_bias.numpy()
    np.testing.assert_allclose(before, h @ table.T + bias, atol=1e-5, rtol=1e-5)
    # Changing one item's embedding row (an item absent from the inputs) moves exactly that item's logit.
    unused = sorted(set(range(1, MASK)) - set(ids.numpy().ravel().tolist()))[0]
    delta = np.zeros_like(table)
    delta[unused] = np.random.default_rng(1).normal(0.0, 0.5, 16)  # not constant: LayerNorm output sums to 0
    model.item_embeddings.weight.set_value(table + delta)
    after = model.logits(ids, positions).numpy()
    changed = np.abs(after - before) > 1e-6
    assert changed[:, unused].all() and changed.sum() == len(positions)
    np.testing.assert_allclose(after[:, unused] - before[:, unused], h @ delta[unused], atol=1e-5)
    # The output bias shifts its item's logit one for one.
    new_bias = bias.copy()
    new_bias[3] += 1.0
    model.output_bias.set_value(new_bias)
    shifted = model.logits(ids, positions).numpy()
    np.testing.assert_allclose(shifted[:, 3] - after[:, 3], 1.0, atol=1e-5)


def test_evaluation_is_deterministic(mode):
    model = make_model(mode, dropout=0.5)
    model.eval()
    ids = paddle.to_tensor(ids_batch())
    positions = paddle.to_tensor([8, 12, 18, 33])
    first = model.logits(ids, positions).numpy()
    paddle.seed(123)  # a different RNG state must not matter at evaluation
    second = model.logits(ids, positions).numpy()
    assert np.array_equal(first, second)
    model.train()
    assert not np.array_equal(model.logits(ids, positions).numpy(), first)  # dropout is on in training


def test_implementations_share_parameters_and_evaluation_outputs():
    if "fused" not in kernel_modes():
        pytest.skip("fused kernels disabled")
    plain, fused = make_model("plain", seed=1), make_model("fused", seed=2)
    assert list(plain.state_dict()) == list(fused.state_dict())
    assert all(plain.state_dict()[k].shape == v.shape for k, v in fused.state_dict().items())
    fused.set_state_dict(plain.state_dict())  # a checkpoint of one path loads into the other
    plain.eval()
    fused.eval()
    ids, positions = paddle.to_tensor(ids_batch()), paddle.to_tensor([8, 12, 18, 33])
    np.testing.assert_allclose(fused.logits(ids, positions).numpy(), plain.logits(ids, positions).numpy(), atol=1e-5)


def test_kernel_mode_argument():
    with pytest.raises(ValueError):
        BERT4Rec(config(), "fast")
    assert not BERT4Rec(config(), "plain").uses_kernels()
