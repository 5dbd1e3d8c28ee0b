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


def test_sid_level_metrics_count_a_shared_sid_once():
    # items 0 and 2 share a SID (group 0); lists are cleaned item ids, best first
    groups = np.array([0, 1, 0, 3])
    ranked = np.array([[0, 1, 2, 3], [1, 0, 2, 3]])
    targets = np.array([2, 3])
    # item level: user 0's target (2) at rank 3, user 1's (3) at 4; SID level: user 0's group 0 at rank 1
    # (item 0 names it), user 1's lists groups 1, 0, (0 again, dropped), 3 -> rank 3
    ev = evaluate(ranked, targets, 4, ks=(1, 10), sid_groups=groups)
    assert ev.ranks.tolist() == [3, 4]
    assert ev.metrics["NDCG@10"] == pytest.approx((1 / math.log2(4) + 1 / math.log2(5)) / 2)
    assert ev.sid_level["NDCG@10"] == pytest.approx((1.0 + 1 / math.log2(4)) / 2)
    assert ev.metrics["HR@1"] == 0.0 and ev.sid_level["HR@1"] == 0.5
    # no shared SID: nothing to report beside the item-level metrics
    assert evaluate(ranked, targets, 4, sid_groups=np.arange(4)).sid_level is None


def test_a_shared_sid_in_a_precomputed_index_gives_sid_level_results(tmp_path, monkeypatch):
    import json

    from bench.runner import run

    # items "1" and "2" share the SID <a_1><b_1>; the harness resolves it (each SID names one item) and the
    # result reports both levels. Popularity ranks 1, 4, 2, 3 (counts 4, 0, 0, 0; ties in id order).
    (tmp_path / "T.inter.json").write_text(json.dumps({"0": [1, 1, 1, 4, 2], "1": [1, 3, 3]}))
    (tmp_path / "T.index.json").write_text(json.dumps(
        {"1": ["<a_1>", "<b_1>"], "2": ["<a_1>", "<b_1>"], "3": ["<a_2>", "<b_1>"], "4": ["<a_3>", "<b_1>"]}))
    card = tmp_path / "t.yaml"
    card.write_text(f"name: t\nformat: lcrec\nprefix: T\npath: {tmp_path}\n"
                    "data: {kcore: 0, sids: {source: precomputed, levels: 2, codebook_size: 4}}\n")
    monkeypatch.setenv("REASONREC_CACHE", str(tmp_path / "cache"))
    res = run({"method": "pop", "dataset": str(card)}, tmp_path / "runs", progress=False, echo=False)
    # item level: user 0's target (item 2) at rank 3, user 1's (item 3) at 4; SID level: item 1 names user
    # 0's SID at rank 1, user 1's groups are 1, 4, (1 again), 3 -> rank 3
    assert res.metrics["NDCG@10"] == pytest.approx((1 / math.log2(4) + 1 / math.log2(5)) / 2)
    assert res.evaluation["level"] == "item"
    assert res.evaluation["sid_level"]["NDCG@10"] == pytest.approx((1.0 + 1 / math.log2(4)) / 2)
    assert res.evaluation["sid_level"]["NDCG@5"] - res.metrics["NDCG@5"] == pytest.approx(
        (1.0 + 1 / math.log2(4)) / 2 - (1 / math.log2(4) + 1 / math.log2(5)) / 2)


@pytest.mark.parametrize("source", ["precomputed", "rq-kmeans"])
def test_a_cache_from_before_sid_groups_gets_them_without_changing_its_sids(tmp_path, monkeypatch, source):
    import json

    from bench.data import prepare

    seqs = {str(u): [(u + j) % 7 + 1 for j in range(6)] for u in range(12)}
    (tmp_path / "T.inter.json").write_text(json.dumps(seqs))
    (tmp_path / "T.index.json").write_text(json.dumps(
        {str(i): [f"<a_{min(i, 3)}>", "<b_0>"] for i in range(1, 8)}))  # items 3..7 share a SID
    sids = ("{source: precomputed, levels: 2, codebook_size: 8}" if source == "precomputed" else
            "{embedding: collaborative, levels: 1, codebook_size: 2}")
    card = tmp_path / "t.yaml"
    card.write_text(f"name: t\nformat: lcrec\nprefix: T\npath: {tmp_path}\ndata: {{kcore: 0, sids: {sids}}}\n")
    monkeypatch.setenv("REASONREC_CACHE", str(tmp_path / "cache"))
    fresh = prepare(str(card), progress=False, log=lambda *_: None)
    assert fresh.sid_groups is not None and len(np.unique(fresh.sid_groups)) < fresh.n_items
    folder = next((tmp_path / "cache" / "data").iterdir())
    arrays = dict(np.load(folder / "arrays.npz"))
    np.savez(folder / "arrays.npz", **{k: v for k, v in arrays.items() if k != "sid_groups"})  # the old format
    again = prepare(str(card), progress=False, log=lambda *_: None)
    assert np.array_equal(again.sid_groups, fresh.sid_groups) and np.array_equal(again.codes, fresh.codes)
    assert "sid_groups" in np.load(folder / "arrays.npz").files  # written back once
