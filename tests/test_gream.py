"""GREAM (explicit CoT): the reasoning mode's answer decode equals the decoder run on the same generated
prefix from scratch, generation stops at the think-block end or the cap, the CoT-SFT targets, and the
Stage-1 entry shared with LASAR."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.generative.cot import REASON_END, REASON_START
from bench.method import FitContext
from bench.generative.prompts import collate
from bench.generative.training import causal_lm_loss
from methods.gream import GREAM, answer_weights, repeated_ngram_mask
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


def test_generation_stops_at_the_end_marker_a_sid_token_or_the_cap(built, toy_data):
    hist = [list(h) for h in toy_data.split("test").histories[:3]]
    end = built._tok(REASON_END)
    sid = int(built.bb.sid_token_ids.flatten()[5])
    for stop in (end, sid):  # force the stop token as the 3rd generated token: 2 text tokens are kept
        handle = _force_next(built.bb.model, stop, after=2)
        try:
            state, lengths = built.generate_reasoning(built.bb.model, hist, cap=10)
        finally:
            handle.remove()
        assert lengths.tolist() == [2, 2, 2]
    # the cache holds prompt + text + rewrite + end marker
    for r, h in enumerate(hist):
        want = len(built.reasoning_prompt(built.enc, h)) + 2 + len(built.rewrite(h)) + 1
        assert int(state.attention_mask[r].sum()) == want
    _, lengths = built.generate_reasoning(built.bb.model, hist, cap=4)
    assert (lengths <= 4).all()


def test_rows_stop_at_their_own_step_and_short_histories_get_short_rewrites(built, toy_data):
    """Batched generation == each row alone, when rows stop at different steps and one history is
    shorter than the rewrite. A hook makes row r write text until step stop[r], then the end marker."""
    from bench.generative.decoding import constrained_beam_search

    model, end = built.bb.model, built._tok(REASON_END)
    hist = [list(h) for h in toy_data.split("test").histories[:3]]
    hist[1] = hist[1][-1:]  # one item: a shorter rewrite than rewrite_items
    assert len(built.rewrite(hist[1])) < len(built.rewrite(hist[0]))
    stops = sorted(set(built.bb.sid_token_ids.flatten().tolist()) | {end})
    rule = {"stop": [], "call": 0}

    def hook(_m, _inp, out):  # call g's logits give generated token g (the prefill is call 0)
        g, rule["call"] = rule["call"], rule["call"] + 1
        for r, s in enumerate(rule["stop"]):
            if g >= s:
                out.logits[r, -1, end] += 60.0
            else:
                out.logits[r, -1, stops] -= 30.0
        return out

    def generate(rows, stop):
        rule.update(stop=stop, call=0)
        handle = model.register_forward_hook(hook)
        try:
            state, lengths = built.generate_reasoning(model, rows, cap=8)
        finally:
            handle.remove()
        with torch.no_grad():
            return constrained_beam_search(model, built.trie, prefix=state, beam_width=8), lengths, state

    batch, lengths, state = generate(hist, [1, 3, 5])
    assert lengths.tolist() == [1, 3, 5]
    for r, h in enumerate(hist):
        alone, n, _ = generate([h], [[1, 3, 5][r]])
        assert int(n[0]) == int(lengths[r])
        assert batch.items[r].tolist() == alone.items[0].tolist()
        assert torch.allclose(batch.scores[r], alone.scores[0], atol=1e-4)
        # the cache holds prompt + text + this row's rewrite + the end marker
        want = len(built.reasoning_prompt(built.enc, h)) + int(n[0]) + len(built.rewrite(h)) + 1
        assert int(state.attention_mask[r].sum()) == want


def test_reasoning_answer_decode_equals_the_decoder_on_the_same_prefix_from_scratch(built, toy_data):
    from bench.generative.decoding import constrained_beam_search

    hist = [list(h) for h in toy_data.split("test").histories[:4]]
    model = built.bb.model
    stops = set(built.bb.sid_token_ids.flatten().tolist()) | {built._tok(REASON_END)}
    idx = torch.tensor(sorted(stops), device=built.device)

    def no_stops(_m, _inp, out):  # an untrained model: keep it writing text (every forward, both routes)
        out.logits[..., idx] -= 30.0
        return out

    handle = model.register_forward_hook(no_stops)  # on for every forward below (cached and from scratch)
    try:
        _compare(built, model, hist, stops, constrained_beam_search)
    finally:
        handle.remove()


def _compare(built, model, hist, stops, constrained_beam_search):
    with torch.no_grad():
        state, lengths = built.generate_reasoning(model, hist, cap=6)
        assert lengths.tolist() == [6, 6, 6, 6]  # text up to the cap
        cached = constrained_beam_search(model, built.trie, prefix=state, beam_width=8)
    # the generated prefix as plain token ids, decoded from scratch (no reuse of the generation cache)
    for r, h in enumerate(hist):
        ids = built.reasoning_prompt(built.enc, h)
        # the generated tokens: greedy again, one by one, without a cache
        gen = []
        for _ in range(6):
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([ids + gen], device=built.device)).logits[0, -1]
            if len(gen) >= built.config.no_repeat_ngram:  # the same no-repeat rule as the cached run
                ban = repeated_ngram_mask(torch.tensor([gen], device=logits.device), built.config.no_repeat_ngram,
                                          len(logits), keep=built._tok(REASON_END))[0]
                logits = logits.masked_fill(ban, float("-inf"))
            if int(logits.argmax()) in stops:
                break
            gen.append(int(logits.argmax()))
        assert len(gen) == int(lengths[r])  # the cached greedy run generated as many tokens
        gen += [*built.rewrite(h), built._tok(REASON_END)]
        with torch.no_grad():
            scratch = constrained_beam_search(model, built.trie, prompts=[ids + gen], pad_id=built.bb.pad_id,
                                              beam_width=8)
        assert cached.items[r].tolist() == scratch.items[0].tolist()
        assert torch.allclose(cached.scores[r], scratch.scores[0], atol=1e-4)


def test_repeated_ngram_mask_by_hand():
    gen = torch.tensor([[1, 2, 3, 1, 2], [4, 4, 4, 4, 5]])
    ban = repeated_ngram_mask(gen, 3, 8)
    assert ban[0].nonzero().flatten().tolist() == [3]   # "1 2" was followed by 3
    assert ban[1].nonzero().flatten().tolist() == []    # "4 5" never occurred before
    ban = repeated_ngram_mask(gen[:, :4], 2, 8, keep=4)
    assert ban[0].nonzero().flatten().tolist() == [2]   # "1" was followed by 2
    assert ban[1].nonzero().flatten().tolist() == []    # "4" -> 4, but 4 is kept (the end marker)


def test_answer_weights_by_hand():
    E = 9  # the end marker; -100 = no label
    labels = torch.tensor([[-100, 5, 6, E, 7, 8], [-100, -100, -100, -100, 7, 8]])
    w = answer_weights(labels, E, 20.0)
    assert w[0].tolist() == [1, 1, 1, 1, 20, 20]  # only the tokens after the marker: the CoT sample's answer
    assert w[1].tolist() == [1] * 6               # a direct sample has no marker: plain weights


def test_weighted_causal_lm_loss_is_the_weighted_token_mean(built, toy_data):
    ex = built.cot_sft_examples(toy_data)
    batch = collate([ex[0], ex[-1]], built.bb.pad_id)  # a CoT sample and a direct one
    batch = {k: v.to(built.device) for k, v in batch.items()}
    model, end = built.bb.model, built._tok(REASON_END)
    plain = causal_lm_loss(model, batch)
    assert torch.allclose(causal_lm_loss(model, batch, torch.ones_like(batch["labels"]).float()), plain)
    # by hand: per-token CE on every labelled position, weighted mean with the answer 20x
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=batch["position_ids"]).logits[:, :-1].float()
    labels, w = batch["labels"][:, 1:], answer_weights(batch["labels"], end, 20.0)[:, 1:]
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
    on = labels != -100
    want = (ce * w)[on].sum() / w[on].sum()
    got = causal_lm_loss(model, batch, answer_weights(batch["labels"], end, 20.0))
    assert torch.allclose(got, want, atol=1e-5) and not torch.allclose(got, plain, atol=1e-4)
    assert int((w[on] == 20).sum()) == len(built.enc.answer(0))  # the CoT sample's answer tokens only


def test_cot_sft_targets_have_think_rewrite_and_answer(built, toy_data):
    ex = built.cot_sft_examples(toy_data)
    cot = [e for e in ex if e.task == "cot"]
    direct = [e for e in ex if e.task == "seqrec"]
    assert len(cot) == SMOKE["cot_samples"] and len(direct) == SMOKE["direct_samples"]
    st = built.cot_state(toy_data)
    e, h, t = cot[0], list(st["samples"].histories[0]), int(st["samples"].targets[0])
    assert e.prompt[-1] == built._tok(REASON_START)
    end = e.response.index(built._tok(REASON_END))
    rewrite = [x for i in h[-SMOKE["rewrite_items"]:] for x in built.enc.sid_ids(i)]
    assert e.response[end - len(rewrite):end] == rewrite  # the rewritten history closes the think block
    assert e.response[end + 1:] == built.enc.answer(t)     # the answer follows the end marker
    assert built._tok(REASON_START) not in direct[0].prompt
    more = GREAM(built.config.model_copy(update={"cot_sft_samples": 40}))
    more.bb, more.enc, more._cot_state = built.bb, built.enc, built._cot_state
    assert sum(e.task == "cot" for e in more.cot_sft_examples(toy_data)) == 40  # its own, larger draw


def test_gream_shares_lasars_text_pass_stage1_and_its_modes_share_cot_sft(toy_data):
    ctx = FitContext(workdir=Path("/tmp"), seed=0)
    g = GREAM(GREAM.Config(**SMOKE)).sft_stage(toy_data, ctx).id
    # LASAR's text-pass ablation with GREAM's Stage-1 settings is GREAM's Stage 1; its default is MiniOneRec's SFT
    lasar_cfg = {k: v for k, v in SMOKE.items() if k in LASAR.Config.model_fields}
    lasar_cfg["sft"] = GREAM.Config(**SMOKE).sft.model_dump()
    assert LASAR(LASAR.Config(**lasar_cfg)).sft_stage(toy_data, ctx).id == g
    assert LASAR(LASAR.Config(**{**lasar_cfg, "stage1_cot_samples": 0})).sft_stage(toy_data, ctx).id != g
    assert GREAM(GREAM.Config(**{**SMOKE, "stage1_cot_samples": 7})).sft_stage(toy_data, ctx).id != g
    a = GREAM(GREAM.Config(**{**SMOKE, "mode": "direct"}))._cot_sft_key(toy_data, ctx, g)
    b = GREAM(GREAM.Config(**{**SMOKE, "mode": "reasoning", "max_think_tokens": 50}))._cot_sft_key(toy_data, ctx, g)
    assert a == b
    assert GREAM(GREAM.Config(**{**SMOKE, "rewrite_items": 0}))._cot_sft_key(toy_data, ctx, g) != a
    weighted = GREAM(GREAM.Config(**{**SMOKE, "answer_weight": 20}))
    assert weighted.sft_stage(toy_data, ctx).id == g and weighted._cot_sft_key(toy_data, ctx, g) != a
    assert "answer_weight" not in a["config"]  # at its old value (1): keys made before the setting stay valid


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
    assert 1 <= cot["mean"] <= cot["max"] <= SMOKE["max_think_tokens"]


def test_lasar_gives_the_same_result_whichever_method_published_its_stage1(toy_env, tmp_path, monkeypatch):
    """GREAM's Stage 1 has no policy head (LASAR's module). LASAR reusing it must neither fail (it did:
    FileNotFoundError) nor differ from LASAR on its own Stage 1 (a fresh head draw at reuse time did)."""
    from bench.config import build_spec
    from bench.runner import run

    lasar_cfg = {**{k: v for k, v in SMOKE.items() if k in LASAR.Config.model_fields}, "max_steps": 3,
                 "stage2_extra_samples": 16, "stage2": {"epochs": 1, "batch_size": 16}, "rl": {"enabled": False},
                 "sft": GREAM.Config(**SMOKE).sft.model_dump()}  # the text-pass Stage 1 with GREAM's settings
    spec = build_spec("lasar", "toy", method_config=lasar_cfg, sets=["eval.max_users=16"])
    monkeypatch.setenv("REASONREC_CACHE", str(tmp_path / "own"))
    own = run(spec, tmp_path / "a", progress=False, echo=False)            # LASAR trains and publishes Stage 1
    monkeypatch.setenv("REASONREC_CACHE", str(tmp_path / "gream"))
    gream = run(build_spec("gream", "toy", method_config={**SMOKE, "mode": "direct"}, sets=["eval.max_users=16"]),
                tmp_path / "b", progress=False, echo=False)                 # GREAM publishes the same Stage 1
    reused = run(spec, tmp_path / "b", progress=False, echo=False)
    assert reused.training.model_extra["sft"].get("reused") is True
    assert reused.training.model_extra["sft"]["stage"] == gream.training.model_extra["sft"]["stage"] \
        == own.training.model_extra["sft"]["stage"]
    assert reused.metrics == own.metrics


def test_demo_queues_the_second_gream_row_last():
    """Both GREAM rows share one CoT-SFT stage (a lock): the reasoning row is queued after every other row,
    so it does not hold the second demo worker idle while the direct row trains that stage."""
    from bench.demo import demo_suite

    labels = [(e.method, e.label) for e in demo_suite(["pop", "gream", "rearec"]).methods]
    assert labels == [("rearec", "ReaRec-ERL"), ("rearec", "ReaRec-PRL"), ("gream", "GREAM (direct)"),
                      ("pop", None), ("gream", "GREAM (reasoning)")]


def test_minionerec_and_lasar_demo_rows_share_one_stage1(toy_data):
    """The demo trains LASAR's Stage 1 once, as MiniOneRec's SFT: their demo budgets must agree on it."""
    from methods.minionerec import MiniOneRec

    ctx = FitContext(workdir=Path("/tmp"), seed=0)
    mini = MiniOneRec(MiniOneRec.Config(**MiniOneRec.demo_config)).sft_stage(toy_data, ctx).id
    assert LASAR(LASAR.Config(**LASAR.demo_config)).sft_stage(toy_data, ctx).id == mini
