"""Core contracts (issue 5): persistence, one config resolution, the metric schema, one validation
protocol, inference settings in recommend, GRPO's clip, hooks, NaN and resume records, atomic writes.
Each test recreates a reproduction from the issue; it fails on the code before the fix."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from bench.config import build_spec, resolve_spec, suite_specs
from bench.method import FitContext, Method, MethodConfig, MethodInfo, Recommendations
from bench.registry import REGISTRY
from bench.reevaluate import reevaluate
from bench.runner import run
from bench.suites import run_suite
from bench.specs import RunSpec, SpecError, SuiteSpec


def _quiet(spec, out, **kw):
    return run(spec, out, progress=False, echo=False, **kw)


# ---------------------------------------------------------------- plugins used below

class Counting(Method):
    """An outside plugin with save/load whose fit cannot resume: re-evaluation must not call fit."""

    info = MethodInfo(name="counting", family="baseline")
    fits = 0

    class Config(MethodConfig):
        offset: int = 0

    def fit(self, data, *, valid, ctx):
        Counting.fits += 1
        self.ranking = np.argsort(-data.item_popularity(), kind="stable")
        return {"fits": Counting.fits}

    def recommend(self, histories, *, k):
        return Recommendations(np.tile(self.ranking[:k], (len(histories), 1)))

    def save(self, path):
        (Path(path) / "ranking.json").write_text(json.dumps(self.ranking.tolist()))

    def load(self, path, data):
        self.ranking = np.array(json.loads((Path(path) / "ranking.json").read_text()))


class NoSave(Counting):
    info = MethodInfo(name="nosave", family="baseline")
    save = Method.save
    load = Method.load


class Beams(Counting):
    """Declares an inference option: the runner passes eval.beam_width to recommend."""

    info = MethodInfo(name="beams", family="baseline")
    inference_options = ("beam_width",)
    seen: list = []

    def recommend(self, histories, *, k, beam_width):
        Beams.seen.append(beam_width)
        return super().recommend(histories, k=k)


@pytest.fixture
def plugins():
    for cls in (Counting, NoSave, Beams):
        REGISTRY.register()(cls)
    Counting.fits = 0
    yield
    for cls in (Counting, NoSave, Beams):
        REGISTRY.unregister(cls.info.name)


# ---------------------------------------------------------------- 1. persistence

def test_reevaluate_loads_an_outside_plugin_without_fitting(toy_env, tmp_path, plugins):
    spec = build_spec("counting", "toy", sets=["eval.max_users=10"])
    first = _quiet(spec, tmp_path)
    assert Counting.fits == 1 and (tmp_path / spec.run_id() / "model" / "ranking.json").is_file()
    again = reevaluate(tmp_path / spec.run_id(), ["eval.max_users=null"], progress=False, echo=False)
    assert Counting.fits == 1, "re-evaluation called fit"
    assert again.training.model_extra["trained_in"] == first.run_id
    assert again.latency.n_samples > first.latency.n_samples


def test_a_method_without_save_cannot_be_reevaluated(toy_env, tmp_path, plugins):
    spec = build_spec("nosave", "toy", sets=["eval.max_users=10"])
    res = _quiet(spec, tmp_path)
    assert res.training.model_extra["model_saved"] is False
    with pytest.raises(SpecError, match="does not implement save\\(\\) and load\\(\\)"):
        reevaluate(tmp_path / spec.run_id(), ["eval.max_users=null"], progress=False, echo=False)


# ---------------------------------------------------------------- 2. one config resolution

def test_run_id_is_the_hash_of_the_resolved_spec(toy_env):
    cls = REGISTRY.get("sasrec")
    empty = build_spec("sasrec", "toy")
    spelled = build_spec("sasrec", "toy", method_config=cls.Config().model_dump(mode="json"))
    assert empty.run_id() == spelled.run_id()
    assert empty.method_config == cls.Config().model_dump(mode="json")  # defaults filled in
    assert empty.data["max_history"] == 5  # the card's data settings, resolved
    assert resolve_spec(empty).run_id() == empty.run_id()  # idempotent


def test_a_default_changed_in_code_changes_the_run_id(toy_env, plugins):
    before = build_spec("counting", "toy").run_id()
    assert build_spec("counting", "toy", method_config={"offset": 0}).run_id() == before

    class CountingV2(Counting):  # the same plugin after a release that changed a default
        class Config(MethodConfig):
            offset: int = 1

    REGISTRY.unregister("counting")
    REGISTRY.register()(CountingV2)
    assert build_spec("counting", "toy").run_id() != before


@pytest.mark.parametrize("args", [
    ["run", "--method", "pop", "--dataset", "toy", "--set", "data.max_histroy=5"],
    ["run", "--method", "pop", "--dataset", "toyy"],
    ["run", "--method", "popp", "--dataset", "toy"],
    ["run", "--method", "sasrec", "--dataset", "toy", "--set", "method_config.epoch=3"],
    ["run", "--method", "pop", "--dataset", "toy", "--set", "selection.metric=MRR@10"],
])
def test_invalid_settings_leave_no_run_folder(toy_env, tmp_path, capsys, args):
    from bench.cli import main

    assert main([*args, "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "reasonrec: error:" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_bad_data_setting_names_the_key(toy_env):
    with pytest.raises(SpecError, match="unknown key 'data.max_histroy'; did you mean 'max_history'"):
        build_spec("pop", "toy", sets=["data.max_histroy=5"])


def test_missing_dataset_files_fail_before_a_run_folder(toy_env, tmp_path):
    card = tmp_path / "gone.yaml"
    card.write_text(f"name: gone\nformat: lcrec\nprefix: Gone\npath: {tmp_path / 'nowhere'}\n")
    from bench.loaders import DataError

    with pytest.raises(DataError, match="nowhere"):
        _quiet(RunSpec(method="pop", dataset=str(card)), tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_a_card_given_by_path_keeps_the_run_folder_flat(toy_env, tmp_path):
    from bench.leaderboard import build_site

    card = toy_env["cards"] / "toy.yaml"
    copy = tmp_path / "cards" / "mytoy.yaml"
    copy.parent.mkdir()
    copy.write_text(card.read_text())
    spec = build_spec("pop", str(copy))
    assert spec.dataset == "toy" and spec.dataset_card == str(copy.resolve())
    assert spec.run_id() == build_spec("pop", "toy").run_id()
    res = _quiet(spec, tmp_path / "runs")
    assert (tmp_path / "runs" / res.run_id / "result.json").is_file()
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [res.run_id]
    index = build_site([tmp_path / "runs"], tmp_path / "site")
    assert index.is_file() and not list(tmp_path.glob(".site*"))


def test_a_suite_with_an_unknown_dataset_runs_nothing(toy_env, tmp_path):
    suite = SuiteSpec(methods=["pop", "random"], datasets=["toy", "toyy"], out=str(tmp_path / "runs"))
    with pytest.raises(SpecError, match="unknown dataset 'toyy'"):
        run_suite(suite, progress=False, echo=False)
    assert not (tmp_path / "runs").exists()


def test_suite_entries_resolve_like_single_runs(toy_env):
    suite = SuiteSpec(methods=[SuiteSpec.Entry(method="sasrec", method_config={"epochs": 3})], datasets=["toy"],
                      eval={"max_users": 5}, selection={"metric": "HR@5"})
    (spec,) = suite_specs(suite)
    assert spec.run_id() == build_spec("sasrec", "toy", sets=["method_config.epochs=3", "eval.max_users=5",
                                                              "selection.metric=HR@5"]).run_id()


def test_a_suite_entry_can_name_its_own_seeds(toy_env):
    suite = SuiteSpec(methods=[SuiteSpec.Entry(method="sasrec", seeds=[0, 1, 2]), "pop"], datasets=["toy"])
    assert [(s.method, s.seed) for s in suite_specs(suite)] == [("sasrec", 0), ("sasrec", 1), ("sasrec", 2),
                                                                ("pop", 0)]
    with pytest.raises(ValueError, match="seeds is empty"):
        SuiteSpec(methods=[SuiteSpec.Entry(method="sasrec", seeds=[])], datasets=["toy"])


# ---------------------------------------------------------------- 3. one metric schema

def test_any_ks_work_end_to_end(toy_env, tmp_path):
    from bench.compare import compare
    from bench.leaderboard import build_site

    for m in ("pop", "random"):
        _quiet(build_spec(m, "toy", sets=["eval.ks=[1, 5]"]), tmp_path / "runs")
    res = _quiet(build_spec("pop", "toy", sets=["eval.ks=[3]", "label=pop3"]), tmp_path / "runs")
    assert set(res.metrics) == {"NDCG@3", "HR@3"}
    index = build_site([tmp_path / "runs"], tmp_path / "site")
    html = index.read_text()
    assert "N@1" in html and "HR@5" in html and "N@3" in html and "N@10" not in html
    table = compare(tmp_path / "runs", None)
    assert "| N@1 | N@3 | N@5 | HR@1 | HR@3 | HR@5 |" in table


# ---------------------------------------------------------------- 4. one validation protocol

def test_validation_protocol_uses_the_shared_evaluator(toy_data):
    from bench.metrics import evaluate

    valid = toy_data.split("valid")
    ranking = np.argsort(-toy_data.item_popularity(), kind="stable")
    ctx = FitContext(workdir=Path("."), selection_metric="HR@5")
    got = ctx.validate(lambda h, k: np.tile(ranking[:k], (len(h), 1)), valid, toy_data.n_items)
    want = evaluate(np.tile(ranking[:10], (len(valid), 1)), valid.targets, toy_data.n_items, ks=(5, 10)).metrics
    assert got["score"] == pytest.approx(want["HR@5"]) and got["NDCG@10"] == pytest.approx(want["NDCG@10"])
    sub = ctx.validate(lambda h, k: np.tile(ranking[:k], (len(h), 1)), valid, toy_data.n_items, max_users=7)
    assert sub["users"] == 7


@pytest.mark.parametrize("metric", ["NDCG@10", "HR@5"])
def test_generative_sft_selects_by_the_run_selection_metric(toy_env, toy_data, tmp_path, metric):
    cls = REGISTRY.get("minionerec")
    cfg = cls.Config(**{**cls.smoke_config, "rl": {"enabled": False}, "reuse_sft": False,
                        "sft": {"epochs": 2, "batch_size": 16}})
    ctx = FitContext(workdir=tmp_path, progress=False, log=lambda *_: None, selection_metric=metric)
    facts = cls(cfg).fit(toy_data, valid=toy_data.split("valid"), ctx=ctx)
    assert facts["selection"]["metric"] == metric
    hist = facts["sft"]["history"]
    assert all(h["valid_score"] == pytest.approx(h[f"valid_{metric}"], abs=1e-5) for h in hist)
    assert facts["sft"]["best_epoch"] == max(hist, key=lambda h: h["valid_score"])["epoch"]


# ---------------------------------------------------------------- 5. inference settings reach recommend

def test_beam_width_reaches_recommend_not_fit(toy_env, tmp_path, plugins):
    Beams.seen = []
    res = _quiet(build_spec("beams", "toy", sets=["eval.beam_width=7"]), tmp_path)
    assert Beams.seen and set(Beams.seen) == {7}
    assert res.evaluation["inference"] == {"beam_width": 7}
    assert "beam_width" not in FitContext.__dataclass_fields__


# ---------------------------------------------------------------- 6. GRPO: the clip binds with mu > 1

def test_grpo_ratio_is_against_the_rollout_policy(toy_env, toy_data, tmp_path):
    import copy

    import torch

    from bench.generative.grpo import GRPOConfig, GRPOLoss, beam_rollout, grpo_token_terms

    cls = REGISTRY.get("minionerec")
    m = cls(cls.Config(**cls.smoke_config))
    m._build(toy_data, FitContext(workdir=tmp_path, progress=False, log=lambda *_: None))
    model = m.bb.model.float()
    ref = copy.deepcopy(model).eval()
    cfg = GRPOConfig(num_generations=4, updates_per_rollout=2, clip_eps=0.05, beta=0.0)
    loss = GRPOLoss(ref, cfg, rollout=beam_rollout(m.trie, m.bb.pad_id,
                                                   prefix_fn=lambda mod, p: m.prefix(mod, p, "rollout")),
                    logprobs=m.completion_logprobs)
    tr = toy_data.train_samples(6, seed=0)
    batch = [(list(h), int(t)) for h, t in zip(tr.histories, tr.targets)]
    first = loss(model, batch)
    assert first["clip_fraction"] == 0.0  # on-policy: ratio 1
    rollout = loss._rollout
    with torch.no_grad():  # an optimizer step's worth of change
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    second = loss(model, batch)  # the same batch object: the same rollout, the ratio against its policy
    assert loss._rollout is rollout and second["clip_fraction"] > 0
    logp = m.completion_logprobs(model, rollout.prompts, rollout.tokens, rollout.aux)[0].flatten(0, 1)
    mask = rollout.valid.reshape(-1, 1).expand_as(logp).float()
    want = grpo_token_terms(logp, rollout.old_logp, rollout.ref_logp, rollout.advantages.reshape(-1), mask, 0.05, 0.0)
    torch.testing.assert_close(second["loss"], want["loss"])
    loss(model, list(batch))  # a new batch object: a new rollout
    assert loss._rollout is not rollout


# ---------------------------------------------------------------- 7. hooks: a latent plugin overrides no core method

def _overridden_core_methods(cls) -> set[str]:
    """Methods of the generative core (GenerativeMethod and its bases) that ``cls`` or a class between it
    and the core redefines, hooks (bench.generative.method.HOOKS) aside."""
    import inspect

    from bench.generative.method import HOOKS, GenerativeMethod

    core = {n for k in GenerativeMethod.__mro__ for n, v in vars(k).items() if callable(v) or isinstance(v, property)}
    mine = {n for k in cls.__mro__[:cls.__mro__.index(GenerativeMethod)] for n, v in vars(k).items()
            if inspect.isfunction(v) or isinstance(v, property)}
    return (mine & core) - HOOKS


def test_no_generative_plugin_overrides_a_core_method():
    """Every registered generative plugin (and the test's latent plugin) fills hooks only: LASAR no longer
    overrides ``prompt``/``prefix_state`` with mode flags, GREAM no longer overrides ``fit``."""
    from tests.latent_plugin import LatentToy

    from bench.generative.method import GenerativeMethod

    plugins = {n: REGISTRY.get(n) for n in REGISTRY.names() if issubclass(REGISTRY.get(n), GenerativeMethod)}
    assert {"minionerec", "lcrec", "lasar", "gream"} <= set(plugins)
    for name, cls in {**plugins, "latent-toy": LatentToy}.items():
        assert _overridden_core_methods(cls) == set(), name

    class Sneaky(LatentToy):  # the check sees an override
        def fit(self, data, *, valid, ctx):
            return super().fit(data, valid=valid, ctx=ctx)

    assert _overridden_core_methods(Sneaky) == {"fit"}


def test_latent_plugin_uses_every_hook_and_reloads(toy_env, tmp_path):
    from tests.latent_plugin import LatentToy
    REGISTRY.register()(LatentToy)
    LatentToy.calls = {}
    try:
        spec = build_spec("latent-toy", "toy", method_config=LatentToy.smoke_config, sets=["eval.max_users=12"])
        res = _quiet(spec, tmp_path)
        for hook in ("extra_special_tokens", "attach_modules", "sft_examples", "sft_loss", "prefix",
                     "completion_logprobs", "rl_extra_terms", "param_groups_sft", "param_groups_rl"):
            assert LatentToy.calls.get(hook), hook
        sft_hist, rl_hist = res.training.model_extra["sft"]["history"], res.training.model_extra["rl"]["history"]
        assert set(sft_hist[0]["loss_components"]) == {"lm", "head_l2"}
        assert {"grpo", "kl", "clip_fraction", "terminal_kl"} <= set(rl_hist[0]["loss_components"])
        assert res.method_facts["extra_modules"] == ["latent_head"]
        again = reevaluate(tmp_path / spec.run_id(), ["eval.max_users=null"], progress=False, echo=False)
        a = json.loads((tmp_path / res.run_id / "per_user.json").read_text())
        b = json.loads((tmp_path / again.run_id / "per_user.json").read_text())
        rank_b = dict(zip(b["users"], b["ranks"]))
        assert [rank_b[u] for u in a["users"]] == a["ranks"]  # the head came back with the weights
    finally:
        REGISTRY.unregister("latent-toy")


def test_latent_plugin_ranks_batched_as_one_by_one(toy_env, toy_data, tmp_path):
    from tests.latent_plugin import LatentToy

    m = LatentToy(LatentToy.Config(**LatentToy.smoke_config))
    m._build(toy_data, FitContext(workdir=tmp_path, progress=False, log=lambda *_: None))
    m.bb.model.eval()
    hist = toy_data.split("test").histories[:8]
    assert len({m.steps(h) for h in hist}) > 1  # several latent lengths in one batch
    batched = m.recommend(hist, k=5, beam_width=8).items
    single = np.concatenate([m.recommend([h], k=5, beam_width=8).items for h in hist])
    assert np.array_equal(batched, single)


# ---------------------------------------------------------------- 10. NaN, resume records

@pytest.mark.parametrize("name", ["minionerec", "lcrec"])
def test_a_nan_loss_stops_the_run_without_a_result(toy_env, tmp_path, name, capsys):
    from bench.cli import main

    cls = REGISTRY.get(name)
    sets = [f"method_config.{k}={json.dumps(v)}" for k, v in cls.smoke_config.items()] + ["method_config.sft.lr=1e10",
                                                                                          "method_config.reuse_sft=false"]
    args = ["run", "--method", name, "--dataset", "toy", "--out", str(tmp_path), "--no-progress"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 1
    assert "training diverged" in capsys.readouterr().err
    assert not list(tmp_path.rglob("result.json"))
    assert "TrainingDiverged" in next(tmp_path.rglob("error.txt")).read_text()


class Flaky(Method):
    """Crashes in its first attempt after some training time; resumes from its checkpoint."""

    info = MethodInfo(name="flaky2", family="baseline")

    class Config(MethodConfig):
        pass

    def fit(self, data, *, valid, ctx):
        import time

        time.sleep(0.3)
        ckpt = ctx.workdir / "half.txt"
        if not ckpt.exists():
            ckpt.write_text("epoch 1 done")
            raise RuntimeError("simulated crash")
        self.n = data.n_items
        return {}

    def recommend(self, histories, *, k):
        return Recommendations(np.tile(np.arange(min(k, self.n)), (len(histories), 1)))


def test_a_resumed_run_records_its_attempts_and_total_time(toy_env, tmp_path):
    REGISTRY.register()(Flaky)
    try:
        spec = build_spec("flaky2", "toy")
        with pytest.raises(RuntimeError, match="simulated crash"):
            _quiet(spec, tmp_path)
        res = _quiet(spec, tmp_path)
    finally:
        REGISTRY.unregister("flaky2")
    t = res.training.model_extra
    assert t["attempts"] == 2 and t["resumed"] is True
    assert res.training.seconds >= 0.55 and t["this_attempt_seconds"] < res.training.seconds
    log = (tmp_path / spec.run_id() / "run.log").read_text()
    assert "resuming run" in log


class CrashesInEval(Counting):
    """Trains and saves, then crashes in its first evaluation."""

    info = MethodInfo(name="crashes_in_eval", family="baseline")
    crashed = False

    def recommend(self, histories, *, k):
        if not CrashesInEval.crashed:
            CrashesInEval.crashed = True
            raise RuntimeError("simulated crash while evaluating")
        return super().recommend(histories, k=k)


class StopsMidDecode(Counting):
    """Ranks by the last history item (so each batch's rows differ) with a per-user stat; in its first
    evaluation it crashes at its third timed batch (after the warm-up batch and two timed ones)."""

    info = MethodInfo(name="stops_mid_decode", family="baseline")
    calls: list = []
    crash_at: int | None = None

    def recommend(self, histories, *, k):
        StopsMidDecode.calls.append(len(histories))
        if StopsMidDecode.crash_at is not None and len(StopsMidDecode.calls) == StopsMidDecode.crash_at:
            StopsMidDecode.crash_at = None
            raise RuntimeError("simulated stop while ranking")
        time.sleep(0.05)  # a timed batch takes >= 50 ms
        rows = np.stack([np.roll(self.ranking, int(h[-1]))[:k] for h in histories])
        return Recommendations(rows, stats={"steps": [len(h) % 5 for h in histories]})


def test_a_run_stopped_mid_decode_reuses_the_batches_it_ranked(toy_env, tmp_path):
    REGISTRY.register()(StopsMidDecode)
    try:
        spec = build_spec("stops_mid_decode", "toy", sets=["eval.max_users=20", "eval.batch_size=4"])  # 5 batches
        StopsMidDecode.calls, StopsMidDecode.crash_at = [], None
        whole = _quiet(spec, tmp_path / "whole")
        assert len(StopsMidDecode.calls) == 1 + 5 and "resumed_batches" not in whole.evaluation
        assert not (tmp_path / "whole" / spec.run_id() / "decode").exists(), "the ranked batches outlive the result"

        StopsMidDecode.calls, StopsMidDecode.crash_at = [], 4  # warm-up, batches 0 and 1, then the stop
        with pytest.raises(RuntimeError, match="simulated stop while ranking"):
            _quiet(spec, tmp_path / "stopped")
        run_dir = tmp_path / "stopped" / spec.run_id()
        assert sorted(p.name for p in (run_dir / "decode").glob("batch-*.npz")) == ["batch-000000.npz",
                                                                                    "batch-000001.npz"]
        StopsMidDecode.calls = []
        res = _quiet(spec, tmp_path / "stopped")
        assert len(StopsMidDecode.calls) == 1 + 3, "the resumed decode ranked the saved batches again"
        assert res.evaluation["resumed_batches"] == {"batches": 2, "of": 5}
        assert res.latency.n_samples == 20 and res.metrics == whole.metrics
        assert res.latency.total_seconds >= 5 * 0.05, "the latency counts only this attempt's batches"
        a, b = (json.loads((tmp_path / d / spec.run_id() / "per_user.json").read_text()) for d in ("whole", "stopped"))
        assert a["ranks"] == b["ranks"] and a["stats"] == b["stats"] and a["users"] == b["users"]
        assert "ranking resumed: 2 of 5 batches" in (run_dir / "run.log").read_text()
        assert not (run_dir / "decode").exists()

        # batches ranked by another model (the run trained again) are not reused
        StopsMidDecode.calls, StopsMidDecode.crash_at = [], 3
        (run_dir / "result.json").unlink()
        with pytest.raises(RuntimeError, match="simulated stop while ranking"):  # evaluation only: the model stays
            _quiet(spec, tmp_path / "stopped")
        assert len(list((run_dir / "decode").glob("batch-*.npz"))) == 1
        (run_dir / "trained.json").unlink()  # the next attempt trains again: another trained.json, another key
        StopsMidDecode.calls = []
        res = _quiet(spec, tmp_path / "stopped")
        assert len(StopsMidDecode.calls) == 1 + 5 and "resumed_batches" not in res.evaluation
    finally:
        REGISTRY.unregister("stops_mid_decode")


def test_a_decode_with_every_batch_saved_ranks_nothing_again(tmp_path):
    """A run stopped after its last ranked batch but before its result (metrics, per-user file) resumes
    without a single ``recommend`` call: not even the untimed warm-up batch."""
    from bench import rundir
    from bench.ranking import timed_recommend
    from bench.specs import EvalSettings

    class Ranker:
        info = MethodInfo(name="ranker", family="baseline")
        calls = 0

        def recommend(self, histories, *, k):
            Ranker.calls += 1
            return Recommendations(np.array([[h[-1] + j for j in range(k)] for h in histories]),
                                   stats={"steps": [len(h) for h in histories]})

    histories = [[u, u + 1][: 1 + u % 2] for u in range(10)]
    ev = EvalSettings(ks=(5,), batch_size=4, warmup_batches=1)  # 3 batches (4, 4, 2) and a warm-up
    key = {"run": "r", "n_users": 10}
    items, latency, stats, resumed = timed_recommend(Ranker(), histories, ev, 20, progress=False,
                                                     decode_log=rundir.DecodeLog(tmp_path / "decode", key))
    assert Ranker.calls == 1 + 3 and resumed is None
    Ranker.calls = 0
    again = timed_recommend(Ranker(), histories, ev, 20, progress=False,
                            decode_log=rundir.DecodeLog(tmp_path / "decode", key))
    assert Ranker.calls == 0, "a finished decode ran the warm-up (or a batch) again"
    assert (again[0] == items).all() and (again[2]["steps"] == stats["steps"]).all()
    assert again[3] == {"batches": 3, "of": 3} and again[1].total_seconds == latency.total_seconds
    assert items[:, 0].tolist() == [h[-1] for h in histories]


def test_a_run_stopped_while_evaluating_resumes_from_its_saved_model(toy_env, tmp_path):
    REGISTRY.register()(CrashesInEval)
    Counting.fits, CrashesInEval.crashed = 0, False
    try:
        spec = build_spec("crashes_in_eval", "toy", sets=["eval.max_users=10"])
        with pytest.raises(RuntimeError, match="simulated crash while evaluating"):
            _quiet(spec, tmp_path)
        assert Counting.fits == 1 and (tmp_path / spec.run_id() / "trained.json").is_file()
        res = _quiet(spec, tmp_path)
        assert Counting.fits == 1, "the resumed run trained again"
        assert res.training.model_extra["fits"] == 1 and res.training.model_extra["evaluation_attempts"] == 2
        assert "no training" in (tmp_path / spec.run_id() / "run.log").read_text()
        # a record written for other data is not trusted: the run trains again
        rec = tmp_path / spec.run_id() / "trained.json"
        rec.write_text(json.dumps({**json.loads(rec.read_text()), "data_fingerprint": "other"}))
        (tmp_path / spec.run_id() / "result.json").unlink()
        _quiet(spec, tmp_path)
        assert Counting.fits == 2
    finally:
        REGISTRY.unregister("crashes_in_eval")


# ---------------------------------------------------------------- 11. atomic writes

def test_a_failed_site_build_keeps_the_old_site(toy_env, tmp_path, monkeypatch):
    from bench import leaderboard

    _quiet(build_spec("pop", "toy"), tmp_path / "runs")
    index = leaderboard.build_site([tmp_path / "runs"], tmp_path / "site")
    before = index.read_text()

    def broken(*a, **k):
        raise RuntimeError("template exploded")

    monkeypatch.setattr(leaderboard.shutil, "copy", broken)  # fails while the new site is being written
    with pytest.raises(RuntimeError, match="exploded"):
        leaderboard.build_site([tmp_path / "runs"], tmp_path / "site")
    assert index.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "site"]  # no temporary folder left


# ---------------------------------------------------------------- robustness: long item texts

def test_long_item_texts_train_end_to_end(toy_env, tmp_path):
    """A catalog whose titles are far longer than max_prompt_tokens: alignment examples used to be cut
    to the response alone and the loss crashed (batch-size mismatch) in epoch 1."""
    from tests.conftest import write_toy

    data = write_toy(tmp_path / "long")
    items = json.loads((data / "Toy.item.json").read_text())
    for i, rec in items.items():
        rec["title"] = " ".join(f"word{(int(i) * 7 + j) % 50}" for j in range(300))
    (data / "Toy.item.json").write_text(json.dumps(items))
    card = tmp_path / "longtoy.yaml"
    card.write_text(f"name: longtoy\nformat: lcrec\nprefix: Toy\npath: {data}\ntext_fields: [title]\n"
                    "data:\n  kcore: 3\n  max_history: 5\n"
                    "  sids: {source: rqkmeans, levels: 3, codebook_size: 4, embedding: collaborative}\n")
    cls = REGISTRY.get("lcrec")
    cfg = {**cls.smoke_config, "max_prompt_tokens": 24, "max_text_tokens": 200, "max_alignment_per_task": 16}
    res = _quiet(build_spec("lcrec", str(card), method_config=cfg, sets=["eval.max_users=8"]), tmp_path / "runs")
    assert res.training.model_extra["sft"]["steps"] > 0 and res.evaluation["invalid_items"] == 0
    assert len(res.training.model_extra["sft"]["tasks"]) > 1  # text tasks with the long titles were trained


def test_stage_lock_wait_is_counted_and_not_training_time(tmp_path, monkeypatch):
    """Waiting for another process's stage is measured (and the runner leaves it out of training time)."""
    import fcntl
    import threading
    import time

    from bench.generative.stages import StageCache, waited_seconds

    monkeypatch.setenv("REASONREC_CACHE", str(tmp_path))
    stage = StageCache("sft", {"k": 1})
    stage.root.mkdir(parents=True, exist_ok=True)
    holder = open(stage.root / f"{stage.id}.lock", "a+")
    fcntl.flock(holder, fcntl.LOCK_EX)
    threading.Timer(0.4, lambda: fcntl.flock(holder, fcntl.LOCK_UN)).start()
    waited_seconds(reset=True)
    t0 = time.perf_counter()
    with stage.lock(lambda *_: None):
        pass
    assert 0.3 < waited_seconds() <= time.perf_counter() - t0 + 1e-6
    holder.close()


def test_a_run_spec_is_resolved_once(toy_env, tmp_path, monkeypatch):
    """The card is read and the method config validated once, when the spec is built: the runner and the
    data preparation use what resolution carried (before: the card was loaded and merged again in data.py, the
    method config rebuilt in the runner, a precomputed index checked twice). A changed copy is resolved again."""
    from bench import cards, config, loaders

    spec = build_spec("pop", "toy")
    assert spec.resolution is not None and spec.resolution["card"].name == "toy"
    calls = []
    real = cards.load_card
    counting = lambda *a, **k: (calls.append(a), real(*a, **k))[1]  # noqa: E731
    for mod in (cards, loaders, config):
        if hasattr(mod, "load_card"):
            monkeypatch.setattr(mod, "load_card", counting)
    res = run(spec, tmp_path, progress=False, echo=False)
    assert calls == [] and res.run_id == spec.run_id()
    assert spec.model_copy(update={"seed": 1}).resolution is None  # changed: no stale resolution
