"""RecBole methods (SASRec, GRU4Rec): the shared selection protocol and exact resume."""
from __future__ import annotations

import pytest
import torch

from bench.method import FitContext, TrainingDiverged
from bench.registry import REGISTRY

TINY_SASREC = {"hidden_size": 16, "n_layers": 1, "n_heads": 1, "inner_size": 32, "batch_size": 16, "lr": 5e-3,
               "patience": 10}  # default dropout (0.5): the random states matter
# packed route, PRL (dropout, noise and the contrastive term after its warm-up epoch: every random state)
TINY_REAREC = {"variant": "prl", "hidden_size": 16, "n_layers": 1, "n_heads": 1, "inner_size": 32, "batch_size": 16,
               "lr": 5e-3, "patience": 10, "warmup_epochs": 1}
TINY_GRU4REC = {"embedding_size": 16, "hidden_size": 16, "batch_size": 16, "lr": 5e-3, "patience": 10}


pytestmark = pytest.mark.usefixtures("one_thread")


def _ctx(workdir, logs=None, **kw):
    return FitContext(workdir=workdir, progress=False, log=(logs.append if logs is not None else lambda *_: None),
                      **kw)


def _fit(name, cfg, data, workdir, logs=None, **ctx_kw):
    cls = REGISTRY.get(name)
    m = cls(cls.Config(**cfg))
    facts = m.fit(data, valid=data.split("valid"), ctx=_ctx(workdir, logs, **ctx_kw))
    return m, facts


def _kill_in_epoch(monkeypatch, epoch, name="sasrec", packed=False):
    """The first time epoch ``epoch`` trains, the process "dies" at the end of that epoch's training
    (after its batches moved the weights and the random states, before any checkpoint): in RecBole's
    trainer, or in the packed epoch."""
    fired = []
    if packed:
        cls = REGISTRY.get(name)
        real = cls._train_epoch

        def packed_epoch(self, trainer, train_data, epoch_idx):
            out = real(self, trainer, train_data, epoch_idx)
            if epoch_idx == epoch and not fired:
                fired.append(epoch_idx)
                raise KeyboardInterrupt
            return out

        monkeypatch.setattr(cls, "_train_epoch", packed_epoch)
        return fired
    from recbole.trainer import Trainer

    real = Trainer._train_epoch

    def train_epoch(self, train_data, epoch_idx, *a, **kw):
        out = real(self, train_data, epoch_idx, *a, **kw)
        if epoch_idx == epoch and not fired:
            fired.append(epoch_idx)
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(Trainer, "_train_epoch", train_epoch)
    return fired


def _untimed(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def _assert_same_training(a, b, dir_a, dir_b):
    for x, y in [(a.model.state_dict(), b.model.state_dict()),
                 (torch.load(dir_a / "last.pth", weights_only=False)["model"],
                  torch.load(dir_b / "last.pth", weights_only=False)["model"])]:
        assert x.keys() == y.keys()
        assert all(torch.equal(x[k], y[k]) for k in x), [k for k in x if not torch.equal(x[k], y[k])]


@pytest.mark.parametrize("name,cfg,epochs,kill", [("sasrec", TINY_SASREC, 3, 1), ("gru4rec", TINY_GRU4REC, 2, 1),
                                                  ("rearec", TINY_REAREC, 3, 1),
                                                  ("sasrec", {**TINY_SASREC, "packed": True}, 3, 1),
                                                  ("sasrec", {**TINY_SASREC, "packed": True, "loss": "sampled_softmax",
                                                              "n_negatives": 8}, 3, 1)])
def test_resume_after_a_kill_trains_exactly_as_without(name, cfg, epochs, kill, toy_env, toy_data, tmp_path,
                                                        monkeypatch):
    whole, interrupted = tmp_path / "whole", tmp_path / "interrupted"
    ref, ref_facts = _fit(name, {**cfg, "epochs": epochs}, toy_data, whole)
    assert ref_facts["epochs_run"] == epochs and ref_facts["stopped_by"] == "epochs"

    fired = _kill_in_epoch(monkeypatch, kill, name, cfg.get("packed", name == "rearec"))
    with pytest.raises(KeyboardInterrupt):
        _fit(name, {**cfg, "epochs": epochs}, toy_data, interrupted)
    assert fired == [kill]
    logs = []
    got, facts = _fit(name, {**cfg, "epochs": epochs}, toy_data, interrupted, logs)  # a fresh instance
    assert any(f"resumed {name} at epoch {kill}" in m for m in logs), logs

    assert _untimed(facts["history"]) == _untimed(ref_facts["history"])
    assert facts["best_epoch"] == ref_facts["best_epoch"] and facts["best_valid"] == ref_facts["best_valid"]
    _assert_same_training(got, ref, interrupted, whole)
    valid = toy_data.split("valid")
    assert (got.recommend(valid.histories, k=10).items == ref.recommend(valid.histories, k=10).items).all()


@pytest.mark.parametrize("metric", ["NDCG@10", "HR@5"])
def test_selection_is_the_runs_protocol(metric, toy_env, toy_data, tmp_path):
    m, facts = _fit("sasrec", {**TINY_SASREC, "epochs": 3}, toy_data, tmp_path, selection_metric=metric)
    valid = toy_data.split("valid")
    assert facts["selection"] == _ctx(tmp_path, selection_metric=metric).selection(None, len(valid))
    assert facts["selection"]["metric"] == metric and facts["selection"]["users"] == len(valid)
    hist = facts["history"]
    assert [h["epoch"] for h in hist] == [0, 1, 2]
    assert all(h["valid_score"] == h[f"valid_{metric}"] for h in hist)
    assert all({"valid_NDCG@10", "valid_HR@10"} <= h.keys() for h in hist)
    best = max(hist, key=lambda h: h["valid_score"])
    assert facts["best_epoch"] == best["epoch"] and facts["best_valid"] == pytest.approx(best["valid_score"], abs=1e-5)
    # the model kept is the best epoch's, and recommend ranks as validation did
    again = _ctx(tmp_path, selection_metric=metric).validate(lambda h, k: m.recommend(h, k=k).items, valid,
                                                              toy_data.n_items)
    assert again["score"] == pytest.approx(best["valid_score"], abs=1e-5)


def test_recbole_config_has_no_valid_metric_of_its_own():
    cls = REGISTRY.get("sasrec")
    assert "valid_metric" not in cls.Config.model_fields
    with pytest.raises(ValueError, match="valid_metric"):
        cls.Config(valid_metric="NDCG@10")


def test_nan_loss_is_training_diverged(toy_env, toy_data, tmp_path, monkeypatch):
    from recbole.model.sequential_recommender.gru4rec import GRU4Rec

    monkeypatch.setattr(GRU4Rec, "calculate_loss",
                        lambda self, inter: torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(TrainingDiverged, match=r"gru4rec.*NaN in epoch 0 \(lr 0.005\)"):
        _fit("gru4rec", {**TINY_GRU4REC, "epochs": 1}, toy_data, tmp_path)
    assert not (tmp_path / "last.pth").exists()


def test_a_checkpoint_of_another_selection_is_not_resumed(toy_env, toy_data, tmp_path):
    _fit("gru4rec", {**TINY_GRU4REC, "epochs": 1}, toy_data, tmp_path)
    with pytest.raises(RuntimeError, match="HR@5"):
        _fit("gru4rec", {**TINY_GRU4REC, "epochs": 2}, toy_data, tmp_path, selection_metric="HR@5")
    state = torch.load(tmp_path / "last.pth", weights_only=False)
    del state["rng"], state["selection"]  # as written before the shared protocol
    torch.save(state, tmp_path / "last.pth")
    with pytest.raises(RuntimeError, match="predates the shared selection protocol"):
        _fit("gru4rec", {**TINY_GRU4REC, "epochs": 2}, toy_data, tmp_path)


def test_model_with_another_item_numbering_is_refused(toy_data, tmp_path):
    """A saved RecBole model carries RecBole's item numbering; one without it (made before the route
    stopped writing test interactions) or with another is refused rather than loaded scrambled."""
    import numpy as np

    from bench.registry import get_method

    m, _ = _fit("sasrec", {"epochs": 1, "hidden_size": 8, "inner_size": 16, "n_layers": 1, "n_heads": 1,
                           "batch_size": 64}, toy_data, tmp_path / "work")
    (tmp_path / "model").mkdir()
    m.save(tmp_path / "model")
    cls = get_method("sasrec")
    again = cls(m.config)
    again.load(tmp_path / "model", toy_data)  # the same numbering: loads
    ids = np.load(tmp_path / "model" / "item_ids.npy")
    np.save(tmp_path / "model" / "item_ids.npy", ids[::-1])
    with pytest.raises(RuntimeError, match="numbering differs"):
        cls(m.config).load(tmp_path / "model", toy_data)
    (tmp_path / "model" / "item_ids.npy").unlink()
    with pytest.raises(RuntimeError, match="no item_ids.npy"):
        cls(m.config).load(tmp_path / "model", toy_data)


@pytest.mark.parametrize("name,cfg", [("sasrec", TINY_SASREC), ("gru4rec", TINY_GRU4REC)])
def test_packed_loss_equals_recboles_loss_over_every_prefix(name, cfg, toy_env, toy_data, tmp_path):
    """``packed: true`` trains on the samples RecBole's per-prefix dataloader holds (the same number of
    targets, users longer than one window included) with the same loss: the mean CE of all user windows in
    one packed batch == the mean of RecBole's ``calculate_loss`` over its whole train dataset (dropout off)."""
    from bench.packed import packed_batch, training_windows

    cls = REGISTRY.get(name)
    m = cls(cls.Config(**cfg, packed=True))
    _, model, train = m._build(toy_data, tmp_path, 0)
    assert type(model).__name__ == ("SASRec" if name == "sasrec" else "GRU4Rec")
    model.eval()
    windows = training_windows(toy_data.train_sequences(), toy_data.max_history)
    assert any(f > 1 for _, f in windows), "needs users longer than one window"
    assert sum(len(w) - f for w, f in windows) == len(train.dataset)
    seq, lens, first = packed_batch(windows, m.ours2rb)
    with torch.no_grad():
        packed = m.packed_loss(model, seq, lens, first)
        total = n = 0
        for inter in train:
            total, n = total + float(model.calculate_loss(inter)) * len(inter), n + len(inter)
    assert n == len(train.dataset)
    assert abs(float(packed) - total / n) < 1e-4, (float(packed), total / n)


@pytest.mark.parametrize("loss", [{}, {"loss": "sampled_softmax", "n_negatives": 16}])
def test_packed_training_learns_and_loads_as_the_plain_model(loss, toy_env, toy_data, tmp_path):
    """A packed SASRec beats popularity after a few epochs (full CE, and sampled softmax), and its saved
    weights load into the per-prefix model (the same RecBole class underneath): the same rankings."""
    from bench.metrics import evaluate

    cfg = {**TINY_SASREC, "hidden_size": 32, "inner_size": 64, "epochs": 4, "lr": 1e-2, "packed": True, **loss}
    m, facts = _fit("sasrec", cfg, toy_data, tmp_path / "run")
    assert facts["history"][-1]["loss"] < facts["history"][0]["loss"]
    test = toy_data.split("test")
    got = evaluate(m.recommend(test.histories, k=10).items, test.targets, toy_data.n_items, ks=(10,)).metrics
    pop = REGISTRY.get("pop")
    p = pop(pop.Config())
    p.fit(toy_data, valid=toy_data.split("valid"), ctx=_ctx(tmp_path / "pop"))
    base = evaluate(p.recommend(test.histories, k=10).items, test.targets, toy_data.n_items, ks=(10,)).metrics
    assert got["NDCG@10"] > base["NDCG@10"], (got, base)
    m.save(tmp_path / "model")
    plain = REGISTRY.get("sasrec")(REGISTRY.get("sasrec").Config(**{**cfg, "packed": False, "loss": "ce"}))
    plain.load(tmp_path / "model", toy_data)
    h = toy_data.split("valid").histories
    assert (plain.recommend(h, k=10).items == m.recommend(h, k=10).items).all()


def test_window_batches_close_at_batch_size_targets():
    """Hand-computed: windows with 3, 1, 2, 4 targets (length - first) in the order 3, 0, 1, 2 and batch_size
    4: window 3 alone reaches 4; windows 0 and 1 reach 3 + 1 = 4; window 2 is the last, smaller batch."""
    from bench.packed import window_batches

    windows = [([1, 2, 3, 4], 1), ([5, 6], 1), ([7, 8, 9], 1), ([1, 2, 3, 4, 5], 1)]
    got = [([windows.index(w) for w in b], n, done) for b, n, done in window_batches(windows, [3, 0, 1, 2], 4)]
    assert got == [([3], 4, 1), ([0, 1], 4, 3), ([2], 2, 4)]


def test_sampled_softmax_by_hand():
    """h0 = (1, 0), h1 = (0, 1); items 1 = (1, 0), 2 = (0, 2), 3 = (1, 1); targets 1, 2; negatives 2, 3.
    Row 0: logits target 1, negatives 0, 1. Row 1: target 2; negative 2 is its own target (masked), 3 gives 1."""
    import math

    from bench.packed import sampled_softmax_loss

    w = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    got = sampled_softmax_loss(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([1, 2]), w, torch.tensor([2, 3]))
    row0 = -math.log(math.e / (math.e + 1 + math.e))
    row1 = -math.log(math.e ** 2 / (math.e ** 2 + math.e))
    assert abs(float(got) - (row0 + row1) / 2) < 1e-6


def test_sampled_softmax_with_every_item_is_the_full_softmax():
    """Every non-padding item as a negative (the target masked as an accidental hit) == the CE over the
    catalogue without the padding row."""
    from bench.packed import sampled_softmax_loss

    g = torch.Generator().manual_seed(0)
    w, h = torch.randn(30, 8, generator=g), torch.randn(12, 8, generator=g)
    targets = torch.randint(1, 30, (12,), generator=g)
    full = torch.nn.functional.cross_entropy(h @ w[1:].T, targets - 1)
    assert torch.allclose(sampled_softmax_loss(h, targets, w, torch.arange(1, 30)), full, atol=1e-6)


def test_sampled_softmax_needs_the_packed_route_and_names_itself_in_the_run_id():
    from bench.specs import RunSpec

    cls = REGISTRY.get("sasrec")
    with pytest.raises(ValueError, match="set packed: true"):
        cls.Config(loss="sampled_softmax")
    base = {"method": "sasrec", "dataset": "beauty", "method_config": {"packed": True}}
    ids = {RunSpec(**base).run_id(),
           RunSpec(**{**base, "method_config": {"packed": True, "loss": "ce", "n_negatives": 256}}).run_id()}
    assert len(ids) == 1  # the defaults stay out of the id (committed rows keep theirs)
    ss = RunSpec(**{**base, "method_config": {"packed": True, "loss": "sampled_softmax"}}).run_id()
    assert ss not in ids


def test_bench_packed_times_the_sampled_softmax_route_on_the_same_batches(toy_env, tmp_path):
    """`reasonrec bench packed --method sasrec`: three routes (per prefix, packed CE, packed sampled softmax)
    in one process, each with a positive time and the same target count for the two packed routes."""
    import json

    from bench.benchmarks import bench_packed

    cfg = {**{k: TINY_SASREC[k] for k in ("hidden_size", "n_layers", "n_heads", "inner_size")}, "batch_size": 4}
    res = bench_packed(method="sasrec", dataset="toy", batches=2, out=str(tmp_path / "b.json"), log=lambda *_: None,
                       **cfg, n_negatives=8)
    routes = res["routes"]
    assert set(routes) == {"per_prefix", "packed", "packed_sampled_softmax"}
    assert all(r["seconds_per_target"] > 0 for r in routes.values())
    assert routes["packed"]["targets_per_epoch"] == routes["packed_sampled_softmax"]["targets_per_epoch"]
    assert res["setup"]["n_negatives"] == 8 and "epoch_speedup_sampled_softmax_vs_ce_packed" in res
    assert json.loads((tmp_path / "b.json").read_text()) == res
