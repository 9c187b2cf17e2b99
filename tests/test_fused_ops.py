"""The fused CPU kernels (bert4rec.fused_ops) against their plain-Paddle compositions.

Forward values and every gradient at dropout 0, dropout statistics and seeding, padding invariance, bitwise
reproducibility, and the whole model (fused vs plain: same loss, same gradient for every parameter).
The kernels are built on first use (~1 min once per machine, cached).
"""

from __future__ import annotations

import math
import os

# isort: off
import bert4rec  # noqa: F401  (CPU defaults must be set before Paddle loads)
# isort: on
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from bert4rec import fused_ops as fo
from bert4rec.models.bert4rec import BERT4Rec, BERT4RecConfig

ATOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def kernels():
    if os.environ.get("BERT4REC_FUSED", "1") == "0":
        pytest.skip("fused kernels disabled (BERT4REC_FUSED=0)")
    paddle.set_device("cpu")
    assert fo.kernels_available(), "the fused CPU kernels failed to build"


def param(shape, seed, scale=1.0):
    x = paddle.to_tensor(np.random.default_rng(seed).normal(0.0, scale, shape).astype("float32"))
    x.stop_gradient = False
    return x


def grads(out, inputs, grad_out):
    return paddle.grad([out], inputs, [grad_out], allow_unused=True)


def assert_close(actual, expected, atol=ATOL, rtol=1e-5):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), atol=atol, rtol=rtol)


def check_op(fused_fn, plain_fn, inputs, grad_shape, seed=99):
    """Forward and all input gradients of the fused op equal those of the plain composition."""
    g = paddle.to_tensor(np.random.default_rng(seed).normal(size=grad_shape).astype("float32"))
    y1, y2 = fused_fn(*inputs), plain_fn(*inputs)
    assert y1.shape == y2.shape
    assert_close(y1.numpy(), y2.numpy())
    for d1, d2 in zip(grads(y1, inputs, g), grads(y2, inputs, g), strict=True):
        assert d1.shape == d2.shape
        assert_close(d1.numpy(), d2.numpy())


# ------------------------------------------------------------------------------------------ per-op maths


@pytest.mark.parametrize("act", ["gelu", "gelu_exact", "relu", "swish", "tanh", "sigmoid"])
def test_bias_act_matches_plain(act):
    plain = {"gelu": lambda u: F.gelu(u, approximate=True), "gelu_exact": F.gelu, "relu": F.relu,
             "swish": F.swish, "tanh": paddle.tanh, "sigmoid": F.sigmoid}[act]
    inputs = [param([37, 96], 0, 2.0), param([96], 1)]
    check_op(lambda x, b: fo.bias_act(x, b, act), lambda x, b: plain(x + b), inputs, [37, 96])


def test_bias_gelu_is_tanh_gelu_and_handles_large_inputs():
    x = paddle.to_tensor(np.linspace(-60, 60, 241, dtype="float32").reshape(1, -1))
    b = paddle.zeros([241])
    assert_close(fo.bias_gelu(x, b).numpy(), F.gelu(x, approximate=True).numpy())


def test_bias_act_layernorm_matches_plain():
    inputs = [param([50, 64], 2, 2.0), param([64], 3), param([64], 4), param([64], 5)]

    def plain(x, b, gamma, beta):
        return F.layer_norm(F.gelu(x + b, approximate=True), [64], gamma, beta, 1e-12)

    check_op(lambda *a: fo.bias_act_layernorm(*a), plain, inputs, [50, 64])


def test_bias_dropout_residual_layernorm_matches_plain():
    shape = [3, 7, 64]
    inputs = [param(shape, 6), param([64], 7), param(shape, 8), param([64], 9), param([64], 10)]

    def fused(x, b, r, gamma, beta):
        return fo.bias_dropout_residual_layernorm(x, b, r, gamma, beta, 0.0, True)

    def plain(x, b, r, gamma, beta):
        return F.layer_norm(r + (x + b), [64], gamma, beta, 1e-12)

    check_op(fused, plain, inputs, shape)
    # Not training: dropout off whatever p is.
    fused_eval = fo.bias_dropout_residual_layernorm(*inputs, 0.5, False)
    assert_close(fused_eval.numpy(), plain(*inputs).numpy())


def test_embedding_layernorm_dropout_matches_plain():
    shape = [4, 9, 32]
    inputs = [param(shape, 11), param([12, 32], 12), param([32], 13), param([32], 14)]

    def fused(tok, pos, gamma, beta):
        return fo.embedding_layernorm_dropout(tok, pos, gamma, beta, 0.0, True)

    def plain(tok, pos, gamma, beta):
        return F.layer_norm(tok + pos[:9], [32], gamma, beta, 1e-12)

    check_op(fused, plain, inputs, shape)
    dpos = grads(fused(*inputs), [inputs[1]], paddle.ones(shape))[0].numpy()
    assert not dpos[9:].any()  # positions beyond L get no gradient


def test_bias_softmax_cross_entropy_matches_plain():
    labels = paddle.to_tensor(np.random.default_rng(15).integers(0, 333, 50))
    inputs = [param([50, 333], 16, 3.0), param([333], 17)]

    def plain(z, b):
        return F.cross_entropy(z + b, labels.unsqueeze(-1), reduction="none").squeeze(-1)

    check_op(lambda z, b: fo.bias_softmax_cross_entropy(z, b, labels), plain, inputs, [50])
    mean_fused = fo.bias_softmax_cross_entropy(*inputs, labels).mean()
    assert_close(float(mean_fused), float(F.cross_entropy(inputs[0] + inputs[1], labels.unsqueeze(-1))))


def test_bias_softmax_cross_entropy_rejects_bad_labels():
    with pytest.raises(Exception, match="label"):
        fo.bias_softmax_cross_entropy(paddle.zeros([2, 5]), paddle.zeros([5]), paddle.to_tensor([1, 5]))


def plain_attention(qkv, bias, lengths, heads, causal=False):
    batch, length, three_h = qkv.shape
    hidden = three_h // 3
    dh = hidden // heads
    q, k, v = paddle.unbind((qkv + bias).reshape([batch, length, 3, heads, dh]).transpose([2, 0, 3, 1, 4]), 0)
    real = (paddle.arange(length).unsqueeze(0) < lengths.unsqueeze(1)).astype("float32")
    mask = ((1.0 - real) * -1e9).unsqueeze([1, 2])
    if causal:  # key j > query i: excluded
        mask = mask + (paddle.triu(paddle.ones([length, length]), diagonal=1) * -1e9).unsqueeze([0, 1])
    probs = F.softmax(paddle.matmul(q, k, transpose_y=True) / math.sqrt(dh) + mask, axis=-1)
    out = paddle.matmul(probs, v).transpose([0, 2, 1, 3]).reshape([batch, length, hidden])
    return out * real.unsqueeze(-1)  # padded query rows: zeros in the fused op, unused anyway


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("heads,hidden,length", [(2, 64, 23), (4, 48, 9), (1, 20, 13)])
def test_fused_attention_matches_plain(heads, hidden, length, causal):
    lengths = paddle.to_tensor([length, 5, max(1, length - 6), 1], dtype="int64")
    inputs = [param([4, length, 3 * hidden], 18), param([3 * hidden], 19)]

    def fused(qkv, b):
        return fo.fused_attention(qkv, b, lengths, heads, 0.0, True, causal)

    check_op(fused, lambda qkv, b: plain_attention(qkv, b, lengths, heads, causal), inputs, [4, length, hidden])


def test_causal_attention_never_looks_ahead_even_with_dropout():
    """Changing the keys/values of positions > t leaves every output at positions <= t bitwise unchanged."""
    batch, length, hidden, heads, t = 3, 17, 32, 2, 6
    base = np.random.default_rng(40).normal(size=[batch, length, 3 * hidden]).astype("float32")
    changed = base.copy()
    changed[:, t + 1:] = np.random.default_rng(41).normal(size=changed[:, t + 1:].shape)
    bias, lengths = param([3 * hidden], 42), paddle.full([batch], length, dtype="int64")
    outs = []
    for x in (base, changed):
        paddle.seed(43)
        outs.append(fo.fused_attention(paddle.to_tensor(x), bias, lengths, heads, 0.3, True, True).numpy())
    assert np.array_equal(outs[0][:, : t + 1], outs[1][:, : t + 1])
    assert not np.allclose(outs[0][:, t + 1:], outs[1][:, t + 1:])


# -------------------------------------------------------------------------------------------- dropout


def attention_keep_fraction(p, seed, batch=8, length=64, heads=2, hidden=32):
    """Uniform attention over v = 1: each output is (scale / n) * (number of kept keys) for that query."""
    qkv = paddle.zeros([batch, length, 3 * hidden])
    bias = paddle.concat([paddle.zeros([2 * hidden]), paddle.ones([hidden])])
    lengths = paddle.full([batch], length, dtype="int64")
    paddle.seed(seed)
    out = fo.fused_attention(qkv, bias, lengths, heads, p, True).numpy()
    kept = out * length * (1.0 - p)
    assert_close(kept, np.round(kept), atol=1e-3)  # whole numbers of kept keys: scaling is exactly 1/(1-p)
    return kept.mean() / length, out


def within_standard_errors(fraction: float, p: float, draws: int, k: float = 4.0) -> bool:
    """``fraction`` of kept units is within ``k`` binomial standard errors of 1 - p (a wrong rate is not)."""
    return abs(fraction - (1.0 - p)) < k * math.sqrt(p * (1.0 - p) / draws)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_attention_dropout_statistics(p):
    fraction, out = attention_keep_fraction(p, seed=1)
    assert within_standard_errors(fraction, p, draws=8 * 2 * 64 * 64)  # one draw per (sequence, head, query, key)
    assert not within_standard_errors(fraction, p + 0.01, draws=8 * 2 * 64 * 64)  # a rate off by 0.01 is caught
    assert abs(out.mean() - 1.0) < 0.02  # unbiased


def test_causal_attention_dropout_keeps_whole_keys_of_the_past():
    """Uniform causal attention over v = 1: query i's output is (kept keys among its i + 1) / ((i + 1)(1 - p))."""
    p, batch, length, heads, hidden = 0.4, 8, 40, 2, 16
    qkv = paddle.zeros([batch, length, 3 * hidden])
    bias = paddle.concat([paddle.zeros([2 * hidden]), paddle.ones([hidden])])
    paddle.seed(44)
    out = fo.fused_attention(qkv, bias, paddle.full([batch], length, dtype="int64"), heads, p, True, True).numpy()
    kept = out * np.arange(1, length + 1)[None, :, None] * (1.0 - p)
    assert_close(kept, np.round(kept), atol=1e-3)
    assert np.all(kept <= np.arange(1, length + 1)[None, :, None] + 1e-3)  # never more keys than the past
    assert abs(kept.sum() / (np.arange(1, length + 1).sum() * batch * hidden) - (1.0 - p)) < 0.02


def residual_dropout_mask(p, seed, shape=(6, 50, 64)):
    """Per-element multiplier of x in LayerNorm(residual + dropout(x + b)), read from the two gradients."""
    x, b, r, gamma, beta = param(list(shape), 20), param([shape[-1]], 21), param(list(shape), 22), \
        param([shape[-1]], 23), param([shape[-1]], 24)
    paddle.seed(seed)
    y = fo.bias_dropout_residual_layernorm(x, b, r, gamma, beta, p, True)
    dx, dr = grads(y, [x, r], paddle.to_tensor(np.random.default_rng(25).normal(size=shape).astype("float32")))
    return dx.numpy() / dr.numpy(), y.numpy()


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_residual_dropout_statistics(p):
    ratio, _ = residual_dropout_mask(p, seed=2)
    scale = 1.0 / (1.0 - p)
    kept = np.isclose(ratio, scale, rtol=1e-5)
    assert np.all(kept | (ratio == 0.0))  # every element either dropped or scaled by 1/(1-p)
    assert within_standard_errors(kept.mean(), p, draws=kept.size)


def test_embedding_dropout_statistics():
    p, shape = 0.3, [8, 40, 64]
    tok, pos, gamma, beta = param(shape, 26), param([40, 64], 27), param([64], 28), param([64], 29)
    full = fo.embedding_layernorm_dropout(tok, pos, gamma, beta, 0.0, True).numpy()
    paddle.seed(3)
    dropped = fo.embedding_layernorm_dropout(tok, pos, gamma, beta, p, True).numpy()
    ratio = dropped / full
    kept = np.isclose(ratio, 1.0 / (1.0 - p), rtol=1e-4)
    assert np.all(kept | (dropped == 0.0))
    assert within_standard_errors(kept.mean(), p, draws=kept.size)


def test_same_seed_same_masks_different_seed_different():
    r1, y1 = residual_dropout_mask(0.3, seed=5)
    r2, y2 = residual_dropout_mask(0.3, seed=5)
    r3, _ = residual_dropout_mask(0.3, seed=6)
    assert np.array_equal(r1, r2) and np.array_equal(y1, y2)
    assert (r1 != r3).mean() > 0.2
    _, a1 = attention_keep_fraction(0.3, seed=7)
    _, a2 = attention_keep_fraction(0.3, seed=7)
    _, a3 = attention_keep_fraction(0.3, seed=8)
    assert np.array_equal(a1, a2) and not np.array_equal(a1, a3)


def test_consecutive_calls_draw_fresh_masks():
    x = paddle.zeros([2, 16, 32])
    paddle.seed(9)
    pos, gamma, beta = param([16, 32], 30), paddle.ones([32]), paddle.zeros([32])
    a = fo.embedding_layernorm_dropout(x, pos, gamma, beta, 0.5, True).numpy()
    b = fo.embedding_layernorm_dropout(x, pos, gamma, beta, 0.5, True).numpy()
    assert not np.array_equal(a == 0, b == 0)


# ------------------------------------------------------------------------------------------- padding


def test_ops_are_padding_invariant_even_with_dropout():
    """Masks are keyed by (sequence, position): padding a batch changes nothing at real positions."""
    batch, length, pad, hidden, heads = 3, 10, 6, 32, 2
    rng = np.random.default_rng(31)
    x = rng.normal(size=[batch, length + pad, hidden]).astype("float32")
    r = rng.normal(size=[batch, length + pad, hidden]).astype("float32")
    qkv = rng.normal(size=[batch, length + pad, 3 * hidden]).astype("float32")
    b, gamma, beta = (paddle.to_tensor(rng.normal(size=[hidden]).astype("float32")) for _ in range(3))
    qb = paddle.to_tensor(rng.normal(size=[3 * hidden]).astype("float32"))
    pos = paddle.to_tensor(rng.normal(size=[length + pad, hidden]).astype("float32"))
    lengths = paddle.to_tensor([length, 4, 7], dtype="int64")

    def run(width):
        paddle.seed(10)
        t = [paddle.to_tensor(a[:, :width]) for a in (x, r, qkv)]
        return [fo.bias_dropout_residual_layernorm(t[0], b, t[1], gamma, beta, 0.4, True).numpy()[:, :length],
                fo.embedding_layernorm_dropout(t[0], pos, gamma, beta, 0.4, True).numpy()[:, :length],
                fo.fused_attention(t[2], qb, lengths, heads, 0.4, True).numpy()[:, :length]]

    for short, padded in zip(run(length), run(length + pad), strict=True):
        assert np.array_equal(short, padded)


# --------------------------------------------------------------------------------------- whole model


def small_config(dropout=0.0, act="gelu"):
    return BERT4RecConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=64, max_position_embeddings=24, hidden_act=act,
                      hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)


def model_batch(width=12, lengths=(12, 7, 3, 10), seed=0):
    rng = np.random.default_rng(seed)
    ids = np.zeros((len(lengths), width), dtype="int64")
    positions, labels = [], []
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.integers(1, 59, n)
        for p in sorted(rng.choice(n, max(1, n // 3), replace=False)):
            positions.append(row * width + p)
            labels.append(ids[row, p])
            ids[row, p] = 59  # [MASK]
    return ids, np.array(positions, dtype="int64"), np.array(labels, dtype="int64")


def loss_and_grads(model, ids, positions, labels):
    loss = model.loss(*(paddle.to_tensor(a) for a in (ids, positions, labels)))
    loss.backward()
    out = float(loss), {name: p.grad.numpy().copy() for name, p in model.named_parameters()}
    model.clear_gradients()
    return out


@pytest.mark.parametrize("act", ["gelu", "relu", "swish"])
def test_model_fused_equals_plain(act):
    paddle.seed(11)
    plain = BERT4Rec(small_config(act=act), "plain")
    fused = BERT4Rec(small_config(act=act), "fused")
    fused.set_state_dict(plain.state_dict())
    assert fused.uses_kernels() and not plain.uses_kernels()
    batch = model_batch()
    loss_p, grads_p = loss_and_grads(plain, *batch)
    loss_f, grads_f = loss_and_grads(fused, *batch)
    assert abs(loss_p - loss_f) < 1e-5
    assert grads_p.keys() == grads_f.keys()
    for name in grads_p:
        assert_close(grads_f[name], grads_p[name], atol=1e-6, rtol=1e-4)
    plain.eval()
    fused.eval()
    ids, positions, _ = batch
    logits_p = plain.logits(paddle.to_tensor(ids), paddle.to_tensor(positions)).numpy()
    logits_f = fused.logits(paddle.to_tensor(ids), paddle.to_tensor(positions)).numpy()
    assert_close(logits_f, logits_p)


def test_model_fused_training_is_reproducible_and_padding_invariant():
    """Same seed: bitwise equal loss and gradients; extra padding changes nothing, even with dropout."""
    paddle.seed(12)
    model = BERT4Rec(small_config(dropout=0.3), "fused")
    model.train()
    ids, positions, labels = model_batch()
    paddle.seed(13)
    loss1, grads1 = loss_and_grads(model, ids, positions, labels)
    paddle.seed(13)
    loss2, grads2 = loss_and_grads(model, ids, positions, labels)
    assert loss1 == loss2 and all(np.array_equal(grads1[k], grads2[k]) for k in grads1)
    padded = np.zeros((ids.shape[0], 20), dtype="int64")
    padded[:, :12] = ids
    padded_positions = positions // 12 * 20 + positions % 12
    paddle.seed(13)
    loss3, grads3 = loss_and_grads(model, padded, padded_positions, labels)
    assert abs(loss3 - loss1) < 1e-6
    for name in grads1:
        assert_close(grads3[name], grads1[name], atol=1e-6, rtol=1e-5)
    paddle.seed(14)
    loss4, _ = loss_and_grads(model, ids, positions, labels)
    assert loss4 != loss1  # another seed, other masks


def test_plain_and_fused_dropout_keep_the_same_expected_loss_scale():
    """With dropout on, fused and plain training losses come from the same distribution (same mean)."""
    paddle.seed(15)
    plain = BERT4Rec(small_config(dropout=0.2), "plain")
    fused = BERT4Rec(small_config(dropout=0.2), "fused")
    fused.set_state_dict(plain.state_dict())
    batch = [paddle.to_tensor(a) for a in model_batch(lengths=(12,) * 16, seed=3)]
    with paddle.no_grad():
        lp = [float(plain.loss(*batch)) for _ in range(30)]
        lf = [float(fused.loss(*batch)) for _ in range(30)]
    spread = np.std(lp) + np.std(lf)
    assert spread > 0  # dropout is on in both
    assert abs(np.mean(lp) - np.mean(lf)) < 1.5 * spread


def test_a_warm_start_loads_the_built_kernels_without_building(tmp_path):
    """Once built (this session did), the kernels load directly: Paddle's build function is never called, so
    another checkout of the same sources at another path does not rebuild either."""
    import shutil
    import subprocess
    import sys

    checkout = tmp_path / "elsewhere"
    shutil.copytree(fo.CSRC.parent, checkout / "bert4rec", ignore=shutil.ignore_patterns("__pycache__"))
    script = (
        "import bert4rec, paddle.utils.cpp_extension as ce\n"
        "def refuse(*a, **k): raise SystemExit('build attempted')\n"
        "ce.load = refuse\n"
        "from bert4rec import fused_ops\n"
        "assert fused_ops.kernels_available(), 'kernels unavailable'\n"
        "print('warm', fused_ops.CSRC)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=checkout, capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"warm {checkout / 'bert4rec' / 'csrc'}" in proc.stdout and "build" not in proc.stderr


@pytest.mark.parametrize("model_name", ["SASRec", "BERT4Rec"])
def test_scoring_only_the_read_positions_equals_the_whole_encoder(model_name):
    from bert4rec.models import build_model, config_from_dict

    config = config_from_dict({"model": model_name, "vocab_size": 53, "hidden_size": 32, "num_hidden_layers": 2,
                               "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 40})
    paddle.seed(3)
    model = build_model(config, max_len=40)
    plain = build_model(config, kernels="plain", max_len=40)
    plain.set_state_dict(model.state_dict())
    model.eval()
    plain.eval()
    rng = np.random.default_rng(0)
    histories = [rng.integers(1, 45, size=n) for n in (1, 5, 17, 39, 39, 2, 30)]
    pruned = model.predict(histories)  # eval + fused kernels: the last layer at the read positions only
    whole = plain.predict(histories)   # every layer at every position, then the read positions gathered
    assert pruned.shape == whole.shape == (7, model.num_items + 1)
    np.testing.assert_allclose(pruned, whole, atol=2e-4, rtol=1e-4)
    ids = paddle.to_tensor(np.array([[4, 9, 2, 0, 0], [7, 7, 1, 3, 8]], dtype="int64"))
    at = paddle.to_tensor(np.array([0, 2, 5, 9], dtype="int64"))  # several positions of one row too
    np.testing.assert_allclose(model.states_at(ids, at).numpy(), plain.states_at(ids, at).numpy(), atol=2e-4)
