"""LASAR as the paper specifies (issue 25): Stage 1 is MiniOneRec's SFT, the RL terms are weighted as Sec. 2.4
says, and each part of the latent loop, Stage 2 and RL has a test that fails when that part breaks. Every test
here was run once against the broken variant its docstring names (and failed)."""
from __future__ import annotations

import copy
import json
import random

import numpy as np
import pytest
import torch

from bench.generative.grpo import GRPOLoss, Rollout, beam_rollout, prefix_completion_logprobs
from bench.method import FitContext
from methods.lasar.method import LASAR, LatentPrompt, bidir_kl, reinforce_loss
from tests.test_lasar import SMOKE, _histories, built_lasar


@pytest.fixture()
def m(toy_env, toy_data, tmp_path):
    return built_lasar(toy_data, tmp_path)


def _with_anchors(m, data, seed: int = 0) -> dict:
    """The CoT state with random anchors and every label 3 (tests overwrite what they need)."""
    st = m._segments(data, log=lambda *_: None)
    g = torch.Generator().manual_seed(seed)
    st["labels"] = np.full(len(st["cots"]), 3)
    st["anchors"] = torch.randn(len(st["cots"]), m.config.max_steps, m.bb.model.config.hidden_size,
                                generator=g).half()
    return st


def _set_head(m, bias, scale: float = 0.0):
    """The head's output = ``bias`` (+ ``scale`` x its old last layer): argmax and sampling under control."""
    last = m.modules["policy_head"][2]
    with torch.no_grad():
        last.weight.mul_(scale)
        last.bias.copy_(torch.tensor(bias, dtype=last.bias.dtype))


def _rollout(prompts, rewards, aux) -> Rollout:
    r = torch.tensor(rewards, dtype=torch.float32)
    B, G = r.shape
    return Rollout(prompts, torch.zeros(B, dtype=torch.long), torch.zeros(B, G, dtype=torch.long),
                   torch.zeros(B, G, 1, dtype=torch.long), torch.ones(B, G, dtype=torch.bool), r, torch.zeros(B, G),
                   aux=aux)


# ---------------------------------------------------------------- Stage 1 is MiniOneRec's SFT

def test_stage1_is_minionerecs_sft_one_entry_and_the_stage1_only_row_equals_it(toy_env, tmp_path):
    """Broken variant: LASAR's Stage-1 build keeps its reasoning markers (or the CoT words, or the text pass):
    the entry's key differs, LASAR trains its own Stage 1 and the rows differ."""
    from bench.config import build_spec
    from bench.registry import get_method
    from bench.runner import run

    mini_cfg = {**get_method("minionerec").smoke_config, "rl": {"enabled": False}}
    lasar_cfg = {**SMOKE, "latent": False, "rl": {"enabled": False}}
    mini = run(build_spec("minionerec", "toy", method_config=mini_cfg, sets=["eval.max_users=20"]),
               tmp_path / "runs", progress=False, echo=False)
    lasar = run(build_spec("lasar", "toy", method_config=lasar_cfg, sets=["eval.max_users=20"]),
                tmp_path / "runs", progress=False, echo=False)
    s_mini, s_lasar = mini.training.model_extra["sft"], lasar.training.model_extra["sft"]
    assert s_lasar["stage"] == s_mini["stage"] and s_lasar.get("reused") is True
    assert lasar.metrics == mini.metrics
    ranks = [json.loads((tmp_path / "runs" / r.run_id / "per_user.json").read_text())["ranks"] for r in (mini, lasar)]
    assert ranks[0] == ranks[1]
    # the text pass is its own Stage 1 (an ablation row), as is any other Stage-1 setting
    ctx = FitContext(workdir=tmp_path, seed=0)
    from bench.data import prepare

    data = prepare("toy", progress=False, log=lambda *_: None)
    base = LASAR(LASAR.Config(**SMOKE)).sft_stage(data, ctx).id
    assert LASAR(LASAR.Config(**{**SMOKE, "stage1_cot_samples": 8})).sft_stage(data, ctx).id != base


def test_reasoning_vocabulary_joins_after_stage1_without_moving_a_token(toy_env, toy_data, tmp_path):
    """Broken variants: the extension renumbers the SID tokens, changes the trained rows, or leaves the CoT
    words unknown (anchors would read ``<unk>``)."""
    torch.manual_seed(0)
    m = LASAR(LASAR.Config(**SMOKE))
    m._build(toy_data, FitContext(workdir=tmp_path, progress=False, log=lambda *_: None))
    before_vocab = m.bb.tokenizer.get_vocab()
    assert "<lat_s>" not in before_vocab  # Stage 1 is built as MiniOneRec's
    w = m.bb.model.get_input_embeddings().weight.detach().clone()
    sids = m.bb.sid_token_ids.clone()
    bb = m.with_reasoning_vocabulary(m.bb, toy_data, 0)
    tok = bb.tokenizer
    assert all(tok.convert_tokens_to_ids(t) == i for t, i in before_vocab.items())
    assert torch.equal(bb.model.get_input_embeddings().weight[:len(w)], w)
    assert len(tok) == bb.model.get_input_embeddings().weight.shape[0] > len(w)
    m._adopt(bb, toy_data, keep_modules=True)
    assert torch.equal(m.bb.sid_token_ids, sids)
    cot = m.cot_state(toy_data)["cots"][0]
    ids = m.enc.text(cot)
    assert ids and tok.unk_token_id not in ids
    assert len(tok(["<lat_s>"], is_split_into_words=True)["input_ids"]) == 1
    # LASAR's own model gets the two markers only (its output softmax stays Stage 1's size plus 2); the anchors'
    # reader is a copy with the CoT words, the trained model's weights in its old rows
    m2 = LASAR(LASAR.Config(**SMOKE))
    m2._build(toy_data, FitContext(workdir=tmp_path / "m2", progress=False, log=lambda *_: None))
    markers = m2.with_reasoning_vocabulary(m2.bb, toy_data, 0, words=False)
    assert len(markers.tokenizer) == len(before_vocab) + 2
    reader, enc = m2.text_reader(markers, toy_data, 0)
    assert reader is not markers.model and enc.tok.unk_token_id not in enc.text(cot)
    assert torch.equal(reader.get_input_embeddings().weight[:len(markers.tokenizer)],
                       markers.model.get_input_embeddings().weight)
    assert markers.model.get_input_embeddings().weight.shape[0] == len(before_vocab) + 2  # the copy grew, not it
    # a backbone that already has them (the text-pass Stage 1) is kept as is
    tp = LASAR(LASAR.Config(**{**SMOKE, "stage1_cot_samples": 8}))
    tp._build(toy_data, FitContext(workdir=tmp_path / "tp", progress=False, log=lambda *_: None))
    assert tp.with_reasoning_vocabulary(tp.bb, toy_data, 0) is tp.bb


# ---------------------------------------------------------------- the latent loop

def test_the_answer_loss_reaches_h0_through_the_latent_feedback(m, toy_data):
    """Broken variant: a latent step's input is ``h.detach()`` (the feedback carries no gradient): h_0, which
    reaches the answer only as the first latent input, gets none."""
    model = m.bb.model
    model.train()
    hist = _histories(toy_data, 3)
    state, aux = m.latent_prefix(model, hist, "stage-2", grad=True, steps=torch.tensor([2, 3, 1]))
    aux["h0"].retain_grad()
    targets = toy_data.split("test").targets[:3]
    answer = torch.tensor([m.enc.answer(int(t)) for t in targets], device=m.device)
    (-prefix_completion_logprobs(model, state, answer.unsqueeze(1)).mean()).backward()
    assert aux["h0"].grad is not None and bool((aux["h0"].grad.abs().sum(-1) > 0).all())


def test_policy_head_is_the_papers_two_layer_tanh_mlp(m):
    """Broken variant: ReLU instead of tanh (or one layer)."""
    head = m.modules["policy_head"]
    d = m.bb.model.config.hidden_size
    assert [type(x) for x in head] == [torch.nn.Linear, torch.nn.Tanh, torch.nn.Linear]
    assert (head[0].in_features, head[0].out_features, head[2].out_features) == (d, d, m.config.max_steps)
    x = torch.randn(5, d, device=m.device) * 3
    want = torch.tanh(x @ head[0].weight.T + head[0].bias) @ head[2].weight.T + head[2].bias
    torch.testing.assert_close(head(x), want)


# ---------------------------------------------------------------- anchors and Stage 2

def test_anchors_are_the_hidden_state_at_each_segments_last_token(m, toy_data):
    """Broken variant: the anchor is taken at a segment's first token."""
    st = m._segments(toy_data, log=lambda *_: None)
    model, enc = m.text_reader(m.bb, toy_data, 0)  # the model that reads the CoT text (a copy with its words)
    i = next(j for j, s in enumerate(st["segments"]) if len(s) >= 2 and all(len(enc.text(x)) >= 2 for x in s))
    model.eval()
    anchors = m._encode_anchors(m.bb, toy_data, np.array([i]), 0)
    ids = list(m.reasoning_prompt(enc, st["samples"].histories[i]))
    with torch.no_grad():
        for k, seg in enumerate(st["segments"][i][:m.config.max_steps]):
            ids += enc.text(seg)[:m.config.max_cot_tokens]
            h = model(input_ids=torch.tensor([ids], device=m.device), output_hidden_states=True).hidden_states[-1][0, -1]
            torch.testing.assert_close(anchors[0, k].float(), h.float().cpu().half().float(), atol=2e-3, rtol=2e-3)
    assert anchors[0, len(st["segments"][i]):].abs().sum() == 0


def _stage2(m, data, idx, n: int):
    """Stage 2's loss on rows ``idx`` with the head's argmax N = ``n`` for every row."""
    m.init_replay(data, 0)
    m.init_stage2_pool(data)
    bias = [float(k) for k in range(m.config.max_steps)]  # distinct per N: a wrong label changes the CE
    bias[n - 1] = 10.0
    _set_head(m, bias)
    return m.stage2_loss(m.bb.model, idx)


def test_steps_past_a_samples_segment_count_contribute_no_alignment(m, toy_data):
    """Broken variant: ``valid_mask`` removed (the steps past a sample's segment count are aligned to the zero
    anchors of segments it does not have)."""
    st = _with_anchors(m, toy_data)
    idx = [0, 1, 2, 3]
    st["labels"][idx] = [1, 2, 1, 3]
    for i, lab in zip(idx, st["labels"][idx]):
        st["anchors"][i, lab:] = 0  # what _encode_anchors leaves past the last segment
    a = _stage2(m, toy_data, idx, n=4)["align"]
    for i, lab in zip(idx, st["labels"][idx]):
        st["anchors"][i, lab:] = torch.randn(m.config.max_steps - lab, st["anchors"].shape[-1]).half() * 5
    b = _stage2(m, toy_data, idx, n=4)["align"]
    torch.testing.assert_close(a, b)
    st["anchors"][0, 0] = torch.randn(st["anchors"].shape[-1]).half() * 5  # a step that counts does move it
    assert not torch.allclose(a, _stage2(m, toy_data, idx, n=4)["align"])


def test_head_cross_entropy_target_is_the_segment_count_minus_one(m, toy_data):
    """Broken variant: the head's label off by one (``labels`` instead of ``labels - 1``)."""
    st = _with_anchors(m, toy_data)
    idx = [0, 1, 2, 3]
    st["labels"][idx] = [1, 4, 2, 3]  # every N in 1..N_max
    captured = {}
    real = m.latent_prefix

    def spy(*a, **k):
        out = real(*a, **k)
        captured.update(out[1])
        return out

    m.latent_prefix = spy
    out = _stage2(m, toy_data, idx, n=2)
    want = torch.nn.functional.cross_entropy(captured["logits"].float(), torch.tensor([0, 3, 1, 2], device=m.device))
    torch.testing.assert_close(out["policy"], want)
    assert m._segments(toy_data)["labels"].max() <= m.config.max_steps


def test_mixed_one_stage_ablation_starts_stage2_from_the_initial_weights(toy_env, toy_data, tmp_path, monkeypatch):
    """Broken variant: ``two_stage: false`` keeps the Stage-1 weights (the mixed ablation would be two-stage)."""
    import methods.lasar.stage2 as stage2

    seen = {}
    monkeypatch.setattr(stage2, "train", lambda model, *a, **k: seen.update(
        w=copy.deepcopy(model.state_dict()), head=copy.deepcopy(m.modules["policy_head"].state_dict())) or {})
    ctx = FitContext(workdir=tmp_path, progress=False, log=lambda *_: None)
    valid = toy_data.split("valid")
    for two_stage in (False, True):
        seen.clear()
        m = built_lasar(toy_data, tmp_path, two_stage=two_stage)
        _with_anchors(m, toy_data)
        with torch.no_grad():  # what Stage 1 would have changed
            for p in m.bb.model.parameters():
                p.add_(0.25)
        stage1 = copy.deepcopy(m.bb.model.state_dict())
        m._train_stage2(toy_data, valid, ctx)
        init = m._initial_backbone(toy_data, ctx).model.state_dict()
        want = stage1 if two_stage else init
        assert all(torch.equal(seen["w"][k].cpu(), want[k].cpu()) for k in want), two_stage
    saved = torch.load(tmp_path / "backbone_init" / "extra_modules.pt", weights_only=True)["policy_head"]
    m = built_lasar(toy_data, tmp_path, two_stage=False)
    _with_anchors(m, toy_data)
    m._train_stage2(toy_data, valid, ctx)
    assert all(torch.equal(seen["head"][k].cpu(), saved[k].cpu()) for k in saved)  # the head starts from its initial draw too


# ---------------------------------------------------------------- RL

def _rl_setup(m, data, idx, steps, labels):
    st = _with_anchors(m, data)
    st["labels"][idx] = labels
    prompts = [LatentPrompt(st["samples"].histories[i], i) for i in idx]
    _, aux = m.latent_prefix(m.bb.model, prompts, "rollout", grad=True, steps=torch.tensor(steps))
    return st, prompts, aux


def test_terminal_kl_is_between_each_rows_own_h_n_and_its_last_segments_anchor(m, toy_data):
    """Broken variants: the KL against another anchor slot, on h_0, on step 1's state, or switched off."""
    idx = [0, 1, 2]
    st, prompts, aux = _rl_setup(m, toy_data, idx, steps=[3, 2, 4], labels=[2, 4, 1])
    h_n = torch.stack([aux["hiddens"][r, n - 1] for r, n in enumerate([3, 2, 4])])
    anchor = st["anchors"][idx, [1, 3, 0]].to(m.device)
    out = m.rl_extra_terms(m.bb.model, _rollout(prompts, [[1.0, 0.0]] * 3, aux), None, aux, m.rl_init())
    want = m.config.rl.terminal_kl * bidir_kl(h_n, anchor).mean()
    torch.testing.assert_close(out["terminal_kl"], want)
    # each row's last-segment anchor set to its own h_N: the term vanishes; on h_0 or step 1's state it would not
    with torch.no_grad():
        st["anchors"][idx, [1, 3, 0]] = h_n.detach().half().cpu()
    anchor = st["anchors"][idx, [1, 3, 0]].to(m.device).float()
    zero = m.rl_extra_terms(m.bb.model, _rollout(prompts, [[1.0, 0.0]] * 3, aux), None, aux, m.rl_init())
    floor = float(zero["terminal_kl"].detach()) / m.config.rl.terminal_kl
    for other in (aux["hiddens"][:, 0], aux["h0"]):
        assert float(bidir_kl(other, anchor).mean().detach()) > 20 * floor
    out["terminal_kl"].backward()  # it trains the model
    assert sum(float(p.grad.abs().sum()) for p in m.bb.model.parameters() if p.grad is not None) > 0
    # gamma_KL = 0 (the ablation) adds nothing
    off = LASAR(m.config.model_copy(update={"rl": m.config.rl.model_copy(update={"terminal_kl": 0.0})}))
    off.__dict__.update({k: v for k, v in m.__dict__.items() if k != "config"})
    assert "terminal_kl" not in off.rl_extra_terms(m.bb.model, _rollout(prompts, [[1.0, 0.0]] * 3, aux), None, aux,
                                                   off.rl_init())


def _reinforce_step(m, data, steps: int, reward: float, baseline: float):
    """One SGD step on the head through the RL terms for one prompt that drew ``steps``; returns P(steps)
    before and after."""
    _set_head(m, [0.0] * m.config.max_steps, scale=1.0)
    st, prompts, aux = _rl_setup(m, data, [0], steps=[steps], labels=[steps])
    head = m.modules["policy_head"]
    p0 = torch.softmax(aux["logits"].detach(), -1)[0, steps - 1]
    state = {**m.rl_init(), "baseline": baseline}
    out = m.rl_extra_terms(m.bb.model, _rollout(prompts, [[reward, reward]], aux), None, aux, state)
    head.zero_grad()
    out["reinforce"].backward()
    grads = [p.grad for p in head.parameters()]
    with torch.no_grad():
        for p in head.parameters():
            p.sub_(10.0 * p.grad)
        p1 = torch.softmax(head(aux["h0"].detach()), -1)[0, steps - 1]
    return float(p0), float(p1), grads, out, state


def test_reinforce_moves_the_head_toward_above_baseline_n_and_away_from_below(m, toy_data):
    """Broken variants: the reward negated in the RL terms; the head's logits detached in REINFORCE (no
    gradient reaches the head)."""
    p0, p1, grads, _, _ = _reinforce_step(m, toy_data, steps=2, reward=1.0, baseline=0.2)
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    assert p1 > p0
    p0, p1, _, _, _ = _reinforce_step(m, toy_data, steps=3, reward=0.0, baseline=0.2)
    assert p1 < p0


def test_reinforce_is_weighted_by_gamma_rf_with_eta_inside(m, toy_data):
    """Broken variant: ``reinforce_coef`` used as the entropy coefficient and REINFORCE added at weight 1 (the
    audit's finding)."""
    rl = m.config.rl
    assert (rl.reinforce_coef, rl.step_penalty) == (0.01, 5e-4)  # Table 7
    _set_head(m, [0.0, 0.5, 1.0, 0.2])  # a spread head: log pi(N) and H(pi) both far from 0
    _, prompts, aux = _rl_setup(m, toy_data, [0], steps=[2], labels=[2])
    value, _ = reinforce_loss(aux["logits"], aux["steps"], torch.tensor([1.0], device=m.device), 0.2, rl.step_penalty,
                              rl.entropy_coef)
    got = m.rl_extra_terms(m.bb.model, _rollout(prompts, [[1.0, 1.0]], aux), None, aux,
                           {**m.rl_init(), "baseline": 0.2})
    assert abs(float(value.detach() if hasattr(value, "detach") else value)) > 0.1
    torch.testing.assert_close(got["reinforce"], rl.reinforce_coef * value, atol=0, rtol=1e-5)
    # Eq. 6 by hand: uniform head over 4, N = 2, R 1, b 0.5, lambda 0.1, eta 0.2:
    # -(1 - 0.5 - 0.2) * ln(1/4) - 0.2 * ln 4 = 0.1 ln 4
    loss, ent = reinforce_loss(torch.zeros(1, 4), torch.tensor([2]), torch.tensor([1.0]), 0.5, 0.1, 0.2)
    assert loss.item() == pytest.approx(0.1 * np.log(4), rel=1e-6) and ent.item() == pytest.approx(np.log(4))


def test_entropy_bonus_raises_the_heads_entropy():
    """Broken variant: the entropy bonus's sign flipped."""
    logits = torch.tensor([[2.0, 0.5, 0.0, -1.0]], requires_grad=True)
    loss, ent = reinforce_loss(logits, torch.tensor([1]), torch.tensor([0.5]), 0.5, 0.0, 0.1)  # advantage 0
    loss.backward()
    after = torch.softmax((logits - 0.5 * logits.grad).detach(), -1)
    assert float(-(after * after.log()).sum()) > float(ent.detach())


def test_ema_baseline_updates_once_per_rollout(m, toy_data):
    """Broken variant: the EMA baseline never updated."""
    _, prompts, aux = _rl_setup(m, toy_data, [0, 1], steps=[2, 2], labels=[2, 2])
    state = m.rl_init()
    d = m.config.rl.baseline_decay
    r1 = _rollout(prompts, [[1.0, 0.0], [1.0, 1.0]], aux)  # group rewards 0.5 and 1.0
    m.rl_extra_terms(m.bb.model, r1, None, aux, state)
    assert state["baseline"] == pytest.approx((1 - d) * 0.75)
    m.rl_extra_terms(m.bb.model, r1, None, aux, state)  # the same rollout's next update: no second step
    assert state["baseline"] == pytest.approx((1 - d) * 0.75)
    m.rl_extra_terms(m.bb.model, _rollout(prompts, [[0.0, 0.0], [0.0, 0.0]], aux), None, aux, state)
    assert state["baseline"] == pytest.approx(d * (1 - d) * 0.75)


def test_rl_samples_n_from_the_head_and_every_pass_shares_it(m, toy_data):
    """Broken variants: argmax N in the rollout (REINFORCE would never explore); the reference or the policy
    pass recomputing N instead of the rollout's."""
    _set_head(m, [0.2, 0.0, 0.0, 0.0])  # argmax 1, nearly uniform
    _with_anchors(m, toy_data)
    prompts = [p for p, _ in m.rl_prompts(toy_data, random.Random(0), 16)]
    state = m.rl_init()
    calls = []
    real = m.latent_prefix

    def spy(model, *a, **k):
        out = real(model, *a, **k)
        calls.append((model, out[1]["steps"].tolist()))
        return out

    m.latent_prefix = spy
    ref = copy.deepcopy(m.bb.model).eval()
    loss = GRPOLoss(ref, m.config.rl.model_copy(update={"num_generations": 2}),
                    rollout=beam_rollout(m.trie, m.bb.pad_id,
                                         prefix_fn=lambda mm, p: m.prefix(mm, p, "rollout", state=state)),
                    logprobs=m.completion_logprobs,
                    extra_terms=lambda mm, r, logp, aux: m.rl_extra_terms(mm, r, logp, aux, state))
    batch = [(p, int(t)) for p, t in zip(prompts, m._cot_state["samples"].targets[[p.index for p in prompts]])]
    out = loss(m.bb.model, batch)
    sampled = calls[0][1]
    assert len(set(sampled)) > 1 and state["steps"] == sampled  # sampled, not the argmax (1 for every prompt)
    assert [c[0] for c in calls[1:]] == [ref, m.bb.model]
    assert all(c[1] == sampled for c in calls[1:])  # the reference and the policy pass re-score the same N
    assert "reinforce" in out and "terminal_kl" in out


# ---------------------------------------------------------------- RL model selection (every GRPO method)

def test_rl_keeps_its_best_validated_weights_step_zero_included(toy_env, tmp_path):
    """Broken variants: the last weights kept; the SFT weights (step 0) not competing."""
    from bench.generative.batches import PeriodBatches
    from bench.generative.training import TrainConfig, train

    model = torch.nn.Linear(2, 1)
    start = copy.deepcopy(model.state_dict())
    data = list(range(8))
    for scores, kept in (([0.5, 0.4, 0.3, 0.2], None), ([0.5, 0.9, 0.3, 0.2], 1)):
        model.load_state_dict(start)
        it = iter(scores)
        snap = {}

        def valid(mm):
            snap[len(snap)] = copy.deepcopy(mm.state_dict())
            return next(it)

        batches = PeriodBatches(len(data), 2, period=1, seed=0)
        assert batches.periods == 4
        facts = train(model, lambda mm, b: mm(torch.ones(len(b), 2)).sum(), data, lambda b: b,
                      TrainConfig(epochs=4, lr=0.1, batch_size=2, patience=4), workdir=tmp_path / f"w{kept}",
                      valid_fn=valid, progress=False, log=lambda *_: None, initial_score=0.6 if kept is None else 0.6 - 1,
                      batches=batches)
        want = start if kept is None else snap[kept]
        assert all(torch.equal(model.state_dict()[k], want[k]) for k in want)
        assert facts["best_epoch"] == (-1 if kept is None else kept)
        assert [r["step"] for r in facts["history"]] == [1, 2, 3, 4]
    seen = []
    for e in range(8):  # one pass = 4 periods: every example once per pass
        batches.set_epoch(e)
        seen += [i for b in batches for i in b]
    assert sorted(seen[:8]) == data and sorted(seen[8:]) == data and seen[:8] != seen[8:]


def test_grpo_records_its_validation_curve_and_the_step_it_kept(toy_env, tmp_path):
    from bench.config import build_spec
    from bench.registry import get_method
    from bench.runner import run

    cfg = copy.deepcopy(get_method("minionerec").smoke_config)
    cfg["rl"] = {**cfg["rl"], "valid_every": 1}
    r = run(build_spec("minionerec", "toy", method_config=cfg, sets=["eval.max_users=8"]), tmp_path, progress=False,
            echo=False)
    rl = r.training.model_extra["rl"]
    curve = rl["valid_curve"]
    key = [k for k in curve[0] if k != "step"][0]
    assert [c["step"] for c in curve] == [0, 1, 2]  # 8 prompts in batches of 4, validated every step
    best = max(range(len(curve)), key=lambda i: (curve[i][key], -i))
    assert rl["kept_step"] == curve[best]["step"] and rl["rl_improved"] == (best > 0)
    assert rl["kept"] == "best"


def test_rl_selection_settings_leave_committed_and_sft_only_run_ids_alone(toy_env):
    """Broken variants: the nested late settings not dropped (every committed MiniOneRec RL row would get a new
    id), or RL selection counted in an SFT-only row's id (it changes no number there)."""
    from bench.config import build_spec

    def rid(rl):
        return build_spec("minionerec", "toy", method_config={"rl": rl}).run_id()

    from bench.specs import without_late_settings

    dumped = without_late_settings("minionerec", {"rl": {"enabled": True, "keep": "last", "valid_every": None,
                                                        "lr": 5e-5}})
    assert dumped == {"rl": {"enabled": True, "lr": 5e-5}}
    assert rid({"keep": "last", "valid_every": None}) != rid({})  # RL on: the selection changes the row
    assert rid({"enabled": False, "keep": "last"}) == rid({"enabled": False}) == rid({"enabled": False,
                                                                                      "valid_every": 3})
