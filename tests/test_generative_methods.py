"""MiniOneRec and LC-Rec specifics on the toy dataset, paper prompt style (the compact style is in
test_prompt_styles.py; the registry-wide smoke test covers run() in both)."""
import json
import random
from collections import Counter

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


def test_an_rl_row_is_the_same_whether_its_sft_stage_was_trained_or_reused(toy_env, tmp_path, monkeypatch):
    """GRPO draws its prompts from its own stream (bench.generative.method.phase_rng): the SFT+RL row is
    identical when this run trains the SFT stage and when it reuses the stage the SFT-only row published
    (before, a reused stage skipped SFT's draws and GRPO picked other prompts)."""
    cls = REGISTRY.get("minionerec")
    rows = {}
    for name, first in (("trained", []), ("reused", [{**cls.smoke_config, "rl": {"enabled": False}}])):
        monkeypatch.setenv("REASONREC_CACHE", str(tmp_path / name / "cache"))
        for cfg in first:  # publishes the SFT stage
            run(build_spec("minionerec", "toy", method_config=cfg), tmp_path / name, progress=False, echo=False)
        res = run(build_spec("minionerec", "toy", method_config=cls.smoke_config), tmp_path / name, progress=False,
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
