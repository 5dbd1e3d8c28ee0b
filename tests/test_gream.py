"""GREAM (explicit CoT): the reasoning mode's answer decode equals the decoder run on the same generated
prefix from scratch, generation stops at the think-block end or the cap, the CoT-SFT targets, and the
Stage-1 entry shared with LASAR."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.generative.cot import REASON_END, REASON_START
from bench.method import FitContext
from methods.gream import GREAM
from methods.lasar.method import LASAR

SMOKE = dict(GREAM.smoke_config)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def built(toy_data, tmp_path_factory):
    """A GREAM whose backbone is built (untrained), in the reasoning mode."""
    m = GREAM(GREAM.Config(**{**SMOKE, "mode": "reasoning"}))
    m._build(toy_data, FitContext(workdir=tmp_path_factory.mktemp("gream"), seed=0))
    m.bb.model.eval()
    return m


def _force_next(model, token_id: int, after: int):
    """Make the model emit ``token_id`` as the ``after``-th generated token (logit bias via a hook)."""
    calls = {"n": 0}

    def hook(_m, _inp, out):
        calls["n"] += 1
        if calls["n"] == after + 1:  # the prefill is call 1: its logits give generated token 1
            out.logits[:, -1, :] = -1e4
            out.logits[:, -1, token_id] = 1e4
        return out

    return model.register_forward_hook(hook)


def test_generation_stops_at_the_end_marker_or_the_cap(built, toy_data):
    hist = [list(h) for h in toy_data.split("test").histories[:3]]
    end = built._tok(REASON_END)
    # an untrained model rarely writes the end marker: force it as the 3rd generated token
    handle = _force_next(built.bb.model, end, after=2)
    try:
        _, lengths = built.generate_reasoning(built.bb.model, hist, cap=10)
    finally:
        handle.remove()
    assert lengths.tolist() == [3, 3, 3]
    # without the marker every row runs to the cap, and the marker is appended
    state, lengths = built.generate_reasoning(built.bb.model, hist, cap=4)
    prompt_len = len(built.reasoning_prompt(built.enc, hist[0]))
    assert (lengths <= 4).all()
    assert int(state.attention_mask[0].sum()) == prompt_len + int(lengths[0]) + (1 if lengths[0] == 4 else 0)


def test_reasoning_answer_decode_equals_the_decoder_on_the_same_prefix_from_scratch(built, toy_data):
    from bench.generative.decoding import constrained_beam_search

    hist = [list(h) for h in toy_data.split("test").histories[:4]]
    model = built.bb.model
    with torch.no_grad():
        state, lengths = built.generate_reasoning(model, hist, cap=6)
        cached = constrained_beam_search(model, built.trie, prefix=state, beam_width=8)
    # the generated prefix as plain token ids, decoded from scratch (no reuse of the generation cache)
    for r, h in enumerate(hist):
        ids = built.reasoning_prompt(built.enc, h)
        # the generated tokens: greedy again, one by one, without a cache
        gen = []
        for _ in range(6):
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([ids + gen])).logits[0, -1]
            gen.append(int(logits.argmax()))
            if gen[-1] == built._tok(REASON_END):
                break
        assert len(gen) == int(lengths[r])  # the cached greedy run generated as many tokens
        if gen[-1] != built._tok(REASON_END):
            gen.append(built._tok(REASON_END))
        with torch.no_grad():
            scratch = constrained_beam_search(model, built.trie, prompts=[ids + gen], pad_id=built.bb.pad_id,
                                              beam_width=8)
        assert cached.items[r].tolist() == scratch.items[0].tolist()
        assert torch.allclose(cached.scores[r], scratch.scores[0], atol=1e-4)


def test_cot_sft_targets_have_think_rewrite_and_answer(built, toy_data):
    ex = built.cot_sft_examples(toy_data)
    cot = [e for e in ex if e.task == "cot"]
    direct = [e for e in ex if e.task == "seqrec"]
    assert len(cot) == SMOKE["latent_samples"] and len(direct) == SMOKE["direct_samples"]
    st = built.cot_state(toy_data)
    e, h, t = cot[0], list(st["samples"].histories[0]), int(st["samples"].targets[0])
    assert e.prompt[-1] == built._tok(REASON_START)
    end = e.response.index(built._tok(REASON_END))
    rewrite = [x for i in h[-SMOKE["rewrite_items"]:] for x in built.enc.sid_ids(i)]
    assert e.response[end - len(rewrite):end] == rewrite  # the rewritten history closes the think block
    assert e.response[end + 1:] == built.enc.answer(t)     # the answer follows the end marker
    assert built._tok(REASON_START) not in direct[0].prompt


def test_gream_shares_lasars_stage1_and_its_modes_share_cot_sft(toy_data):
    ctx = FitContext(workdir=Path("/tmp"), seed=0)
    g = GREAM(GREAM.Config(**SMOKE)).sft_stage(toy_data, ctx).id
    lasar_cfg = {k: v for k, v in SMOKE.items() if k in LASAR.Config.model_fields}
    assert LASAR(LASAR.Config(**lasar_cfg)).sft_stage(toy_data, ctx).id == g
    assert GREAM(GREAM.Config(**{**SMOKE, "stage1_cot_samples": 7})).sft_stage(toy_data, ctx).id != g
    a = GREAM(GREAM.Config(**{**SMOKE, "mode": "direct"}))._cot_sft_key(toy_data, ctx, g)
    b = GREAM(GREAM.Config(**{**SMOKE, "mode": "reasoning", "max_think_tokens": 50}))._cot_sft_key(toy_data, ctx, g)
    assert a == b
    assert GREAM(GREAM.Config(**{**SMOKE, "rewrite_items": 0}))._cot_sft_key(toy_data, ctx, g) != a


def test_gream_end_to_end_both_modes_share_training(toy_env, tmp_path):
    from bench.config import build_spec
    from bench.runner import run

    direct = run(build_spec("gream", "toy", method_config={**SMOKE, "mode": "direct"}, sets=["eval.max_users=8"]),
                 tmp_path, progress=False, echo=False)
    reasoning = run(build_spec("gream", "toy", method_config={**SMOKE, "mode": "reasoning"},
                               sets=["eval.max_users=8"]), tmp_path, progress=False, echo=False)
    assert reasoning.training.model_extra["cot_sft"]["reused"] is True
    assert "by_stat" not in direct.evaluation
    cot = reasoning.evaluation["by_stat"]["cot_tokens"]
    assert 1 <= cot["mean"] <= SMOKE["max_think_tokens"]
