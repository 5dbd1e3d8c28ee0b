import numpy as np
import pytest

from bench.sids import (SIDTrie, auto_codebook_size, collision_groups, parse_sid, resolve_collisions, rq_kmeans,
                        sid_string)


def _points(n=60, d=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32)


def test_rq_kmeans_is_deterministic():
    x = _points()
    a, b = rq_kmeans(x, 3, 4, seed=7), rq_kmeans(x, 3, 4, seed=7)
    assert np.array_equal(a.codes, b.codes)
    assert a.codes.shape == (60, 3) and a.codes.max() < 4


def test_rq_kmeans_levels_are_residual():
    # two well separated blobs: level 0 must split them
    x = np.concatenate([np.zeros((10, 2)), np.full((10, 2), 100.0)]).astype(np.float32)
    x += np.random.default_rng(0).normal(scale=0.1, size=x.shape).astype(np.float32)
    codes = rq_kmeans(x, 2, 2, seed=0).codes
    assert len(set(codes[:10, 0])) == 1 and len(set(codes[10:, 0])) == 1 and codes[0, 0] != codes[10, 0]


def test_reassign_collisions_by_hand():
    codes = np.array([[0, 1, 2], [0, 1, 2], [0, 1, 2], [1, 0, 0]])
    out = resolve_collisions(codes, k=4, mode="reassign")
    assert out[0].tolist() == [0, 1, 2]          # first of the group keeps its SID
    assert out[1].tolist() == [0, 1, 0] and out[2].tolist() == [0, 1, 1]  # lowest free codes
    assert out[3].tolist() == [1, 0, 0]
    assert not collision_groups(out)


def test_reassign_uses_nearest_free_centroid():
    codes = np.array([[0, 0], [0, 0]])
    cents = np.array([[0.0], [10.0], [5.0]], dtype=np.float32)
    resid = np.array([[0.0], [4.9]], dtype=np.float32)
    out = resolve_collisions(codes, 3, "reassign", cents, resid)
    assert out[1].tolist() == [0, 2]


def test_reassign_full_prefix_fails_with_advice():
    codes = np.array([[0, 0], [0, 1], [0, 1]])
    with pytest.raises(ValueError, match="extra_code"):
        resolve_collisions(codes, 2, "reassign")


def test_extra_code_appends_a_level():
    codes = np.array([[0, 1], [0, 1], [1, 1]])
    out = resolve_collisions(codes, 2, "extra_code")
    assert out.tolist() == [[0, 1, 0], [0, 1, 1], [1, 1, 0]]


def test_trie_tables_and_lookup():
    codes = np.array([[0, 1, 2], [0, 1, 3], [1, 0, 0]])
    t = SIDTrie.build(codes, 4)
    assert t.levels == 3
    assert t.allowed(0)[0].tolist() == [True, True, False, False]
    node = t.child[0][0, 0]
    assert t.allowed(1)[node].tolist() == [False, True, False, False]
    for item, c in enumerate(codes):
        assert t.lookup(c.tolist()) == item
    assert t.lookup([0, 1, 0]) == -1 and t.lookup([3, 0, 0]) == -1 and t.lookup([0, 1]) == -1
    with pytest.raises(ValueError, match="not unique"):
        SIDTrie.build(np.array([[0, 1], [0, 1]]), 2)


def test_sid_strings_round_trip():
    assert sid_string([12, 7, 200, 3]) == "<a_12><b_7><c_200><d_3>"
    assert parse_sid(["<a_12>", "<b_7>", "<c_200>", "<d_3>"]) == [12, 7, 200, 3]
    with pytest.raises(ValueError, match="levels"):
        parse_sid("<b_1><a_2>")
    with pytest.raises(ValueError, match="cannot parse"):
        parse_sid("<a_1>junk")


def test_auto_codebook_size():
    assert auto_codebook_size(12101) == 256
    assert auto_codebook_size(1349) == 64
    assert auto_codebook_size(30) == 16


def test_prepared_toy_data(toy_data):
    d = toy_data
    assert d.codes.shape == (d.n_items, 3)
    assert len(np.unique(d.codes, axis=0)) == d.n_items  # collision free
    for item in range(d.n_items):
        assert d.trie.lookup(d.codes[item].tolist()) == item
    assert d.stats["codebook_usage"] and d.stats["sid_levels"] == 3
    test, valid = d.split("test"), d.split("valid")
    for u in range(d.n_users):
        seq = d.sequences[u].tolist()
        assert test.targets[u] == seq[-1] and valid.targets[u] == seq[-2]
        assert test.histories[u] == seq[:-1][-5:]
    train = d.train_samples()
    assert all(len(h) <= 5 for h in train.histories)
    assert len(d.train_samples(cap=10)) == 10


def test_hybrid_embedding_needs_attributes(toy_env, tmp_path):
    from bench.data import prepare
    from bench.loaders import DataError

    with pytest.raises(DataError, match="item2attributes"):
        prepare("toy", {"sids": {"embedding": "hybrid"}}, progress=False, log=lambda *_: None)
