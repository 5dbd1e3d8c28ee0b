import pytest

from bench.split import kcore, leave_one_out, train_prefixes


def test_kcore_is_iterative():
    # item 'z' has 2 interactions: dropping it leaves user u3 with 2 items, which drops u3,
    # which leaves items 'c' and 'e' with 2 interactions each, which drops them too.
    seqs = {
        "u1": ["a", "b", "c", "d"], "u2": ["a", "b", "d", "e"], "u3": ["c", "z", "z", "e"],
        "u4": ["a", "b", "d", "e"],
    }
    out = kcore(seqs, 3)
    assert out == {"u1": ["a", "b", "d"], "u2": ["a", "b", "d"], "u4": ["a", "b", "d"]}
    assert kcore(out, 3) == out  # a fixed point


def test_kcore_off_keeps_everything():
    seqs = {"u": ["a"], "v": []}
    assert kcore(seqs, 0) == {"u": ["a"]}


def test_leave_one_out_and_truncation():
    s = leave_one_out([1, 2, 3, 4, 5, 6], max_history=3)
    assert s["test"] == ([3, 4, 5], 6)
    assert s["valid"] == ([2, 3, 4], 5)
    with pytest.raises(ValueError):
        leave_one_out([1, 2], 20)


def test_train_prefixes_never_see_valid_or_test():
    samples = train_prefixes([1, 2, 3, 4, 5, 6], max_history=2)
    assert samples == [([1], 2), ([1, 2], 3), ([2, 3], 4)]
    assert all(t not in (5, 6) for _, t in samples)
