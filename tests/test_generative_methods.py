"""MiniOneRec and LC-Rec specifics on the toy dataset, paper prompt style (the compact style is in
test_prompt_styles.py; the registry-wide smoke test covers run() in both)."""
import json
import random
from collections import Counter
from pathlib import Path

import pytest

from bench.method import FitContext
from bench.registry import REGISTRY
from bench.runner import build_spec, run


@pytest.fixture(scope="module")
def built(toy_data, tmp_path_factory):
    out = {}
    for name in ("minionerec", "lcrec"):
        cls = REGISTRY.get(name)
        m = cls(cls.Config(**cls.smoke_config, prompt_style="paper"))
        m._build(toy_data, FitContext(workdir=tmp_path_factory.mktemp(name), progress=False, log=lambda *_: None))
        out[name] = m
    return out


def test_minionerec_sft_mix(built, toy_data):
    m = built["minionerec"]
    ex = m.sft_examples(toy_data, m.enc, random.Random(0))
    tasks = Counter(e.task for e in ex)
    assert set(tasks) == {"seqrec", "item2sid", "sid2item", "hist2title"}
    assert tasks["seqrec"] == 64  # the smoke cap
    for e in ex:
        if e.task in ("seqrec", "item2sid"):  # the answer is exactly one SID + eos
            assert len(e.response) == toy_data.sid_levels + 1 and e.response[-1] == m.enc.eos


def test_lcrec_samples_templates_per_example(built, toy_data):
    from bench.generative.prompts import ALPACA
    from methods.lcrec import SEQREC_POOL

    m = built["lcrec"]
    ex = m.sft_examples(toy_data, m.enc, random.Random(0))
    assert set(Counter(e.task for e in ex)) == {"seqrec", "item2sid", "sid2item", "hist2title"}
    header = m.enc.text(ALPACA.split("{instruction}")[0])
    starts = {tuple(e.prompt[len(header):len(header) + 3]) for e in ex if e.task == "seqrec"}
    pool = {tuple(m.enc.text(ins)[:3]) for ins, _ in SEQREC_POOL}
    assert starts <= pool and len(starts) == len(pool)  # every template drawn, nothing else


def test_lcrec_rejects_unknown_task(toy_data, tmp_path):
    cls = REGISTRY.get("lcrec")
    m = cls(cls.Config(**{**cls.smoke_config, "tasks": ("seqrec", "itemsearch")}))
    with pytest.raises(ValueError, match="itemsearch"):
        m.fit(toy_data, valid=toy_data.split("valid"), ctx=FitContext(workdir=tmp_path, progress=False, log=lambda *_: None))


def test_minionerec_records_sft_and_rl(toy_env, tmp_path):
    cls = REGISTRY.get("minionerec")
    res = run(build_spec("minionerec", "toy", method_config=cls.smoke_config), tmp_path, progress=False, echo=False)
    facts = res.training.model_extra
    assert facts["sft"]["steps"] > 0 and facts["rl"]["steps"] == 2 and facts["rl"]["prompts"] == 8
    assert -1.0 <= facts["rl"]["mean_reward"] <= 1.0
    assert res.evaluation["inference"] == {"beam_width": 50} and res.method_facts["parameters"] > 0
    assert res.method_facts["config"]["rl"]["num_generations"] == 4
    sft_only = run(build_spec("minionerec", "toy", method_config={**cls.smoke_config, "rl": {"enabled": False}}),
                   tmp_path, progress=False, echo=False)
    assert "rl" not in sft_only.training.model_extra
    # the SFT-only row reuses the SFT stage the SFT+RL run trained (identical SFT inputs)
    assert sft_only.training.model_extra["sft"]["reused"]
    assert sft_only.training.model_extra["sft"]["stage"] == facts["sft"]["stage"]
    assert facts["rl"]["valid_before"].keys() == facts["rl"]["valid_after"].keys() == {"valid_NDCG@10"}
    assert 0.0 <= facts["rl"]["group_hit_rate"] <= 1.0


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_an_rl_row_is_the_same_whether_its_sft_stage_was_trained_or_reused(toy_env, tmp_path, monkeypatch, dropout):
    """GRPO draws its prompts from its own stream (bench.generative.pipeline.phase_rng) and torch's random
    numbers from its own seed (phase_seed): the SFT+RL row is identical when this run trains the SFT stage and
    when it reuses the stage the SFT-only row published (before, a reused stage skipped SFT's draws and GRPO
    picked other prompts; with dropout, other masks: a trained SFT had advanced torch's stream)."""
    cls = REGISTRY.get("minionerec")
    smoke = {**cls.smoke_config, "backbone": {**cls.smoke_config.get("backbone", {}), "embedding_dropout": dropout,
                                              "attention_dropout": dropout}}
    rows = {}
    for name, first in (("trained", []), ("reused", [{**smoke, "rl": {"enabled": False}}])):
        monkeypatch.setenv("REASONREC_CACHE", str(tmp_path / name / "cache"))
        for cfg in first:  # publishes the SFT stage
            run(build_spec("minionerec", "toy", method_config=cfg), tmp_path / name, progress=False, echo=False)
        res = run(build_spec("minionerec", "toy", method_config=smoke), tmp_path / name, progress=False,
                  echo=False)
        rows[name] = (res, json.loads((tmp_path / name / res.run_id / "per_user.json").read_text()))
    (a, pa), (b, pb) = rows["trained"], rows["reused"]
    assert not a.training.model_extra["sft"].get("reused") and b.training.model_extra["sft"]["reused"]
    assert a.run_id == b.run_id and pa["ranks"] == pb["ranks"] and a.metrics == b.metrics


def test_lasar_is_the_same_whether_it_trains_stage1_or_reuses_one_with_another_head(toy_env, tmp_path, monkeypatch):
    """LASAR's Stage 1 is shared by rows that differ in N_max (the policy head's size), which Stage 1 does
    not train: a row reusing a Stage 1 published with another head size keeps its own build-time head, so
    it equals the row that trained Stage 1 itself (the mismatched head used to be a fresh draw)."""
    cls = REGISTRY.get("lasar")
    rows = {}
    other = {**cls.smoke_config, "max_steps": cls.smoke_config["max_steps"] + 1, "rl": {"enabled": False}}
    for name, first in (("trained", []), ("reused", [other])):
        monkeypatch.setenv("REASONREC_CACHE", str(tmp_path / name / "cache"))
        for cfg in first:
            run(build_spec("lasar", "toy", method_config=cfg), tmp_path / name, progress=False, echo=False)
        res = run(build_spec("lasar", "toy", method_config=cls.smoke_config), tmp_path / name, progress=False,
                  echo=False)
        rows[name] = (res, json.loads((tmp_path / name / res.run_id / "per_user.json").read_text()))
    (a, pa), (b, pb) = rows["trained"], rows["reused"]
    assert b.training.model_extra["sft"]["reused"] and not a.training.model_extra["sft"].get("reused")
    assert pa["ranks"] == pb["ranks"] and a.metrics == b.metrics


def test_lcrec_says_when_the_catalog_has_no_item_text():
    """Instruments has SIDs only: LC-Rec's alignment tasks are skipped, and the log and the result say so."""
    from types import SimpleNamespace

    from bench.registry import REGISTRY

    cls = REGISTRY.get("lcrec")
    m, logs = cls(cls.Config()), []
    ctx = SimpleNamespace(log=logs.append)
    (phase,) = m.middle_phases(SimpleNamespace(item_text=["", ""]), None, ctx)
    assert "no item text" in phase.train()["alignment_tasks"] and "skipped" in logs[0]
    assert m.middle_phases(SimpleNamespace(item_text=["a title", ""]), None, ctx) == []


def test_the_model_is_built_where_reasonrec_device_says(toy_data, tmp_path, monkeypatch):
    """The method's model and the training loop share one device choice (bench.device): a GPU machine told
    REASONREC_DEVICE=cpu builds on the CPU, and a device the bench does not run on is refused by name."""
    import torch

    cls = REGISTRY.get("minionerec")
    ctx = lambda d: FitContext(workdir=tmp_path / d, progress=False, log=lambda *_: None)
    monkeypatch.setenv("REASONREC_DEVICE", "cpu")
    m = cls(cls.Config(**cls.smoke_config))
    m._build(toy_data, ctx("cpu"))
    assert m.device == torch.device("cpu") and {p.device.type for p in m.bb.model.parameters()} == {"cpu"}
    monkeypatch.setenv("REASONREC_DEVICE", "tpu")
    with pytest.raises(ValueError, match="REASONREC_DEVICE='tpu'"):
        cls(cls.Config(**cls.smoke_config))._build(toy_data, ctx("tpu"))


def test_a_phase_draws_torch_numbers_from_its_own_stream():
    """Every phase after SFT draws torch's random numbers from a stream seeded by (run seed, phase name) and
    leaves the global stream as it was: what it draws does not depend on what ran before it (hand-checked
    against phase_seed), and the draws after it do not depend on it."""
    from types import SimpleNamespace

    import torch

    from bench.generative.pipeline import Phase, PhasePipeline, phase_seed

    pipe, ctx = PhasePipeline(), SimpleNamespace(seed=3)
    draw = Phase("rl", lambda: {"x": torch.rand(2).tolist()})
    torch.manual_seed(0)
    torch.rand(5)  # an earlier phase that trained
    after_trained = pipe.run_phase(draw, None, ctx), torch.rand(1).item()
    torch.manual_seed(0)  # an earlier phase reused: nothing drawn
    reused = pipe.run_phase(draw, None, ctx)
    own = torch.Generator().manual_seed(phase_seed(3, "rl"))
    assert after_trained[0] == reused == {"x": torch.rand(2, generator=own).tolist()}
    torch.manual_seed(0)
    torch.rand(5)
    assert torch.rand(1).item() == after_trained[1]  # the global stream went on as if the phase drew nothing
    assert pipe.run_phase(Phase("stage2", draw.train), None, ctx) != reused  # another phase, another stream


def _kill_after_first_epoch(monkeypatch, phase: str) -> list:
    """Simulate a kill -9 right after ``phase`` wrote its first epoch checkpoint (its progress file)."""
    import bench.generative.training as training

    real, fired = training.atomic_write_json, []

    def write(path, obj, *a, **k):
        out = real(path, obj, *a, **k)
        if str(path).endswith(f"{phase}_progress.json") and not fired:
            fired.append(path)
            raise KeyboardInterrupt(f"killed after {path}")
        return out

    monkeypatch.setattr(training, "atomic_write_json", write)
    return fired


@pytest.mark.parametrize("method,phase,extra", [("minionerec", "grpo", {}), ("lasar", "grpo", {}),
                                                ("lasar", "stage2", {"stage2_replay": 1.0})])
def test_a_run_killed_in_a_later_phase_resumes_exactly(method, phase, extra, toy_env, tmp_path, monkeypatch,
                                                       one_thread):
    """Killed after a GRPO or Stage-2 epoch checkpoint and run again, a run resumes that phase from its
    checkpoint (RL state included: LASAR's N sampler and REINFORCE baseline) and gives the uninterrupted
    run's per-user ranks (the SFT case: test_training_loop_learns_and_resumes)."""
    cls = REGISTRY.get(method)
    cfg = {**cls.smoke_config, "rl": {**cls.smoke_config["rl"], "epochs": 2, "valid_every": 1}}
    if method == "lasar":
        cfg["stage2"] = {**cls.smoke_config["stage2"], "epochs": 2}
    cfg.update(extra)  # Stage 2 with replay: its replay draws are checkpointed state too
    rows = {}
    for name in ("straight", "killed"):
        monkeypatch.setenv("REASONREC_CACHE", str(tmp_path / name / "cache"))
        spec = build_spec(method, "toy", method_config=cfg)
        if name == "killed":
            with monkeypatch.context() as m:
                fired = _kill_after_first_epoch(m, phase)
                with pytest.raises(KeyboardInterrupt):
                    run(spec, tmp_path / name, progress=False, echo=False)
            assert fired
            state = json.loads(Path(fired[0]).read_text())  # as if the killed attempt had trained 1000 s
            Path(fired[0]).write_text(json.dumps({**state, "seconds_spent": state["seconds_spent"] + 1000}))
        res = run(spec, tmp_path / name, progress=False, echo=False)
        rows[name] = (res, json.loads((tmp_path / name / res.run_id / "per_user.json").read_text()),
                      (tmp_path / name / res.run_id / "run.log").read_text())
    (a, pa, _), (b, pb, log) = rows["straight"], rows["killed"]
    assert f"{phase}: resumed after epoch 0" in log
    assert pa["ranks"] == pb["ranks"] and a.metrics == b.metrics
    # the phase's time counts the killed attempt's epoch too (the time budget's clock)
    facts = b.training.model_extra["rl" if phase == "grpo" else phase]
    assert 1000 <= facts["earlier_attempts_seconds"] < facts["seconds"] < 1000 + 600  # 1000 + the killed epoch
    assert a.training.model_extra["rl" if phase == "grpo" else phase]["earlier_attempts_seconds"] == 0
    if method == "lasar" and phase == "grpo":
        assert a.training.model_extra["rl"]["steps_sampled"] == b.training.model_extra["rl"]["steps_sampled"]


def test_a_renamed_setting_keeps_run_ids_and_reads_its_old_name():
    """``latent_samples`` became ``cot_samples`` (GREAM uses it too): configs with the old name still load,
    and run ids hash the field under its old name (Method.renamed_settings), so committed rows keep theirs."""
    from bench.config import build_spec
    from bench.specs import hashed_names

    for method in ("lasar", "gream"):
        old = build_spec(method, "toy", method_config={"latent_samples": 48})
        new = build_spec(method, "toy", method_config={"cot_samples": 48})
        assert old.run_id() == new.run_id() and new.method_config["cot_samples"] == 48
        assert "latent_samples" in hashed_names(method, new.method_config)
        assert "cot_samples" not in hashed_names(method, new.method_config)
        assert build_spec(method, "toy", method_config={"cot_samples": 49}).run_id() != new.run_id()
    # the id this spec had before the rename (computed then, with the field called latent_samples)
    assert build_spec("lasar", "toy", method_config={"cot_samples": 600}).run_id() == "lasar-toy-s0-ed51b610ab"


@pytest.mark.parametrize("method,extra", [("minionerec", {}), ("lasar", {}), ("gream", {"mode": "reasoning"})])
def test_a_decode_stopped_mid_way_resumes_to_the_same_ranks(method, extra, toy_env, tmp_path, monkeypatch,
                                                            one_thread):
    """Killed after its second ranked test batch, a run reloads its saved model, reuses the two batches and
    ranks the rest: its per-user ranks and stats (LASAR's latent steps, GREAM's CoT tokens) equal a decode of
    the same model that ranked every batch in one attempt (beam search and latent steps depend on the batch
    only, not on what an earlier batch drew)."""
    import bench.rundir as rundir

    cls = REGISTRY.get(method)
    spec = build_spec(method, "toy", method_config={**cls.smoke_config, **extra}, sets=["eval.batch_size=8"])
    run_dir = tmp_path / spec.run_id()
    real, saved = rundir.DecodeLog.save, []

    def save(self, i, *a, **k):
        real(self, i, *a, **k)
        saved.append(i)
        if len(saved) == 2:
            raise KeyboardInterrupt("killed after the second ranked batch")

    with monkeypatch.context() as m:
        m.setattr(rundir.DecodeLog, "save", save)
        with pytest.raises(KeyboardInterrupt):
            run(spec, tmp_path, progress=False, echo=False)
    assert saved == [0, 1] and (run_dir / "trained.json").is_file()
    resumed = run(spec, tmp_path, progress=False, echo=False)
    n_batches = -(-resumed.evaluation["n_users"] // 8)
    assert n_batches > 2 and resumed.evaluation["resumed_batches"] == {"batches": 2, "of": n_batches}
    per_user = json.loads((run_dir / "per_user.json").read_text())
    for name in ("result.json", "per_user.json"):
        (run_dir / name).unlink()
    whole = run(spec, tmp_path, progress=False, echo=False)  # the same saved model, every batch ranked now
    assert "resumed_batches" not in whole.evaluation
    assert json.loads((run_dir / "per_user.json").read_text()) == per_user and whole.metrics == resumed.metrics
