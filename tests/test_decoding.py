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


@pytest.mark.parametrize("shared_prefix", [True, False])
def test_a_prefix_state_can_be_decoded_twice(setup, shared_prefix):
    """Decoding must not consume the state: ranking and a GRPO rollout may decode the same prefix."""
    codes, trie, bb, model, tt, prompts = setup
    from bench.generative.prompts import left_pad

    ids, mask = left_pad(prompts, bb.pad_id)
    state = prefill(model, ids, mask)
    first = constrained_beam_search(model, tt, prefix=state, beam_width=10, shared_prefix=shared_prefix)
    second = constrained_beam_search(model, tt, prefix=state, beam_width=10, shared_prefix=shared_prefix)
    narrower = constrained_beam_search(model, tt, prefix=state, beam_width=5, shared_prefix=shared_prefix)
    assert first.items.tolist() == second.items.tolist()
    torch.testing.assert_close(first.scores, second.scores)
    assert narrower.items.shape == (len(prompts), 5)
    assert state.cache.get_seq_length() == ids.shape[1]  # the cache was not extended or repeated


def _latent_prefix(model, head, prompts, steps, pad_id):
    """A latent loop as LASAR runs it: after the prompt, each active row feeds head(last hidden) back
    as the next input embedding; rows whose loop has ended get masked slots."""
    from bench.generative.decoding import extend_prefix
    from bench.generative.prompts import left_pad

    ids, mask = left_pad(prompts, pad_id)
    state = prefill(model, ids, mask, hidden=True)
    n = torch.tensor(steps)
    for t in range(int(n.max()) if len(steps) else 0):
        state = extend_prefix(model, state, head(state.last_hidden), active=n > t)
    return state


@pytest.mark.parametrize("shared_prefix", [True, False])
def test_variable_length_latent_prefix_decodes_batched_as_one_by_one(setup, shared_prefix):
    codes, trie, bb, model, tt, prompts = setup
    torch.manual_seed(0)
    head = torch.nn.Linear(model.config.hidden_size, model.config.hidden_size)
    steps = [0, 1, 3, 1]  # row 0 runs no latent step, row 2 three; finished rows are masked
    with torch.no_grad():
        batched = constrained_beam_search(model, tt, prefix=_latent_prefix(model, head, prompts, steps, bb.pad_id),
                                          beam_width=12, shared_prefix=shared_prefix)
        for r, (p, n) in enumerate(zip(prompts, steps)):
            single = constrained_beam_search(model, tt, prefix=_latent_prefix(model, head, [p], [n], bb.pad_id),
                                             beam_width=12, shared_prefix=shared_prefix)
            assert batched.items[r].tolist() == single.items[0].tolist(), r
            torch.testing.assert_close(batched.scores[r], single.scores[0], atol=1e-4, rtol=1e-4)
        # the latent steps matter: without them row 2 ranks differently
        plain = constrained_beam_search(model, tt, prompts=prompts, pad_id=bb.pad_id, beam_width=12)
    assert plain.items[2].tolist() != batched.items[2].tolist() or not torch.allclose(plain.scores[2], batched.scores[2])
    assert plain.items[0].tolist() == batched.items[0].tolist()  # N = 0: the prompt alone


def test_log_probs_from_a_differentiable_latent_prefix(setup):
    """GRPO on a latent method: completion log-probs after the latent loop, batched with variable N,
    equal the per-row ones, and gradients reach the latent head."""
    from bench.generative.grpo import prefix_completion_logprobs

    codes, trie, bb, model, tt, prompts = setup
    torch.manual_seed(1)
    head = torch.nn.Linear(model.config.hidden_size, model.config.hidden_size)
    steps = [2, 0, 1, 3]
    comp = bb.sid_token_ids[torch.arange(L), torch.tensor(codes[:3])].unsqueeze(0).expand(len(prompts), -1, -1)
    batched = prefix_completion_logprobs(model, _latent_prefix(model, head, prompts, steps, bb.pad_id), comp)
    for r, (p, n) in enumerate(zip(prompts, steps)):
        one = prefix_completion_logprobs(model, _latent_prefix(model, head, [p], [n], bb.pad_id), comp[r:r + 1])
        torch.testing.assert_close(batched[r], one[0], atol=1e-4, rtol=1e-4)
    batched.sum().backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("shared_prefix", [True, False])
def test_decoding_passes_the_kv_cache_under_the_keyword_transformers_takes(setup, shared_prefix):
    """Newer transformers (5.25) renamed the forward's ``past_key_values`` to ``cache`` and warn on the old name
    at every call; ``with_cache`` picks the keyword the installed version takes, for the prefill, a latent step
    and every beam step. Checked on both channels transformers warns through (warnings, its logger)."""
    import logging
    import warnings

    codes, trie, bb, model, tt, prompts = setup
    logged = []
    handler = logging.Handler()
    handler.emit = lambda record: logged.append(record.getMessage())
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    torch.manual_seed(0)
    head = torch.nn.Linear(model.config.hidden_size, model.config.hidden_size)
    try:
        with warnings.catch_warnings(record=True) as caught, torch.no_grad():
            warnings.simplefilter("always")
            state = _latent_prefix(model, head, prompts, [0, 1, 2, 1], bb.pad_id)
            constrained_beam_search(model, tt, prefix=state, beam_width=8, shared_prefix=shared_prefix)
    finally:
        logger.removeHandler(handler)
    said = [str(w.message) for w in caught] + logged
    assert not [s for s in said if "past_key_values" in s], said
