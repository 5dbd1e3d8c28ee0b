"""LASAR: each test fails if the component it names is removed or broken."""
from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.method import FitContext
from methods.lasar.method import LASAR, LatentPrompt, align_distance, bidir_kl, reinforce_loss
from methods.lasar.segment import boundaries, segment_texts, sentences
from bench.generative.teacher import ItemFacts, Teacher, TeacherConfig, metadata_cot

SMOKE = {**LASAR.smoke_config, "max_steps": 4}


def built_lasar(data, workdir, **config):
    """A built (untrained) LASAR on ``data`` with the reasoning markers (as after Stage 1) and a
    non-trivial policy head."""
    torch.manual_seed(0)
    m = LASAR(LASAR.Config(**{**SMOKE, **config}))
    m._build(data, FitContext(workdir=workdir, progress=False, log=lambda *_: None))
    m._adopt(m.with_reasoning_vocabulary(m.bb, data, 0, words=False), data, keep_modules=True)
    m.bb.model.eval()
    with torch.no_grad():
        for p in m.modules["policy_head"].parameters():
            p.normal_(0, 1.0)
    return m


@pytest.fixture()
def lasar(toy_env, toy_data, tmp_path):
    return built_lasar(toy_data, tmp_path)


def _histories(data, n=6):
    return [list(h) for h in data.split("test").histories[:n]]


def _no_cache_prefix(m, model, history, steps):
    """The latent loop recomputed from scratch at every step (no KV cache, one sample), as Eq. 3 says: the
    prompt's embeddings, then h_0 .. h_{N-1} as inputs (each the previous position's final hidden state;
    rescaled with ``latent_input: rescaled``), then h_N (``feed_last``), then <lat_e>. Returns the input
    embeddings, the last logits and h_1 .. h_N."""
    emb = model.get_input_embeddings()
    ids = torch.tensor(m.reasoning_prompt(m.enc, history), device=emb.weight.device)
    x = emb(ids)
    scale = emb.weight.norm(dim=-1).mean()
    hiddens = []
    out = model(inputs_embeds=x[None], output_hidden_states=True)
    for t in range(steps + int(m.config.feed_last)):
        h = out.hidden_states[-1][0, -1]
        if t:
            hiddens.append(h)
        if m.config.latent_input == "rescaled":
            h = h * scale / h.norm()
        x = torch.cat([x, h[None]])
        out = model(inputs_embeds=x[None], output_hidden_states=True)
    if not m.config.feed_last:
        hiddens.append(out.hidden_states[-1][0, -1])
    x = torch.cat([x, emb(torch.tensor([m._tok("<lat_e>")], device=ids.device))])
    out = model(inputs_embeds=x[None])
    return x, out.logits[0, -1], hiddens


@pytest.mark.parametrize("variant", [{}, {"feed_last": False}, {"latent_input": "rescaled"}])
def test_cached_latent_loop_equals_the_uncached_computation(variant, toy_env, toy_data, tmp_path):
    m = built_lasar(toy_data, tmp_path, **variant)
    model = m.bb.model
    h = _histories(toy_data, 1)
    with torch.no_grad():
        for n in (1, 3):
            state, aux = m.latent_prefix(model, h, "test", steps=torch.tensor([n]))
            _, logits, hid = _no_cache_prefix(m, model, h[0], n)
            torch.testing.assert_close(state.last_logits[0], logits, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(aux["hiddens"][0], torch.stack(hid), atol=1e-4, rtol=1e-4)


def test_variable_n_batch_equals_each_sample_alone(lasar, toy_data):
    from bench.generative.decoding import constrained_beam_search

    m, model = lasar, lasar.bb.model
    hist = _histories(toy_data, 4)
    steps = torch.tensor([1, 4, 2, 3])
    with torch.no_grad():
        state, aux = m.latent_prefix(model, hist, "test", steps=steps)
        batch = constrained_beam_search(model, m.trie, prefix=state, beam_width=10)
        for i, h in enumerate(hist):
            s1, a1 = m.latent_prefix(model, [h], "test", steps=steps[i:i + 1])
            one = constrained_beam_search(model, m.trie, prefix=s1, beam_width=10)
            assert batch.items[i].tolist() == one.items[0].tolist()
            torch.testing.assert_close(batch.scores[i], one.scores[0], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(aux["h_n"][i], a1["h_n"][0], atol=1e-4, rtol=1e-4)


def test_terminal_state_is_each_rows_own_step_n_not_n_max(lasar, toy_data):
    m, model = lasar, lasar.bb.model
    steps = torch.tensor([1, 3, 2])
    with torch.no_grad():
        _, aux = m.latent_prefix(model, _histories(toy_data, 3), "test", steps=steps)
    assert aux["hiddens"].shape[1] == 3
    for i, n in enumerate(steps.tolist()):
        torch.testing.assert_close(aux["h_n"][i], aux["hiddens"][i, n - 1])
        _, full = m.latent_prefix(model, _histories(toy_data, 3), "test", steps=torch.tensor([3, 3, 3]))
    assert not torch.allclose(aux["h_n"][0], full["h_n"][0])  # step 3's state differs from step 1's
    torch.testing.assert_close(aux["h_n"][1], full["h_n"][1])


def test_decoder_after_the_latent_loop_equals_exhaustive_uncached_scoring(lasar, toy_data):
    from bench.generative.decoding import constrained_beam_search

    m, model = lasar, lasar.bb.model
    h = _histories(toy_data, 1)
    n = 2
    with torch.no_grad():
        state, _ = m.latent_prefix(model, h, "test", steps=torch.tensor([n]))
        res = constrained_beam_search(model, m.trie, prefix=state, beam_width=m.n_items)
        x, _, _ = _no_cache_prefix(m, model, h[0], n)
        emb = model.get_input_embeddings()
        sid_tok = m.enc.item_ids  # [n_items, L] token ids
        scores = []
        for item in range(m.n_items):
            toks = torch.tensor(sid_tok[item], device=m.device)
            logits = model(inputs_embeds=torch.cat([x, emb(toks[:-1])])[None]).logits[0, len(x) - 1:]
            scores.append(torch.log_softmax(logits.float(), -1).gather(1, toks[:, None]).sum())
        scores = torch.stack(scores)
    best = torch.argsort(scores, descending=True)[:5]
    assert res.items[0, :5].tolist() == best.tolist()
    torch.testing.assert_close(res.scores[0, :5], scores[best], atol=1e-3, rtol=1e-4)


def test_gradients_reach_the_head_and_every_latent_step(toy_env, toy_data, tmp_path):
    m = built_lasar(toy_data, tmp_path, stage2_replay=1.0)  # the replay option on: its term too
    model = m.bb.model
    model.train()
    st = m._segments(toy_data, log=lambda *_: None)
    st["labels"] = np.full(len(st["cots"]), 3)
    st["anchors"] = torch.randn(len(st["cots"]), m.config.max_steps, model.config.hidden_size).half()
    captured = {}
    real = m.latent_prefix

    def spy(*a, **k):
        state, aux = real(*a, **k)
        aux["hiddens"].retain_grad()
        captured.update(aux)
        return state, aux

    m.latent_prefix = spy
    m.init_replay(toy_data, 0)
    m.init_stage2_pool(toy_data)
    with torch.no_grad():  # argmax N = 3 for every row
        last = m.modules["policy_head"][2]
        last.weight.mul_(0.01)
        last.bias.copy_(torch.tensor([0.0, 0.0, 5.0, 0.0]))
    out = m.stage2_loss(model, [0, 1, 2, 3])
    out["loss"].backward()
    assert set(out) >= {"ce", "align", "policy", "replay"}
    head = [p.grad for p in m.modules["policy_head"].parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in head)
    g = captured["hiddens"].grad
    assert g.shape[1] == 3 and all(g[:, t].abs().sum() > 0 for t in range(3))
    assert model.get_input_embeddings().weight.grad.abs().sum() > 0


def test_bidirectional_kl_is_symmetric_and_zero_for_equal_inputs():
    a, b = torch.randn(5, 16), torch.randn(5, 16)
    torch.testing.assert_close(bidir_kl(a, b), bidir_kl(b, a))
    assert torch.all(bidir_kl(a, b) > 0)
    torch.testing.assert_close(bidir_kl(a, a), torch.zeros(5), atol=1e-7, rtol=0)
    # hand computed: softmax([0, ln 3]) = [1/4, 3/4] vs uniform
    x, y = torch.tensor([[0.0, np.log(3)]]), torch.zeros(1, 2)
    p, q = np.array([0.25, 0.75]), np.array([0.5, 0.5])
    want = 0.5 * ((p * np.log(p / q)).sum() + (q * np.log(q / p)).sum())
    assert bidir_kl(x, y).item() == pytest.approx(want, rel=1e-5)
    for kind in ("cosine", "mse"):
        torch.testing.assert_close(align_distance(kind, a, a), torch.zeros(5), atol=1e-6, rtol=0)


def test_reinforce_lowers_a_below_baseline_step_count_and_raises_an_above_one():
    for reward, sign in ((0.0, -1), (1.0, +1)):
        logits = torch.zeros(1, 4, requires_grad=True)
        steps = torch.tensor([2])
        loss, _ = reinforce_loss(logits, steps, torch.tensor([reward]), baseline=0.5, step_penalty=0.0,
                                 entropy_coef=0.0)
        loss.backward()
        new = logits - 0.5 * logits.grad
        p_old, p_new = torch.softmax(logits, -1)[0, 1], torch.softmax(new, -1)[0, 1]
        assert (p_new - p_old).item() * sign > 0
    # the step penalty alone makes a longer chain less likely at equal reward
    logits = torch.zeros(1, 4, requires_grad=True)
    loss, _ = reinforce_loss(logits, torch.tensor([4]), torch.tensor([0.5]), 0.5, step_penalty=0.1, entropy_coef=0.0)
    loss.backward()
    assert torch.softmax(logits - logits.grad, -1)[0, 3] < 0.25


def test_rl_terms_use_the_sampled_n_for_policy_and_reference(lasar, toy_data):
    m, model = lasar, lasar.bb.model
    st = m._segments(toy_data, log=lambda *_: None)
    st["labels"] = np.full(len(st["cots"]), 2)
    st["anchors"] = torch.randn(len(st["cots"]), m.config.max_steps, model.config.hidden_size).half()
    import random

    prompts = [p for p, _ in m.rl_prompts(toy_data, random.Random(0), 4)]
    assert all(isinstance(p, LatentPrompt) for p in prompts)
    state = m.rl_init()
    with torch.no_grad():
        _, rollout_aux = m.prefix(model, prompts, "rollout", state=state)
    sampled = rollout_aux["steps"].tolist()
    assert all(1 <= n <= m.config.max_steps for n in sampled) and state["steps"] == sampled
    tokens = torch.tensor([m.enc.answer(0)] * 4).view(4, 1, -1)
    _, aux = m.completion_logprobs(model, prompts, tokens, rollout_aux)
    assert aux["steps"].tolist() == sampled  # log-probs reuse the rollout's N
    _, fresh = m.completion_logprobs(model, prompts, tokens)  # without it: the head's argmax
    assert fresh["steps"].tolist() == (fresh["logits"].argmax(-1) + 1).tolist()


def test_metadata_teacher_is_deterministic_and_never_leaks_the_target(toy_data):
    facts = ItemFacts(toy_data)
    tr = toy_data.train_samples()
    seen_depths = set()
    for h, t in zip(tr.histories, tr.targets):
        a, b = metadata_cot(facts, list(h), int(t)), metadata_cot(facts, list(h), int(t))
        assert a == b
        if facts.title[t]:  # as a whole name ("toy item 1" is inside "toy item 16")
            assert not re.search(rf"(?<!\w){re.escape(facts.title[t])}(?!\w)", a), (facts.title[t], a)
        assert toy_data.sid(int(t)) not in a
        seen_depths.add(len(sentences(a)))
    assert len(seen_depths) > 1  # depth varies with the history
    # a history item with the target's own title is not named either
    t = int(tr.targets[0])
    twin = next(i for i in range(toy_data.n_items) if i != t)
    facts.title[twin] = facts.title[t] = "Shared Title"
    assert "Shared Title" not in metadata_cot(facts, [twin, twin, twin, twin], t)


def test_teacher_depth_grows_with_history_length_and_diversity(toy_data):
    facts = ItemFacts(toy_data)
    t = 0
    short = metadata_cot(facts, [1, 2], t)
    long = metadata_cot(facts, list(range(1, min(12, toy_data.n_items))), t)
    assert len(sentences(long)) > len(sentences(short))


class _Chat(BaseHTTPRequestHandler):
    calls: list = []
    fail_first = True

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Chat.calls.append(body)
        if _Chat.fail_first:
            _Chat.fail_first = False
            self.send_response(429)
            self.end_headers()
            return
        text = f"Evidence. Preference for {len(body['messages'][1]['content'])} chars."
        data = json.dumps({"choices": [{"message": {"content": text}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


def test_openai_teacher_against_a_local_server_retries_and_resumes(toy_data, tmp_path):
    server = HTTPServer(("127.0.0.1", 0), _Chat)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _Chat.calls, _Chat.fail_first = [], True
        cfg = TeacherConfig(kind="openai", base_url=f"http://127.0.0.1:{server.server_port}/v1", model="m",
                            requests_per_minute=6000, max_retries=2)
        tr = toy_data.train_samples(3, seed=0)
        samples = [(int(u), list(h), int(t)) for u, h, t in zip(tr.users, tr.histories, tr.targets)]
        cots = Teacher(cfg, toy_data, tmp_path).cots(samples)
        assert len(cots) == 3 and all(c.startswith("Evidence.") for c in cots)
        assert len(_Chat.calls) == 4  # one 429, retried
        assert _Chat.calls[0]["model"] == "m" and _Chat.calls[0]["messages"][0]["role"] == "system"
        target_title = ItemFacts(toy_data).title[samples[0][2]]
        if target_title:
            assert target_title not in json.dumps(_Chat.calls[1]["messages"])  # never names the next item
        assert Teacher(cfg, toy_data, tmp_path).cots(samples) == cots  # cached: no new request
        assert len(_Chat.calls) == 4
    finally:
        server.shutdown()


def test_file_teacher_reads_jsonl_and_names_missing_samples(toy_data, tmp_path):
    from bench.loaders import DataError

    tr = toy_data.train_samples(2, seed=0)
    samples = [(int(u), list(h), int(t)) for u, h, t in zip(tr.users, tr.histories, tr.targets)]
    path = tmp_path / "cot.jsonl"
    u, _, t = samples[0]
    path.write_text(json.dumps({"user": toy_data.user_ids[u], "target": toy_data.item_ids[t], "cot": "Given."}) + "\n")
    teacher = Teacher(TeacherConfig(kind="file", path=str(path)), toy_data, tmp_path / "c")
    assert teacher.cots(samples[:1]) == ["Given."]
    with pytest.raises(DataError, match="cot.jsonl.*no CoT for 1"):
        teacher.cots(samples)


def test_segmentation_splits_where_similarity_drops():
    assert sentences("One thing. Two things! Three? end") == ["One thing.", "Two things!", "Three? end"]
    e = np.array([[1, 0], [0.99, 0.141], [0, 1], [0.1, 0.995]], dtype=np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    assert boundaries(e, 0.5) == [1]
    assert segment_texts(["a", "b", "c", "d"], [1]) == ["a b", "c d"]
    assert segment_texts(["a"], []) == ["a"]


def test_ablations_share_stage1_and_bad_settings_are_refused(toy_data, tmp_path):
    ctx = FitContext(workdir=tmp_path)
    base = LASAR(LASAR.Config(**SMOKE)).sft_stage(toy_data, ctx).id
    for change in ({"alignment": "mse"}, {"forced_steps": 2}, {"two_stage": False}, {"latent": False},
                   {"rl": {"reinforce": False}}, {"stage2": {"epochs": 3}}):
        assert LASAR(LASAR.Config(**{**SMOKE, **change})).sft_stage(toy_data, ctx).id == base, change
    assert LASAR(LASAR.Config(**{**SMOKE, "stage1_cot_samples": 5})).sft_stage(toy_data, ctx).id != base
    with pytest.raises(ValueError, match="forced_steps=9 exceeds max_steps=8"):
        LASAR.Config(forced_steps=9)


def test_force_n_is_an_inference_setting_sharing_the_stage2_entry(toy_data):
    from bench.generative.stages import StageCache

    ctx = FitContext(workdir=Path("/tmp"), seed=0)
    keys = {StageCache("lasar-stage2", LASAR(LASAR.Config(**{**SMOKE, "forced_steps": n}))._stage2_key(
        toy_data, ctx, "sft-x")).id for n in (None, 1, 2, 4)}
    assert len(keys) == 1, "Force N rows must reuse the adaptive Stage 2"
    assert LASAR(LASAR.Config(**{**SMOKE, "alignment": "mse"}))._stage2_key(toy_data, ctx, "sft-x") != \
        LASAR(LASAR.Config(**SMOKE))._stage2_key(toy_data, ctx, "sft-x")
    m = LASAR(LASAR.Config(**{**SMOKE, "forced_steps": 3}))
    logits = torch.tensor([[5.0, 0, 0, 0], [0, 0, 0, 5.0]])
    assert m.steps_for(logits, "test").tolist() == [3, 3]  # inference: forced
    assert m.steps_for(logits, "rollout").tolist() == [3, 3]
    assert m.steps_for(logits, "stage-2").tolist() == [1, 4]  # Stage 2: the head's N


def test_lasar_end_to_end_records_steps_and_reloads(toy_env, tmp_path):
    from bench.config import build_spec
    from bench.reevaluate import reevaluate
    from bench.runner import run

    spec = build_spec("lasar", "toy", method_config=SMOKE, sets=["eval.max_users=12"])
    r = run(spec, tmp_path / "runs", progress=False, echo=False)
    t = r.training.model_dump()
    assert t["stage2"]["history"] and t["rl"]["steps_sampled"]
    assert {"stage1", "initial_backbone"} <= set(t["anchor_signal"])
    v = t["vocabulary"]  # the markers only: the CoT words live in the anchors' reader, not in the ranked model
    assert v["after"] == v["stage1"] + 2 == r.method_facts["vocab_size"]
    by = r.evaluation["by_stat"]["latent_steps"]
    assert 1 <= by["mean"] <= SMOKE["max_steps"] and sum(v["users"] for v in by["by_value"].values()) == 12
    per_user = json.loads((tmp_path / "runs" / r.run_id / "per_user.json").read_text())
    assert len(per_user["stats"]["latent_steps"]) == 12
    again = reevaluate(tmp_path / "runs" / r.run_id, ["eval.batch_size=5"], out=tmp_path / "re", progress=False,
                       echo=False)
    assert again.metrics == r.metrics
    assert Path(tmp_path / "runs" / r.run_id / "model" / "extra_modules.pt").is_file()


def test_bench_latency_times_saved_models_side_by_side(toy_env, tmp_path):
    from bench.latency import bench_latency
    from bench.config import build_spec
    from bench.runner import run

    runs = {}
    for name, cfg in (("minionerec", None), ("lasar", SMOKE)):
        from bench.registry import get_method

        spec = build_spec(name, "toy", method_config=cfg or get_method(name).smoke_config, sets=["eval.max_users=4"])
        runs[name] = tmp_path / "runs" / run(spec, tmp_path / "runs", progress=False, echo=False).run_id / "model"
    res = bench_latency([f"minionerec={runs['minionerec']}", f"lasar={runs['lasar']}"], dataset="toy", users=8,
                        batch_size=4, repeats=2, out=str(tmp_path / "lat.json"), log=lambda *_: None)
    labels = list(res["seconds_per_sample"])
    assert res["ratio_to_first"][labels[0]] == 1.0 and res["ratio_to_first"][labels[1]] > 0
    assert res["ratio_to_first_min"][labels[0]] == 1.0 and res["min_seconds_per_sample"][labels[1]] > 0
    assert all(len(v) == 2 for v in res["all_repeats"].values())
    assert list(res["stats"]) == [labels[1]]  # only LASAR reports latent steps
    # each timed model named (its run id) with the paper's Table-4 row it compares with (the site shows both)
    assert [(r["label"], r["model"], r["paper_row"]) for r in res["rows"]] == [
        (labels[0], runs["minionerec"].parent.name, "MiniOneRec"), (labels[1], runs["lasar"].parent.name, "LASAR")]
    assert json.loads((tmp_path / "lat.json").read_text())["setup"]["users"] == 8


def test_paired_significance_on_hand_made_ranks(tmp_path):
    from bench.significance import paired_test, per_user_gains

    assert per_user_gains(np.array([1, 3, 0, 11]), "NDCG@10").tolist() == pytest.approx([1.0, 0.5, 0.0, 0.0])
    assert per_user_gains(np.array([1, 3, 0, 11]), "HR@10").tolist() == [1.0, 1.0, 0.0, 0.0]
    users, targets = list(range(40)), [0] * 40
    for name, ranks in (("a", [1] * 20 + [0] * 20), ("b", [3] * 20 + [0] * 20), ("c", [1] * 40)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "per_user.json").write_text(json.dumps({"users": users, "targets": targets, "ranks": ranks}))
    r = paired_test(tmp_path / "a", tmp_path / "b")
    assert r["mean_difference"] == pytest.approx(0.25) and r["a_better_users"] == 20 and r["b_better_users"] == 0
    assert r["t_pvalue"] < 1e-6 and r["ci95"][0] > 0
    assert paired_test(tmp_path / "a", tmp_path / "a")["t_pvalue"] == 1.0
    (tmp_path / "c" / "per_user.json").write_text(json.dumps({"users": users[::-1], "targets": targets, "ranks": [1] * 40}))
    with pytest.raises(ValueError, match="same users"):
        paired_test(tmp_path / "a", tmp_path / "c")


def test_stage2_extra_samples_train_the_answer_only(toy_env, toy_data, tmp_path):
    m = built_lasar(toy_data, tmp_path, stage2_extra_samples=16)
    model = m.bb.model
    st = m._segments(toy_data, log=lambda *_: None)
    st["anchors"] = torch.randn(len(st["cots"]), m.config.max_steps, model.config.hidden_size).half()
    m.init_replay(toy_data, 0)
    m.init_stage2_pool(toy_data)
    n_cot = len(st["cots"])
    assert len(st["stage2"]) == n_cot + 16
    extra_only = m.stage2_loss(model, [n_cot, n_cot + 1])
    assert "ce" in extra_only and "align" not in extra_only and "policy" not in extra_only
    mixed = m.stage2_loss(model, [0, n_cot])
    assert {"ce", "align", "policy"} <= set(mixed)


def test_bench_exact_compares_the_beam_with_scores_of_every_item(toy_env, tmp_path):
    import torch

    from bench.config import build_spec
    from bench.data import prepare
    from bench.exact import bench_exact
    from bench.generative.decoding import exhaustive_scores
    from bench.latency import load_saved
    from bench.metrics import fixed_subset, per_user_gains
    from bench.registry import get_method
    from bench.runner import run

    spec = build_spec("minionerec", "toy", method_config=get_method("minionerec").smoke_config,
                      sets=["eval.max_users=4"])
    model = f"minionerec={tmp_path / 'runs' / run(spec, tmp_path / 'runs', progress=False, echo=False).run_id / 'model'}"
    res = bench_exact([model], dataset="toy", users=10, k=3, beam_width=3, out=str(tmp_path / "exact.json"),
                      log=lambda *_: None)
    got = res["models"][model]
    # the exact side, computed independently: teacher-forced log-probs of every item's SID after the prompt
    data = prepare("toy", progress=False, log=lambda *_: None)
    m = load_saved(model, data, log=lambda *_: None)
    test = data.split("test")
    full = []
    for i in fixed_subset(len(test), 10):
        scores = exhaustive_scores(m.bb.model, torch.tensor(data.codes), m.bb.sid_token_ids, m.prompt(test.histories[i]))
        full.append(torch.argsort(scores, descending=True).tolist().index(int(test.targets[i])) + 1)
    assert got["per_user"]["exact_target_rank"] == full  # the target's rank among all items
    assert got["metrics"]["NDCG@3"]["exact"] == pytest.approx(per_user_gains(np.array(full), "NDCG@3").mean())
    assert got["users"] == 10 and 0 <= got["mean_overlap_top_k"] <= 1 and got["top1_logprob_gap"]["mean"] >= 0
    assert got["identical_top_k"] <= got["same_set_top_k"]
    # a beam as wide as the catalogue is exact
    wide = bench_exact([model], dataset="toy", users=10, k=3, beam_width=data.n_items, log=lambda *_: None)
    assert wide["models"][model]["identical_top_k"] == 1.0
    assert wide["models"][model]["metrics"]["NDCG@3"]["difference"] == 0.0
    assert json.loads((tmp_path / "exact.json").read_text())["setup"]["k"] == 3
