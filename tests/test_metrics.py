import math

import numpy as np
import pytest

from bench.metrics import clean_rankings, evaluate, metrics_from_ranks, target_ranks


def test_hand_computed_metrics():
    # targets at rank 1, 3, 7, 15 and absent
    ranks = np.array([1, 3, 7, 15, 0])
    m = metrics_from_ranks(ranks)
    assert m["HR@5"] == pytest.approx(2 / 5)
    assert m["HR@10"] == pytest.approx(3 / 5)
    assert m["HR@20"] == pytest.approx(4 / 5)
    assert m["NDCG@5"] == pytest.approx((1 + 1 / math.log2(4)) / 5)
    assert m["NDCG@10"] == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(8)) / 5)
    assert m["NDCG@20"] == pytest.approx((1 + 0.5 + 1 / 3 + 1 / 4) / 5)


def test_ranks_from_lists_and_cleaning():
    items = np.array([[4, 2, 9, 9, 1], [7, 99, 3, -1, -1], [5, 6, 7, 8, 0]])
    ranked, invalid, dup = clean_rankings(items, n_items=10)
    assert ranked.tolist()[0] == [4, 2, 9, 1, -1]   # duplicate 9 dropped, list left-aligned
    assert ranked.tolist()[1] == [7, 3, -1, -1, -1]  # 99 is not an item
    assert (invalid, dup) == (1, 1)
    assert target_ranks(ranked, np.array([1, 3, 4])).tolist() == [4, 2, 0]


def test_history_exclusion_moves_target_up():
    items = np.array([[3, 5, 8, 2]])
    ev_plain = evaluate(items, np.array([8]), 10, ks=(1, 2, 3))
    ev_excl = evaluate(items, np.array([8]), 10, ks=(1, 2, 3), histories=[[3, 5]])
    assert ev_plain.ranks.tolist() == [3]
    assert ev_excl.ranks.tolist() == [1]
    assert ev_excl.duplicates == 0 and ev_excl.metrics["HR@1"] == 1.0


def test_evaluate_metric_keys():
    ev = evaluate(np.arange(20)[None], np.array([0]), 20)
    assert set(ev.metrics) == {"HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20"}
    assert ev.metrics["NDCG@5"] == 1.0
