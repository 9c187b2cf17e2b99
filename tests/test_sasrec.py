"""SASRec (causal mask, each loss by hand, batches, learning, resume) and MostPop (metrics by hand)."""

from __future__ import annotations

import json
import os

# isort: off
import bert4rec  # noqa: F401  (CPU defaults must be set before Paddle loads)
# isort: on
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
from conftest import assert_resume_matches, mostpop_results, options

from bert4rec.data import GenerateOptions, generate_dataset
from bert4rec.data.dataset import load_training_data
from bert4rec.models.sasrec import NextItemBatch, NextItemBatches, SASRec, SASRecConfig, target_columns
from bert4rec.train import train

ITEMS = 20
VOCAB = ITEMS + 4


def kernel_modes():
    return ["plain"] + (["fused"] if os.environ.get("BERT4REC_FUSED", "1") != "0" else [])


def make_model(mode="plain", dropout=0.0, seed=0, **config):
    paddle.seed(seed)
    cfg = SASRecConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=32, max_position_embeddings=12, hidden_dropout_prob=dropout,
                       attention_probs_dropout_prob=dropout, **config)
    return SASRec(cfg, mode)


def random_ids(rows=3, width=10, seed=0):
    return np.random.default_rng(seed).integers(1, ITEMS + 1, size=(rows, width)).astype("int64")


# ------------------------------------------------------------------------------------------ causality


@pytest.mark.parametrize("mode", kernel_modes())
@pytest.mark.parametrize("t", [0, 4, 8])
def test_changing_later_items_never_changes_earlier_outputs(mode, t):
    model = make_model(mode)
    model.eval()
    ids = random_ids()
    later = ids.copy()
    later[:, t + 1:] = random_ids(seed=1)[:, t + 1:]
    a = model.encode(paddle.to_tensor(ids)).numpy()
    b = model.encode(paddle.to_tensor(later)).numpy()
    np.testing.assert_allclose(a[:, : t + 1], b[:, : t + 1], atol=1e-6, rtol=1e-6)
    assert not np.allclose(a[:, t + 1:], b[:, t + 1:], atol=1e-4)  # later positions do see them


@pytest.mark.parametrize("mode", kernel_modes())
def test_causality_holds_in_training_with_dropout(mode):
    model = make_model(mode, dropout=0.3)
    model.train()
    ids, t = random_ids(width=11), 5
    later = ids.copy()
    later[:, t + 1:] = random_ids(width=11, seed=2)[:, t + 1:]
    outs = []
    for x in (ids, later):
        paddle.seed(3)  # the same dropout masks for both inputs
        outs.append(model.encode(paddle.to_tensor(x)).numpy())
    np.testing.assert_allclose(outs[0][:, : t + 1], outs[1][:, : t + 1], atol=1e-6, rtol=1e-6)


def test_fused_and_plain_give_the_same_loss_and_gradients():
    if "fused" not in kernel_modes():
        pytest.skip("fused kernels disabled")
    plain, fused = make_model("plain", seed=4), make_model("fused", seed=5)
    fused.set_state_dict(plain.state_dict())
    assert fused.uses_kernels() and not plain.uses_kernels()
    batch = NextItemBatch(random_ids(width=9), np.array([0, 1, 2, 9, 10, 18, 19, 20, 21]),
                          np.array([3, 4, 5, 6, 7, 8, 9, 10, 11]))
    results = []
    for model in (plain, fused):
        loss = model(batch)
        loss.backward()
        results.append((float(loss), {n: p.grad.numpy().copy() for n, p in model.named_parameters()}))
    assert abs(results[0][0] - results[1][0]) < 1e-5
    for name, grad in results[0][1].items():
        np.testing.assert_allclose(results[1][1][name], grad, atol=1e-6, rtol=1e-4)


# ------------------------------------------------------------------------------------------- losses


def hand_batch(negatives=None, log_q=None) -> NextItemBatch:
    """Two sequences, 3 and 2 real positions: inputs [5 6 7] -> targets [6 7 8], [9 10 _] -> [10 2]."""
    ids = np.array([[5, 6, 7], [9, 10, 0]], dtype="int64")
    return NextItemBatch(ids, np.array([0, 1, 2, 3, 4]), np.array([6, 7, 8, 10, 2]), negatives, log_q)


def states_and_table(model, batch):
    h = model.states_at(paddle.to_tensor(batch.input_ids), paddle.to_tensor(batch.flat_positions)).numpy()
    return h.astype(np.float64), model.item_embeddings.weight.numpy().astype(np.float64)


def log_sigmoid(x):
    return -np.log1p(np.exp(-x))


def logsumexp(x, axis=-1):
    m = x.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)


@pytest.mark.parametrize("mode", kernel_modes())
def test_ce_is_softmax_over_all_items_by_hand(mode):
    model = make_model(mode, loss="ce")
    batch = hand_batch()
    h, table = states_and_table(model, batch)
    logits = h @ table[1: ITEMS + 1].T  # items 1..N only: no [PAD], no special tokens
    expected = np.mean(logsumexp(logits) - logits[np.arange(5), batch.labels - 1])
    assert float(model(batch)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("loss", ["bce", "bpr"])
def test_bce_and_bpr_by_hand(loss):
    model = make_model(loss=loss)
    batch = hand_batch(negatives=np.array([1, 2, 3, 4, 11]))
    h, table = states_and_table(model, batch)
    pos = (h * table[batch.labels]).sum(-1)
    neg = (h * table[batch.negatives]).sum(-1)
    if loss == "bce":
        expected = np.mean(-log_sigmoid(pos) - log_sigmoid(-neg))
    else:
        expected = np.mean(-log_sigmoid(pos - neg))
    assert float(model(batch)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("mode", kernel_modes())
@pytest.mark.parametrize("with_log_q", [False, True])
def test_sampled_ce_by_hand_leaves_a_positions_own_target_out(with_log_q, mode):
    model = make_model(mode, loss="sampled_ce", num_negatives=4)
    negatives = np.array([7, 12, 2, 15])  # 7 is the target of position 1, 2 of position 4
    log_q = np.log(np.array([0.5, 0.1, 0.2, 0.3], dtype=np.float32)) if with_log_q else None
    batch = hand_batch(negatives, log_q)
    h, table = states_and_table(model, batch)
    pos = (h * table[batch.labels]).sum(-1)
    neg = h @ table[negatives].T - (log_q if with_log_q else 0.0)
    total = 0.0
    for i, label in enumerate(batch.labels):
        logits = np.concatenate([[pos[i]], neg[i][negatives != label]])
        total += logsumexp(logits) - pos[i]
    assert float(model(batch)) == pytest.approx(total / 5, rel=1e-5)


def straightforward_sampled_ce(model, batch) -> paddle.Tensor:
    """The loss written the obvious way: target column first, the negatives corrected by -log q, the target's own
    item masked where it is a negative, Paddle's cross-entropy."""
    h = model.states_at(paddle.to_tensor(batch.input_ids), paddle.to_tensor(batch.flat_positions))
    labels, negatives = paddle.to_tensor(batch.labels), paddle.to_tensor(batch.negatives)
    pos = (h * model.item_vectors(labels)).sum(axis=-1, keepdim=True)
    neg = paddle.matmul(h, model.item_vectors(negatives), transpose_y=True)
    if batch.negative_log_q is not None:
        neg = neg - paddle.to_tensor(batch.negative_log_q)
    neg = paddle.where(negatives.unsqueeze(0) == labels.unsqueeze(1), paddle.full_like(neg, -1e9), neg)
    logits = paddle.concat([pos, neg], axis=1)
    return F.cross_entropy(logits, paddle.zeros([logits.shape[0], 1], dtype="int64")).mean()


@pytest.mark.parametrize("mode", kernel_modes())
@pytest.mark.parametrize("with_log_q", [False, True])
def test_sampled_ce_value_and_gradients_equal_the_straightforward_loss(with_log_q, mode):
    model = make_model(mode, loss="sampled_ce", num_negatives=6)
    model.eval()  # no dropout: both losses see the same states
    rng = np.random.default_rng(3)
    negatives = np.array([7, 12, 2, 15, 10, 4])  # targets 7, 2 and 10 among them, 6 and 8 not
    log_q = np.log(rng.uniform(0.05, 0.9, 6)).astype(np.float32) if with_log_q else None
    batch = hand_batch(negatives, log_q)
    grads = []
    for loss_fn in (lambda: model(batch), lambda: straightforward_sampled_ce(model, batch)):
        model.clear_gradients()
        loss = loss_fn()
        loss.backward()
        grads.append((float(loss), {n: p.grad.numpy().copy() for n, p in model.named_parameters()
                                    if p.grad is not None}))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5)
    assert grads[0][1].keys() == grads[1][1].keys()
    for name, grad in grads[1][1].items():
        np.testing.assert_allclose(grads[0][1][name], grad, atol=1e-6, rtol=1e-4, err_msg=name)


def test_target_columns_find_each_target_among_the_negatives():
    negatives = np.array([30, 4, 17, 9])
    assert target_columns(negatives, np.array([17, 5, 30, 9, 31, 1])).tolist() == [2, 4, 0, 3, 4, 4]


# ------------------------------------------------------------------------------------------- batches


def test_next_item_batches_shift_targets_and_draw_negatives_outside_the_window(planted):
    _, data_dir = planted
    data = load_training_data(data_dir / "vocab.txt", data_dir / "train.txt", data_dir / "valid.txt",
                              data_dir / "test.txt", 50)
    cfg = SASRecConfig(vocab_size=data.vocab.size, max_position_embeddings=50, loss="bce")
    batches = NextItemBatches(data, cfg)
    windows = batches.examples(0)
    assert len(windows) == batches.num_examples and windows.lengths.min() >= 2
    idx = np.array([0, 3, 7])
    batch = batches.collate(windows, idx, np.random.default_rng(0))
    width = batch.input_ids.shape[1]
    assert width == max(len(windows.window(i)) for i in idx) - 1
    start = 0
    for row, i in enumerate(idx):
        w = windows.window(i)
        assert batch.input_ids[row, : len(w) - 1].tolist() == w[:-1].tolist()
        assert not batch.input_ids[row, len(w) - 1:].any()
        n = len(w) - 1
        assert batch.flat_positions[start: start + n].tolist() == list(range(row * width, row * width + n))
        assert batch.labels[start: start + n].tolist() == w[1:].tolist()
        assert not set(batch.negatives[start: start + n].tolist()) & set(w.tolist())
        start += n
    assert start == len(batch.labels) == len(batch.negatives)


# ------------------------------------------------------------------------------------- end to end


def sasrec_config(root, name, **overrides):
    cfg = dict(model="SASRec", hidden_size=32, num_hidden_layers=2, num_attention_heads=1, intermediate_size=64,
               max_position_embeddings=50, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    cfg.update(overrides)
    path = root / f"{name}_sasrec.json"
    path.write_text(json.dumps(cfg))
    return path


@pytest.mark.parametrize("loss", ["ce", "bce", "sampled_ce"])
def test_sasrec_learns_a_planted_pattern_far_above_mostpop(planted, loss):
    root, data_dir = planted
    config = sasrec_config(root, f"learn_{loss}", loss=loss, num_negatives=10)
    results = train(options(root, data_dir, f"sasrec_{loss}", config_path=config, num_train_steps=120,
                            eval_every=40))
    pop = mostpop_results(root, data_dir)
    assert results["model"] == "SASRec" and results["config"]["loss"] == loss
    assert results["num_eval_users"] == 300
    assert results["test"]["full"]["NDCG@10"] > pop["test"]["full"]["NDCG@10"] + 0.3
    assert results["test"]["pop100"]["HR@10"] > 0.8  # 20 negatives: chance is 10/21


def test_sasrec_resume_equals_an_uninterrupted_run(planted):
    root, data_dir = planted
    config = sasrec_config(root, "resume", loss="bce")  # random negatives must replay too
    assert_resume_matches(root, data_dir, 7, config_path=config, num_train_steps=18, eval_every=6)


# ------------------------------------------------------------------------------------------- MostPop


def test_mostpop_metrics_by_hand(tmp_path):
    """Training part: u1 [1 2 3], u2 [1 2], u3 [1] -> counts 1:3, 2:2, 3:1, others 0 (held-out items never
    count). Test ranks (ties count against the target): u1 target 5 vs {6} -> 1; u2 target 4 vs {5, 6} -> 2;
    u3 target 6 vs {3, 4, 5} -> 3. Validation: u1 target 4 vs {5, 6} -> 2; u2 target 3 (1) vs {4, 5, 6} -> 0;
    u3 target 2 (2) vs {3, 4, 5, 6} -> 0."""
    raw = tmp_path / "seq.txt"
    raw.write_text("1 1\n1 2\n1 3\n1 4\n1 5\n2 1\n2 2\n2 3\n2 4\n3 1\n3 2\n3 6\n")
    data_dir = tmp_path / "data"
    generate_dataset(GenerateOptions(raw_path=raw, output_dir=data_dir, min_item_count=1, num_negatives=1),
                     progress=False, log=lambda *a: None)
    config = tmp_path / "mostpop.json"
    config.write_text('{"model": "MostPop"}')
    results = train(options(tmp_path, data_dir, "pop", config_path=config))
    test, valid = results["test"]["full"], results["valid"]["full"]
    ndcg = lambda ranks: np.mean([1 / np.log2(r + 2) for r in ranks])  # noqa: E731
    assert test["HR@1"] == 0.0 and test["HR@5"] == 1.0
    assert test["NDCG@10"] == pytest.approx(ndcg([1, 2, 3]))
    assert test["MRR"] == pytest.approx(np.mean([1 / 2, 1 / 3, 1 / 4]))
    assert valid["NDCG@10"] == pytest.approx(ndcg([2, 0, 0]))
    assert valid["HR@1"] == pytest.approx(2 / 3)
    assert results["steps"] == 0 and results["model"] == "MostPop"



@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("fused", [False, True])
def test_a_large_catalogues_loss_is_chunked_with_the_same_value_and_gradients(monkeypatch, with_bias, fused):
    from bert4rec.fused_ops import kernels_available
    from bert4rec.models import base

    fused = fused and kernels_available()  # without a compiler both cases test the plain path

    rng = np.random.default_rng(0)
    h0, w0 = rng.standard_normal((300, 16)).astype("float32"), rng.standard_normal((701, 16)).astype("float32")
    b0, targets = rng.standard_normal(700).astype("float32"), paddle.to_tensor(rng.integers(0, 700, 300))

    def loss_and_grads(logit_cells: int):
        monkeypatch.setattr(base, "LOGIT_CELLS", logit_cells)
        monkeypatch.setattr(base, "CHUNK_CELLS", 7 * 700)  # 7 rows a chunk: 43 chunks, the last one short
        h, w, b = (paddle.to_tensor(x, stop_gradient=False) for x in (h0, w0, b0))
        loss = base.full_softmax_cross_entropy(h * 1.0, w[1:], targets, bias=b if with_bias else None, fused=fused)
        loss.backward()
        return [loss.numpy(), h.grad.numpy(), w.grad.numpy()] + ([b.grad.numpy()] if with_bias else [])

    chunked, whole = loss_and_grads(1000), loss_and_grads(1 << 40)
    assert float(whole[0]) > 1.0  # a real loss, not a degenerate one
    for a, b in zip(chunked, whole, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert np.abs(chunked[2][0]).max() == 0  # the item table's row 0 ([PAD]) is not an item: no gradient


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("chunked", [False, True])
def test_label_smoothing_equals_cross_entropy_against_the_smoothed_target_distribution(monkeypatch, with_bias, fused,
                                                                                       chunked):
    """-sum_j q_j log softmax(z)_j with q = (1 - e) one-hot + e / N, value and gradients, written out directly."""
    from bert4rec.fused_ops import kernels_available
    from bert4rec.models import base

    fused = fused and kernels_available()
    if chunked:
        monkeypatch.setattr(base, "LOGIT_CELLS", 1000)
        monkeypatch.setattr(base, "CHUNK_CELLS", 7 * 50)
    rng = np.random.default_rng(1)
    h0, w0 = rng.standard_normal((40, 8)).astype("float32"), rng.standard_normal((50, 8)).astype("float32")
    b0, t0 = rng.standard_normal(50).astype("float32"), rng.integers(0, 50, 40)
    eps = 0.2

    def loss_and_grads(direct: bool):
        h, w, b = (paddle.to_tensor(x, stop_gradient=False) for x in (h0, w0, b0))
        targets = paddle.to_tensor(t0)
        if direct:
            logits = paddle.matmul(h, w, transpose_y=True) + (b if with_bias else 0.0)
            q = (1 - eps) * F.one_hot(targets, 50) + eps / 50
            loss = -(q * F.log_softmax(logits, axis=-1)).sum(axis=-1).mean()
        else:
            loss = base.full_softmax_cross_entropy(h, w, targets, bias=b if with_bias else None, fused=fused,
                                                   smoothing=eps)
        loss.backward()
        return [loss.numpy(), h.grad.numpy(), w.grad.numpy()] + ([b.grad.numpy()] if with_bias else [])

    ours, direct = loss_and_grads(False), loss_and_grads(True)
    plain = base.full_softmax_cross_entropy(*(paddle.to_tensor(x) for x in (h0, w0, t0)), fused=fused)
    assert abs(float(direct[0]) - float(plain)) > 1e-3  # the smoothing changes the loss
    for a, b in zip(ours, direct, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_label_smoothing_is_refused_outside_the_full_softmax():
    from bert4rec.errors import UserError

    with pytest.raises(UserError, match="label_smoothing: applies to loss ce"):
        SASRecConfig.from_dict({"loss": "bce", "label_smoothing": 0.1}, "x.json")
    with pytest.raises(UserError, match=r"label_smoothing: must be a number in \[0, 1\)"):
        SASRecConfig.from_dict({"label_smoothing": 1.0}, "x.json")
    assert SASRecConfig.from_dict({"label_smoothing": 0.1}, "x.json").label_smoothing == 0.1


def test_data_parallel_shares_of_a_batch_draw_the_single_process_negatives(planted):
    """sampled_ce's negatives belong to the global batch: every process's share draws rank 0's, which are the
    single-process step's; per-example draws (bce's negatives) stay each process's own."""
    from bert4rec.models.base import collate_rng

    _, data_dir = planted
    data = load_training_data(data_dir / "vocab.txt", data_dir / "train.txt", data_dir / "valid.txt",
                              data_dir / "test.txt", 50)
    drawn = {}
    for loss in ("sampled_ce", "bce"):
        batches = NextItemBatches(data, SASRecConfig(vocab_size=data.vocab.size, max_position_embeddings=50,
                                                     loss=loss, num_negatives=20))
        examples, idx = batches.examples(0), np.arange(8)
        whole = batches.collate(examples, idx, collate_rng(7, 0, 3, 0, batches.shared_draws))
        parts = [batches.collate(examples, idx[r::2], collate_rng(7, 0, 3, r, batches.shared_draws))
                 for r in (0, 1)]
        drawn[loss] = (whole, parts)
    whole, parts = drawn["sampled_ce"]
    assert all(np.array_equal(p.negatives, whole.negatives) for p in parts)
    _, (bce_0, bce_1) = drawn["bce"]
    assert not np.array_equal(bce_0.negatives[:5], bce_1.negatives[:5])
