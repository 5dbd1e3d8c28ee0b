"""ReaRec (ERL, PRL): K = 0 is RecBole's SASRec scoring, the KV-cached reasoning steps equal the
uncached computation, both variants train through warm-up and past it, and every loss term is live."""
from __future__ import annotations

import pytest
import torch

from bench.method import FitContext
from bench.registry import REGISTRY

TINY = {"hidden_size": 16, "n_layers": 2, "n_heads": 2, "inner_size": 24, "batch_size": 64, "epochs": 3,
        "warmup_epochs": 1, "patience": 10}


pytestmark = pytest.mark.usefixtures("one_thread")


def _build(data, tmp_path, **cfg):
    cls = REGISTRY.get("rearec")
    m = cls(cls.Config(**{**TINY, **cfg}))
    (tmp_path / "w").mkdir(exist_ok=True)
    config, model, train = m._build(data, tmp_path / "w", 0)
    return m, config, model.eval(), train


def _batch(data, m, n=12):
    """RecBole's input layout (right padded) for n test users, in RecBole ids."""
    h = data.split("test").histories[:n]
    L = data.max_history
    seq = torch.zeros(n, L, dtype=torch.long)
    for r, x in enumerate(h):
        x = list(x)[-L:]
        seq[r, : len(x)] = torch.as_tensor(m.ours2rb[x])
    return seq, torch.tensor([min(len(x), L) for x in h])


def test_k0_is_recbole_sasrec_scoring(toy_data, tmp_path):
    from recbole.data.interaction import Interaction
    from recbole.model.sequential_recommender import SASRec

    m, config, rea, train = _build(toy_data, tmp_path, reason_steps=0)
    config["hidden_act"], config["initializer_range"] = "gelu", 0.02
    sas = SASRec(config, train.dataset).eval()
    ours = rea.state_dict()
    mapped = {"item_embedding.weight": ours["item_embedding.weight"],
              "position_embedding.weight": ours["position_embedding.weight"],
              "LayerNorm.weight": ours["LayerNorm.weight"], "LayerNorm.bias": ours["LayerNorm.bias"]}
    for i in range(TINY["n_layers"]):
        a, b = f"trm_encoder.layer.{i}.", f"layers.{i}."
        for theirs, mine in [("multi_head_attention.query", "query"), ("multi_head_attention.key", "key"),
                             ("multi_head_attention.value", "value"), ("multi_head_attention.dense", "dense"),
                             ("multi_head_attention.LayerNorm", "ln1"), ("feed_forward.dense_1", "ff1"),
                             ("feed_forward.dense_2", "ff2"), ("feed_forward.LayerNorm", "ln2")]:
            for p in ("weight", "bias"):
                mapped[f"{a}{theirs}.{p}"] = ours[f"{b}{mine}.{p}"]
    assert set(mapped) == set(sas.state_dict())
    sas.load_state_dict(mapped)
    seq, lens = _batch(toy_data, m)
    inter = Interaction({"item_id_list": seq, "item_length": lens})
    with torch.no_grad():
        want = sas.full_sort_predict(inter)
        got = rea.full_sort_predict(inter) * rea.tau
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()


@pytest.mark.parametrize("variant", ["erl", "prl"])
def test_kv_cached_reasoning_equals_the_uncached_computation(toy_data, tmp_path, variant):
    m, _, rea, _ = _build(toy_data, tmp_path, reason_steps=3, variant=variant)
    seq, lens = _batch(toy_data, m)
    with torch.no_grad():
        cached, uncached = rea.encode(seq, lens), rea.encode_uncached(seq, lens)
    assert cached.shape == (len(seq), 4, TINY["hidden_size"])
    assert torch.allclose(cached, uncached, atol=1e-5)
    # the steps are not copies of each other (the reasoning embedding and the cache matter)
    assert (cached[:, 1] - cached[:, 0]).abs().max() > 1e-3
    # scoring: ERL ranks by the mean of the K+1 outputs, PRL by the last
    with torch.no_grad():
        h = rea(seq, lens)
    assert torch.allclose(h, cached.mean(1) if variant == "erl" else cached[:, -1], atol=1e-6)


def test_training_windows_by_hand():
    from bench.packed import training_windows

    got = training_windows([[1, 2, 3, 4, 5, 6], [7], [8, 9]], max_history=3)
    # the first 4 items: targets 2, 3, 4 with their whole history; then 5 and 6, each with its last 3 items
    assert got == [([1, 2, 3, 4], 1), ([2, 3, 4, 5], 3), ([3, 4, 5, 6], 3), ([8, 9], 1)]


@pytest.mark.parametrize("variant", ["erl", "prl"])
def test_packed_windows_equal_each_prefix_alone(toy_data, tmp_path, variant):
    """The packed route over full-length training sequences == one sample per prefix (RecBole's samples:
    each target with its last max_history items): step outputs and every loss term (PRL's contrastive
    term with a noise-free view, so that both routes' views are defined alike)."""
    from bench.split import train_prefixes
    from bench.packed import packed_batch, training_windows

    m, _, rea, _ = _build(toy_data, tmp_path, reason_steps=2, variant=variant, noise_std=0.0)
    seqs = [list(s) for s in toy_data.train_sequences() if len(s) >= 2][:6]
    assert max(len(s) for s in seqs) > toy_data.max_history + 1, "needs users longer than one window"
    windows = training_windows(seqs, toy_data.max_history)
    seq, lens, first = packed_batch(windows, m.ours2rb)
    hist, tgt = [], []
    for s in seqs:
        for h, t in train_prefixes(s + [0, 0], toy_data.max_history):  # train_prefixes drops valid + test
            row = torch.zeros(toy_data.max_history, dtype=torch.long)
            row[:len(h)] = torch.as_tensor(m.ours2rb[h])
            hist.append(row), tgt.append(int(m.ours2rb[t]))
    lengths = torch.tensor([int((h > 0).sum()) for h in hist])
    with torch.no_grad():
        pos = torch.arange(seq.shape[1] - 1).unsqueeze(0)
        mask = (pos < (lens - 1).unsqueeze(1)) & (pos >= (first - 1).unsqueeze(1))
        packed, _ = rea.encode_packed(seq[:, :-1], lens - 1, mask)
        one = rea.encode(torch.stack(hist), lengths)
        assert mask.sum() == len(hist) == len(packed)
        assert torch.allclose(packed, one, atol=1e-5)
        rea.set_epoch(5)  # past warm-up: every term
        per_prefix = rea.loss_terms(torch.stack(hist), lengths, torch.tensor(tgt))
        together = rea.packed_terms(seq, lens, first)
    assert set(per_prefix) == set(together) == ({"ce", "kl"} if variant == "erl" else {"ce", "progressive",
                                                                                           "contrastive"})
    for k in per_prefix:
        if k != "contrastive":
            assert torch.allclose(per_prefix[k], together[k], atol=1e-5), k
    if variant == "prl":  # one window's prefixes are not each other's negatives; one per window: equal
        single = [(w, f) for w, f in windows if len(w) - f == 1]
        s1, l1, f1 = packed_batch(single, m.ours2rb)
        with torch.no_grad():
            a = rea.packed_terms(s1, l1, f1)["contrastive"]
            b = rea.loss_terms(*_prefix_batch(single, m, toy_data.max_history))["contrastive"]
        assert torch.allclose(a, b, atol=1e-5)


def _prefix_batch(single, m, max_history):
    rows, lens, tgt = [], [], []
    for w, _ in single:
        h = w[:-1][-max_history:]
        row = torch.zeros(max_history, dtype=torch.long)
        row[:len(h)] = torch.as_tensor(m.ours2rb[h])
        rows.append(row), lens.append(len(h)), tgt.append(int(m.ours2rb[w[-1]]))
    return torch.stack(rows), torch.tensor(lens), torch.tensor(tgt)


def test_loss_terms_switch_on_after_warmup(toy_data, tmp_path):
    for variant, late in [("erl", {"ce", "kl"}), ("prl", {"ce", "progressive", "contrastive"})]:
        m, _, rea, _ = _build(toy_data, tmp_path, reason_steps=2, variant=variant)
        seq, lens = _batch(toy_data, m)
        target = seq[:, 0].clone()
        rea.train()
        rea.set_epoch(0)
        early = rea.loss_terms(seq, lens, target)
        rea.set_epoch(1)
        after = rea.loss_terms(seq, lens, target)
        assert set(after) == late and "kl" not in early and "contrastive" not in early, (variant, early, after)
        total = sum(after.values())
        total.backward()
        assert rea.reason_embedding.weight.grad.abs().sum() > 0  # the reasoning steps are trained
        if variant == "erl":
            assert after["kl"] < 0  # the diversity term is subtracted


@pytest.mark.parametrize("variant,packed", [("erl", True), ("prl", True), ("erl", False), ("prl", False)])
def test_both_variants_train_through_warmup_and_past_it(toy_data, tmp_path, variant, packed):
    cls = REGISTRY.get("rearec")
    m = cls(cls.Config(**{**TINY, "variant": variant, "packed": packed}))
    facts = m.fit(toy_data, valid=toy_data.split("valid"), ctx=FitContext(workdir=tmp_path, progress=False))
    assert facts["epochs_run"] == 3 and all(h["loss"] == h["loss"] for h in facts["history"])  # no NaN
    recs = m.recommend(toy_data.split("test").histories[:5], k=10)
    assert recs.items.shape == (5, 10) and (recs.items >= 0).all()
    # the saved model reloads to the same ranking
    m.save(tmp_path)
    again = cls(m.config)
    again.load(tmp_path, toy_data)
    assert (again.recommend(toy_data.split("test").histories[:5], k=10).items == recs.items).all()


def test_bad_head_count_is_refused():
    cls = REGISTRY.get("rearec")
    with pytest.raises(ValueError, match="hidden_size 10 is not divisible by n_heads 4"):
        cls.Config(hidden_size=10, n_heads=4)


def test_the_demo_has_a_row_per_variant():
    from bench.demo import demo_suite

    rows = [(e.label, e.method_config) for e in demo_suite(["pop", "rearec"]).methods]
    assert [r[0] for r in rows] == ["ReaRec-ERL", "ReaRec-PRL", None]  # longest (demo_priority) first
    assert rows[0][1]["variant"] == "erl" and rows[1][1]["variant"] == "prl"
    assert rows[0][1]["epochs"] == rows[1][1]["epochs"] == REGISTRY.get("rearec").demo_config["epochs"]


def test_pairwise_kl_equals_the_pairwise_definition():
    """ERL's diversity term in closed form == the mean of KL(p_i || p_j) over ordered pairs i != j,
    summed pair by pair; and a hand case: two steps, p = (1/2, 1/2), q = (1/4, 3/4)."""
    import math

    import torch

    from methods.rearec import pairwise_kl

    logp = torch.log_softmax(torch.randn(5, 3, 7, dtype=torch.float64), -1)
    p = logp.exp()
    want = torch.stack([sum((p[b, i] * (logp[b, i] - logp[b, j])).sum() for i in range(3) for j in range(3) if i != j) / 6
                        for b in range(5)])
    assert torch.allclose(pairwise_kl(logp), want)
    two = torch.tensor([[[0.5, 0.5], [0.25, 0.75]]], dtype=torch.float64).log()
    kl_pq = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    kl_qp = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert abs(float(pairwise_kl(two)[0]) - (kl_pq + kl_qp) / 2) < 1e-12


def test_pairwise_kl_pushes_only_the_first_distribution_of_each_pair():
    """The gradient equals that of the pair-by-pair sum of KL(p_i || sg(p_j)) (the released code's
    ``F.kl_div`` on detached log-probabilities), not that of the fully differentiated KL: without the
    stop-gradient the subtracted term is unbounded (ERL diverged on Beauty)."""
    import torch

    from methods.rearec import pairwise_kl

    torch.manual_seed(0)
    z = torch.randn(4, 3, 6, dtype=torch.float64, requires_grad=True)
    pairwise_kl(torch.log_softmax(z, -1)).sum().backward()
    got = z.grad.clone()

    def pairwise(detach):
        logp = torch.log_softmax(z, -1)
        p = logp.exp()
        second = logp.detach() if detach else logp
        return sum((p[:, i] * (logp[:, i] - second[:, j])).sum(-1) for i in range(3) for j in range(3) if i != j) / 6

    z.grad = None
    pairwise(detach=True).sum().backward()
    assert torch.allclose(got, z.grad)
    z.grad = None
    pairwise(detach=False).sum().backward()
    assert not torch.allclose(got, z.grad, atol=1e-3)  # the fully differentiated KL moves differently
