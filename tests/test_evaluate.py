"""The evaluation loop: every user scored, history excluded (FULL), file negatives (POP100), ties against."""

import numpy as np

from bert4rec.data import EvalSet
from bert4rec.evaluate import evaluate, rank_targets


def make_eval_set(histories, targets, negatives) -> EvalSet:
    offsets = np.concatenate([[0], np.cumsum([len(h) for h in histories])]).astype(np.int64)
    return EvalSet(users=np.arange(1, len(histories) + 1, dtype=np.int32),
                   history=np.concatenate(histories).astype(np.int32), history_offsets=offsets,
                   targets=np.asarray(targets, dtype=np.int32), negatives=np.asarray(negatives, dtype=np.int32))


def fixed_scorer(table: np.ndarray):
    """Scores that depend only on the user, identified by the first item of the history."""
    return lambda histories: np.stack([table[h[0]] for h in histories])


def brute_force_ranks(table, histories, targets, negatives, num_items):
    full, pop = [], []
    for h, t, negs in zip(histories, targets, negatives, strict=True):
        s = table[h[0]]
        competitors = [i for i in range(1, num_items + 1) if i != t and i not in set(h)]
        full.append(sum(s[i] >= s[t] for i in competitors))
        pop.append(sum(s[i] >= s[t] for i in negs))
    return np.array(full), np.array(pop)


def test_ranks_match_brute_force_over_all_users_with_an_uneven_last_batch():
    rng = np.random.default_rng(0)
    num_items, n_users = 30, 11
    histories = [rng.choice(np.arange(1, num_items + 1), size=rng.integers(1, 8), replace=False)
                 for _ in range(n_users)]
    histories = [np.concatenate([[u + 1], h[h != u + 1]]) for u, h in enumerate(histories)]  # first item = id
    targets, negatives = [], []
    for h in histories:
        rest = np.setdiff1d(np.arange(1, num_items + 1), h)
        targets.append(rng.choice(rest))
        negatives.append(rng.choice(np.setdiff1d(rest, [targets[-1]]), size=5, replace=False))
    # integer scores: plenty of ties
    table = rng.integers(0, 4, size=(n_users + 2, num_items + 1)).astype(np.float32)
    full, pop = rank_targets(fixed_scorer(table), histories, np.array(targets), np.array(negatives), num_items,
                             batch_size=3)
    want_full, want_pop = brute_force_ranks(table, histories, targets, negatives, num_items)
    assert full.tolist() == want_full.tolist()
    assert pop.tolist() == want_pop.tolist()

    result = evaluate(fixed_scorer(table), make_eval_set(histories, targets, negatives), num_items, batch_size=4)
    assert result["num_users"] == n_users
    assert set(result["full"]) >= {"HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR", "Recall@10",
                                   "Precision@10"}
    assert result["full"]["HR@10"] == np.mean(want_full < 10)


def test_history_items_cannot_outrank_the_target_in_full_ranking():
    # the user's history items score highest, but they are excluded: the target is first
    table = np.zeros((3, 6), dtype=np.float32)
    table[1] = [0, 9, 9, 5, 1, 1]
    full, pop = rank_targets(fixed_scorer(table), [np.array([1, 2])], np.array([3]), np.array([[4, 5]]), 5)
    assert full.tolist() == [0] and pop.tolist() == [0]


def test_constant_scores_get_the_worst_rank_not_the_best():
    histories = [np.array([1]), np.array([2])]
    scorer = lambda hs: np.ones((len(hs), 11), dtype=np.float32)  # noqa: E731
    full, pop = rank_targets(scorer, histories, np.array([5, 6]), np.array([[7, 8, 9], [7, 8, 9]]), 10)
    assert full.tolist() == [8, 8]  # 10 items - history - target
    assert pop.tolist() == [3, 3]


def test_shared_scores_rank_by_them_history_excluded():
    counts = np.array([0, 5, 50, 10, 1], dtype=np.float32)
    scorer = lambda hs: np.broadcast_to(counts, (len(hs), 5))  # noqa: E731
    full, _ = rank_targets(scorer, [np.array([4])], np.array([3]), None, 4)
    assert full.tolist() == [1]  # only item 2 is more popular; item 4 is history


def test_the_fast_full_ranks_equal_the_exact_rule_with_ties_nans_and_infinite_scores():
    from bert4rec.evaluate import full_ranks
    from bert4rec.metrics import target_ranks

    rng = np.random.default_rng(11)
    scores = rng.integers(0, 6, size=(40, 300)).astype(np.float32)  # ties everywhere
    scores[3, 17] = np.nan  # a NaN competitor
    scores[4, :] = np.nan
    scores[5, rng.choice(300, 100)] = -np.inf
    targets = rng.integers(0, 300, 40)
    targets[5] = int(np.flatnonzero(scores[5] == -np.inf)[0])  # a -inf target
    hist_rows = np.repeat(np.arange(40), 20)
    hist_items = rng.integers(0, 300, 800)
    target_scores = scores[np.arange(40), targets].copy()
    mask = np.ones_like(scores, dtype=bool)
    mask[hist_rows, hist_items] = False
    mask[np.arange(40), targets] = False
    expected = target_ranks(scores, target_scores, mask)
    assert np.array_equal(full_ranks(scores, target_scores, hist_rows, hist_items, targets), expected)
    assert expected[4] == mask[4].sum() and expected[3] >= 1  # NaN counts against the target
