"""TGH, the training-free transition-graph heuristic: hand-built graphs, hand-computed rankings."""
from types import SimpleNamespace

import numpy as np
import pytest

from bench.method import FitContext
from methods.tgh import TGH, rings, sid_prefix_similarity, transition_graph


def _data(train_sequences, codes, text=None):
    """What TGH reads from SIDData: training parts (validation and test targets already removed)."""
    n = len(codes)
    full = [np.array(s + [0, 0]) for s in train_sequences]  # two held-out targets per user, never edges
    return SimpleNamespace(train_sequences=lambda: [s[:-2].tolist() for s in full], n_items=n,
                           item_text=text or [""] * n, codes=np.array(codes), name="t", fingerprint="0" * 16)


def test_graph_joins_consecutive_training_items_only():
    a = transition_graph([[0, 1, 2], [2, 3], [4]], 5, directed=False)
    assert sorted(zip(*a.nonzero())) == [(0, 1), (1, 0), (1, 2), (2, 1), (2, 3), (3, 2)]
    d = transition_graph([[0, 1, 2], [2, 3], [1, 1]], 5, directed=True)  # a repeat is not a self loop
    assert sorted(zip(*d.nonzero())) == [(0, 1), (1, 2), (2, 3)]


def test_rings_are_hop_distances():
    a = transition_graph([[0, 1, 2, 3, 4, 5]], 7, directed=False)  # a path; item 6 is isolated
    assert rings(a, np.array([0, 2]), 3).tolist() == [[0, 1, 2, 3, 0, 0, 0], [2, 1, 0, 1, 2, 3, 0]]


def test_sid_prefix_similarity_counts_shared_prefix_levels():
    codes = np.array([[1, 2, 3], [1, 2, 4], [1, 5, 3], [0, 2, 3]])
    # item 2 shares code 3 at the last level with item 0 but not the prefix: only level 1 counts
    np.testing.assert_allclose(sid_prefix_similarity(codes, np.array([0])), [[1.0, 2 / 3, 1 / 3, 0.0]], rtol=1e-6)


def _fitted(variant, train, codes, directed=True):
    m = TGH(TGH.Config(variant=variant, features="sid", directed=directed))
    m.fit(_data(train, codes), valid=None, ctx=FitContext(workdir=".", progress=False, log=lambda *_: None))
    return m


def test_tgh1_ranks_ring_by_ring_then_by_similarity():
    # path 0-1-2-3 plus 0-4 and 4-5; item 6 isolated. From item 0: ring 1 = {1, 4}, ring 2 = {2, 5}, ring 3 = {3}
    codes = [[0, 0], [1, 0], [0, 1], [2, 0], [0, 2], [3, 3], [0, 3]]
    m = _fitted("tgh1", [[0, 1, 2, 3], [0, 4, 5]], codes)
    # ring 1: item 4 shares the first code with item 0 (0.5), item 1 nothing (0) -> 4, 1; ring 2: 2 (0.5) then 5;
    # ring 3: 3; outside the rings, by similarity to item 0: 0 itself (1.0), then 6 (0.5)
    assert m.recommend([[0]], k=7).items.tolist() == [[4, 1, 2, 5, 3, 0, 6]]


def test_tgh2_puts_the_second_to_last_items_ring_after_the_last_items():
    # last item 0 (ring 1 = {1}), second-to-last 5 (ring 1 = {4}); ring 2 of 0 = {2}, of 5 = {6}
    codes = [[0, 0], [1, 1], [2, 2], [3, 3], [4, 4], [5, 5], [6, 6], [7, 7]]
    m = _fitted("tgh2", [[0, 1, 2], [5, 4], [4, 6]], codes)
    top = m.recommend([[7, 5, 0]], k=4).items.tolist()[0]
    assert top == [1, 4, 2, 6]
    # TGH-1 from the same history sees only the last item's rings
    assert _fitted("tgh1", [[0, 1, 2], [5, 4], [4, 6]], codes).recommend([[7, 5, 0]], k=2).items.tolist() == [[1, 2]]


def test_held_out_targets_are_never_edges():
    m = _fitted("tgh1", [[0, 1]], [[0, 0], [1, 1], [2, 2]], directed=False)
    assert sorted(zip(*m.adjacency.nonzero())) == [(0, 1), (1, 0)]  # the two held-out 0s add no edge to 1


def test_directed_rings_follow_the_order_of_the_sequences():
    # 2 follows 1 and 1 follows 0: from item 1, the directed graph reaches only 2; both ways, 0 and 2
    codes = [[0, 0], [1, 1], [2, 2], [3, 3]]
    assert _fitted("tgh1", [[0, 1, 2]], codes).recommend([[1]], k=1).items.tolist() == [[2]]
    both = _fitted("tgh1", [[0, 1, 2]], codes, directed=False).recommend([[1]], k=2).items.tolist()[0]
    assert sorted(both) == [0, 2]
    assert TGH.Config().directed is True  # the default, chosen on Beauty's validation split


def test_save_and_load_rank_the_same(tmp_path):
    m = _fitted("tgh2", [[0, 1, 2], [5, 4], [4, 6]], [[i, i] for i in range(8)])
    m.save(tmp_path)
    again = TGH(TGH.Config(variant="tgh2", features="sid"))
    again.load(tmp_path, None)
    hist = [[7, 5, 0], [3], [1, 2]]
    assert again.recommend(hist, k=8).items.tolist() == m.recommend(hist, k=8).items.tolist()


@pytest.mark.parametrize("features", ["text", "auto"])
def test_text_features_are_cosine_similarities(toy_env, features):
    from bench.data import prepare

    data = prepare("toy", progress=False, log=lambda *_: None)
    m = TGH(TGH.Config(features=features))
    m.fit(data, valid=None, ctx=FitContext(workdir=".", progress=False, log=lambda *_: None))
    assert m.feature_kind.startswith("text embeddings")
    sim = m.similarity(np.array([0]))[0]
    assert sim[0] == pytest.approx(1.0, abs=1e-5) and (sim <= 1 + 1e-5).all()


def test_a_cached_embedding_counts_in_the_rows_training_time(toy_env, tmp_path):
    import shutil

    from bench.config import build_spec
    from bench.data import cache_root
    from bench.report import training_seconds
    from bench.runner import run

    shutil.rmtree(cache_root() / "tgh", ignore_errors=True)  # computed here first, then read back
    first = run(build_spec("tgh", "toy", method_config={"features": "text"}), tmp_path / "a", progress=False,
                echo=False)
    again = run(build_spec("tgh", "toy", method_config={"features": "text"}), tmp_path / "b", progress=False,
                echo=False)
    made, read = first.training.model_extra["item_features"], again.training.model_extra["item_features"]
    assert "reused" not in made and made["seconds"] > 0
    assert read == {**made, "reused": True}
    assert training_seconds(again) == pytest.approx(again.training.seconds + made["seconds"])
