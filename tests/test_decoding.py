"""Equivalence tests for the trie-constrained beam search."""
import numpy as np
import pytest
import torch

from bench.generative.backbone import BackboneConfig, build_backbone
from bench.generative.decoding import (TrieTensors, constrained_beam_search, exhaustive_scores,
                                       hf_constrained_generate, prefill)
from bench.sids import SIDTrie, sid_token

K, L = 6, 4


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    codes = np.unique(rng.integers(0, K, (400, L)), axis=0)[:150]
    trie = SIDTrie.build(codes, K)
    bb = build_backbone(BackboneConfig(preset="tiny"), sid_tokens=[sid_token(l, c) for l in range(L) for c in range(K)],
                        levels=L, codebook_size=K, corpus=["w1 w2 w3 w4 w5 w6 w7 w8"], seed=1)
    model = bb.model.eval()
    prompts = [[3, 4, 5, 6, 7], [5, 6], [7, 7, 3, 4, 4, 5, 6, 3, 3], [bb.sid_token_ids[0, 2].item(), 4]]
    return codes, trie, bb, model, TrieTensors(trie, bb.sid_token_ids), prompts


def test_full_width_equals_exhaustive_ranking(setup):
    codes, trie, bb, model, tt, prompts = setup
    res = constrained_beam_search(model, tt, prompts=prompts, pad_id=bb.pad_id, beam_width=len(codes))
    for r, p in enumerate(prompts):
        ex = exhaustive_scores(model, torch.tensor(codes), bb.sid_token_ids, p)
        order = torch.argsort(ex, descending=True)
        assert res.items[r].tolist() == order.tolist()
        torch.testing.assert_close(res.scores[r], ex[order], atol=1e-4, rtol=1e-4)


def test_every_output_is_a_real_distinct_item(setup):
    codes, trie, bb, model, tt, prompts = setup
    res = constrained_beam_search(model, tt, prompts=prompts, pad_id=bb.pad_id, beam_width=50)
    for r in range(len(prompts)):
        items = res.items[r].tolist()
        assert len(set(items)) == 50 and all(0 <= i < len(codes) for i in items)
        for i, c in zip(items, res.codes[r].tolist()):
            assert trie.lookup(c) == i
        assert torch.all(res.scores[r][:-1] >= res.scores[r][1:])


def test_batched_equals_one_by_one(setup):
    codes, trie, bb, model, tt, prompts = setup
    batched = constrained_beam_search(model, tt, prompts=prompts, pad_id=bb.pad_id, beam_width=20)
    for r, p in enumerate(prompts):
        single = constrained_beam_search(model, tt, prompts=[p], pad_id=bb.pad_id, beam_width=20)
        assert single.items[0].tolist() == batched.items[r].tolist()
        torch.testing.assert_close(single.scores[0], batched.scores[r], atol=1e-4, rtol=1e-4)


def test_matches_hf_generate_route(setup):
    codes, trie, bb, model, tt, prompts = setup
    ours = constrained_beam_search(model, tt, prompts=prompts, pad_id=bb.pad_id, beam_width=12)
    hf = hf_constrained_generate(model, torch.tensor(codes), bb.sid_token_ids, prompts, bb.pad_id, beam_width=12)
    assert hf.tolist() == ours.items.tolist()


def test_starts_from_a_prefix_state(setup):
    """LASAR/GREAM decode after their own prefix: a prefilled cache must give the same result."""
    codes, trie, bb, model, tt, prompts = setup
    from bench.generative.prompts import left_pad

    ids, mask = left_pad(prompts, bb.pad_id)
    state = prefill(model, ids, mask)
    a = constrained_beam_search(model, tt, prefix=state, beam_width=10)
    b = constrained_beam_search(model, tt, prompts=prompts, pad_id=bb.pad_id, beam_width=10)
    assert a.items.tolist() == b.items.tolist()


def test_fewer_items_than_beams_pads_with_minus_one(setup):
    _, _, bb, model, _, prompts = setup
    small = np.array([[0, 1, 2, 3], [0, 1, 2, 4], [5, 0, 0, 0]])
    tt = TrieTensors(SIDTrie.build(small, K), bb.sid_token_ids)
    res = constrained_beam_search(model, tt, prompts=prompts[:1], pad_id=bb.pad_id, beam_width=8)
    assert sorted(res.items[0, :3].tolist()) == [0, 1, 2] and res.items[0, 3:].tolist() == [-1] * 5
    assert torch.isinf(res.scores[0, 3:]).all()


def test_unconstrained_can_leave_the_catalog(setup):
    codes, trie, bb, model, tt, prompts = setup
    res = constrained_beam_search(model, tt, prompts=prompts, pad_id=bb.pad_id, beam_width=50, constrained=False)
    assert (res.items == -1).any()  # 150 of 6^4 = 1296 SIDs exist: some top beams are not items


@pytest.mark.parametrize("width", [5, 50, 200])
def test_shared_prefix_cache_equals_expand_and_reorder(setup, width):
    codes, trie, bb, model, tt, prompts = setup
    fast = constrained_beam_search(model, tt, prompts=prompts, pad_id=bb.pad_id, beam_width=width)
    plain = constrained_beam_search(model, tt, prompts=prompts, pad_id=bb.pad_id, beam_width=width, shared_prefix=False)
    assert fast.items.tolist() == plain.items.tolist()
    torch.testing.assert_close(fast.scores, plain.scores, atol=1e-4, rtol=1e-4)
