"""SASRecF: feature tokens, each pooling mode by hand, gradients reaching the feature embeddings, and a dataset
where only the genre carries the signal (SASRecF must clearly beat SASRec there)."""

from __future__ import annotations

import json

import numpy as np
import paddle
import pytest
from conftest import options

from bert4rec.data import GenerateOptions, generate_dataset
from bert4rec.errors import UserError
from bert4rec.models.sasrec import NextItemBatch
from bert4rec.models.sasrecf import GENRES, MAX_VALUES, TOKENS, SASRecF, SASRecFConfig, feature_tokens, pool
from bert4rec.train import train


def test_feature_tokens_unknowns_and_caps():
    values = [(), ("Drama", "Comedy"), ("[UNK]",), ("Space Opera", "War"), tuple(GENRES[:12])]
    tokens = feature_tokens(values, TOKENS["genre"], MAX_VALUES["genre"])
    drama, comedy, war = (GENRES.index(g) + 2 for g in ("Drama", "Comedy", "War"))
    assert tokens.shape == (5, 10)
    assert tokens[0].tolist() == [0] * 10  # item 0, [PAD]: no value
    assert tokens[1, :3].tolist() == [drama, comedy, 0]
    assert tokens[2, :2].tolist() == [1, 0]  # [UNK]
    assert tokens[3, :3].tolist() == [1, war, 0]  # a genre outside the vocabulary: [UNK]
    assert (tokens[4] > 1).all()  # 12 genres, the first 10 kept
    assert feature_tokens([(), ("1990s",), ("[UNK]",)], TOKENS["year"], 1)[:, 0].tolist() == [0, 2 + 9, 1]


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_pooling_by_hand(mode):
    vectors = np.array([[[1.0, -2.0], [3.0, 4.0], [9.0, 9.0]],      # two values, then padding
                        [[5.0, 1.0], [7.0, 7.0], [7.0, 7.0]],       # one value
                        [[2.0, 2.0], [2.0, 2.0], [2.0, 2.0]]], dtype="float32")  # none
    tokens = np.array([[3, 4, 0], [5, 0, 0], [0, 0, 0]])
    expected = {"sum": [[4.0, 2.0], [5.0, 1.0], [0.0, 0.0]], "mean": [[2.0, 1.0], [5.0, 1.0], [0.0, 0.0]],
                "max": [[3.0, 4.0], [5.0, 1.0], [0.0, 0.0]]}[mode]
    out = pool(paddle.to_tensor(vectors), paddle.to_tensor(tokens), mode).numpy()
    np.testing.assert_allclose(out, expected)


def small_model(fusion="concat", features=("genre", "year")):
    paddle.seed(0)
    config = SASRecFConfig(vocab_size=10, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32, max_position_embeddings=8, hidden_dropout_prob=0.0,
                           attention_probs_dropout_prob=0.0, selected_features=list(features), fusion=fusion)
    model = SASRecF(config, "plain")
    values = {"genre": [(), ("Drama",), ("Comedy",), ("Drama", "War"), ("Horror",), ("Drama",)],
              "year": [(), ("1990s",), ("1980s",), ("[UNK]",), ("1990s",), ("2000s",)]}
    for f in features:
        rows = values[f] + [()] * 4
        getattr(model, f"{f}_tokens").set_value(feature_tokens(rows, TOKENS[f], MAX_VALUES[f]))
    return model


@pytest.mark.parametrize("fusion", ["concat", "sum"])
def test_feature_embeddings_receive_gradients_and_shape_the_items(fusion):
    model = small_model(fusion)
    batch = NextItemBatch(np.array([[1, 2, 3], [4, 5, 0]]), np.array([0, 1, 2, 3, 4]), np.array([2, 3, 4, 5, 1]))
    loss = model(batch)
    loss.backward()
    grads = model.feature_embeddings["genre"].weight.grad.numpy()
    used = {GENRES.index(g) + 2 for g in ("Drama", "Comedy", "War", "Horror")}
    assert all(np.abs(grads[t]).sum() > 0 for t in used)
    assert np.abs(grads[GENRES.index("Western") + 2]).sum() == 0  # no item has it
    assert np.abs(model.feature_embeddings["year"].weight.grad.numpy()).sum() > 0
    vectors = model.all_item_vectors().numpy()
    if fusion == "sum":  # id embedding + pooled features, exactly
        ids = model.item_embeddings.weight.numpy()
        genre = model.feature_embeddings["genre"].weight.numpy()
        year = model.feature_embeddings["year"].weight.numpy()
        d, w = GENRES.index("Drama") + 2, GENRES.index("War") + 2
        np.testing.assert_allclose(vectors[3], ids[3] + genre[d] + genre[w] + year[1], rtol=1e-5, atol=1e-6)


def test_a_model_needs_the_item_features(planted):
    root, data_dir = planted
    config = root / "needs_features.json"
    config.write_text(json.dumps({"model": "SASRecF", "max_position_embeddings": 50}))
    with pytest.raises(UserError, match="item_features.txt: not found; this model needs item features"):
        train(options(root, data_dir, "no_features", config_path=config))


@pytest.fixture(scope="module")
def genre_only(tmp_path_factory):
    """An ML-1M folder where each user stays inside one genre and most movies are seen about once: the movie
    ids carry next to no signal, the genre all of it."""
    root = tmp_path_factory.mktemp("genre_only")
    folder = root / "ml-1m"
    folder.mkdir()
    rng = np.random.default_rng(0)
    genres, per_genre, users = GENRES[:8], 150, 400
    movies = {g: [1 + i * per_genre + k for k in range(per_genre)] for i, g in enumerate(genres)}
    lines, t = [], 10**9
    for user in range(1, users + 1):
        g = genres[user % len(genres)]
        for movie in rng.choice(movies[g], size=int(rng.integers(5, 9)), replace=False):
            t += 1
            lines.append(f"{user}::{movie}::4::{t}")
    (folder / "ratings.dat").write_text("\n".join(lines) + "\n")
    (folder / "movies.dat").write_bytes("".join(f"{m}::Movie {m} (1995)::{g}\n" for g, ms in movies.items()
                                                for m in ms).encode("iso-8859-1"))
    data = root / "data"
    generate_dataset(GenerateOptions(raw_path=folder, output_dir=data, min_item_count=1, max_seq_length=20,
                                     dupe_factor=1), progress=False, log=lambda *a: None)
    return root, data


def test_sasrecf_beats_sasrec_where_only_the_genre_carries_the_signal(genre_only):
    root, data = genre_only
    results = {}
    for model in ("SASRec", "SASRecF"):
        config = root / f"{model}.json"
        config.write_text(json.dumps({"model": model, "hidden_size": 32, "intermediate_size": 64,
                                      "max_position_embeddings": 20}))
        results[model] = train(options(root, data, f"run_{model}", config_path=config, max_len=20,
                                       num_train_steps=150, eval_every=50))
    with_features, without = results["SASRecF"]["test"]["pop100"], results["SASRec"]["test"]["pop100"]
    assert with_features["HR@10"] > without["HR@10"] + 0.3, (with_features, without)
