"""reasonrec tune: trials are ordinary runs scored on the validation split, the study resumes after a
hard kill, the best configuration is a run config, and the test split is never read."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import yaml

SPACE = {"method": "sasrec",
         "params": {"method_config.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
                    "method_config.hidden_size": {"type": "categorical", "choices": [8, 16]}},
         "fixed": {"method_config.epochs": 2, "method_config.n_layers": 1, "method_config.n_heads": 1,
                   "method_config.inner_size": 16, "method_config.batch_size": 64}}


def _space(tmp_path, **over):
    p = tmp_path / "space.yaml"
    p.write_text(yaml.safe_dump({**SPACE, **over}))
    return p


def test_tune_trials_score_validation_and_write_a_run_config(toy_env, tmp_path):
    from bench.config import build_spec
    from bench.results import RunResult
    from bench.tune import tune

    res = tune("sasrec", "toy", _space(tmp_path), tmp_path / "tune", trials=2, progress=False, log=lambda *_: None)
    assert [t["state"] for t in res["trials"]] == ["complete", "complete"]
    folder = tmp_path / "tune" / res["study"]
    for t in res["trials"]:
        r = RunResult.from_disk(folder / "trials" / t["run_id"] / "result.json")
        assert r.evaluation["split"] == "valid" and r.spec.eval.split == "valid"
        assert abs(r.metrics["NDCG@10"] - t["value"]) < 1e-5
    best = yaml.safe_load((folder / "best.yaml").read_text())
    assert best["method_config"]["epochs"] == 2 and best["label"] == "sasrec (tuned)"
    assert best["method_config"]["lr"] == res["best"]["params"]["method_config.lr"]
    spec = build_spec("sasrec", "toy", config_file=str(folder / "best.yaml"))
    assert spec.eval.split == "test"  # the tuned row is a leaderboard row
    assert "| trial | state | valid |" in (folder / "trials.md").read_text()
    # a second call with the same arguments has nothing left to do
    again = tune("sasrec", "toy", _space(tmp_path), tmp_path / "tune", trials=2, progress=False, log=lambda *_: None)
    assert again["best"] == res["best"]


def test_tune_never_reads_the_test_split(toy_env, toy_data, tmp_path, monkeypatch):
    """Poisoned test targets (every user's last item replaced) give the same trial scores, and asking the
    data for its test split fails the run: neither the search nor the trials touch it."""
    from bench.data import SIDData
    from bench.tune import tune

    clean = tune("sasrec", "toy", _space(tmp_path), tmp_path / "a", trials=2, data=toy_data, progress=False,
                 log=lambda *_: None)
    rng = np.random.default_rng(1)
    poisoned = SIDData(toy_data.name, toy_data.fingerprint, toy_data.settings,
                       [np.concatenate([s[:-1], [rng.integers(toy_data.n_items)]]) for s in toy_data.sequences],
                       toy_data.user_ids, toy_data.item_ids, toy_data.item_text, toy_data.codes,
                       toy_data.codebook_size, toy_data.stats)
    assert any(a[-1] != b[-1] for a, b in zip(poisoned.sequences, toy_data.sequences))
    real_split = SIDData.split

    def no_test(self, which):
        if which == "test":
            raise AssertionError("the test split was read")
        return real_split(self, which)

    monkeypatch.setattr(SIDData, "split", no_test)
    dirty = tune("sasrec", "toy", _space(tmp_path), tmp_path / "b", trials=2, data=poisoned, progress=False,
                 log=lambda *_: None)
    assert [t["value"] for t in dirty["trials"]] == [t["value"] for t in clean["trials"]]


def test_tune_resumes_after_a_hard_kill(toy_env, tmp_path):
    """A tune process killed (SIGKILL) inside its second trial: rerunning the command retries that trial
    with the same parameters (same run id: its run resumes) and completes the study."""
    from bench.tune import tune

    space = _space(tmp_path, fixed={**SPACE["fixed"], "method_config.epochs": 3})
    script = f"""
import os, signal
import bench.metrics as m
from bench.tune import tune
real, calls = m.validate, [0]
def validate(*a, **k):
    calls[0] += 1
    if calls[0] == 5:  # trial 0: 3 epochs + its final ranking is not a validate() call; trial 1, epoch 2
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*a, **k)
m.validate = validate
tune("sasrec", "toy", {str(space)!r}, {str(tmp_path / 'tune')!r}, trials=3, progress=False)
"""
    proc = subprocess.run([sys.executable, "-c", script], env=os.environ.copy(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    logs = []
    res = tune("sasrec", "toy", space, tmp_path / "tune", trials=3, progress=False, log=logs.append)
    states = [t["state"] for t in res["trials"]]
    assert states.count("complete") + states.count("pruned") == 3 and states.count("fail") == 1, states
    killed = next(t for t in res["trials"] if t["state"] == "fail")
    retried = [t for t in res["trials"] if t["state"] == "complete" and t["params"] == killed["params"]]
    assert len(retried) == 1 and retried[0]["run_id"] == killed["run_id"]
    assert retried[0]["epochs"] == 3  # the run's epochs over both attempts, not only the resumed ones
    # the retried trial reports its scores at the run's own epochs (the run resumed after epoch 0), so the
    # pruner's median compares them with the other trials' scores of the same epochs
    import optuna

    study = optuna.load_study(study_name=res["study"], storage=f"sqlite:///{tmp_path / 'tune' / res['study'] / 'study.db'}")
    steps = {t.number: sorted(t.intermediate_values) for t in study.trials}
    assert steps[killed["trial"]] == [0] and steps[retried[0]["trial"]] == [1, 2], steps
    assert any("interrupted" in line for line in logs)
    run_log = (tmp_path / "tune" / res["study"] / "trials" / killed["run_id"] / "run.log").read_text()
    assert "resuming run" in run_log


def test_search_space_errors_are_named(tmp_path):
    from bench.specs import SpecError
    from bench.tune import load_space

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"params": {"lr": {"type": "float", "low": 1, "high": 2}}}))
    with pytest.raises(SpecError, match="method_config"):
        load_space(bad)
    bad.write_text(yaml.safe_dump({"params": {"method_config.lr": {"type": "float", "low": 2, "high": 1}}}))
    with pytest.raises(SpecError, match="low < high"):
        load_space(bad)
    lr = {"method_config.lr": {"type": "float", "low": 1e-3, "high": 1e-2}}
    bad.write_text(yaml.safe_dump({"params": lr, "start": [{"method_config.lr": 0.5}]}))
    with pytest.raises(SpecError, match=r"start\[0\].method_config.lr = 0.5 is outside"):
        load_space(bad)
    bad.write_text(yaml.safe_dump({"params": lr, "start": [{"method_config.lr": 2e-3, "method_config.x": 1}]}))
    with pytest.raises(SpecError, match="not searched"):
        load_space(bad)
    layers = {"method_config.n_layers": {"type": "int", "low": 1, "high": 3},
              "method_config.hidden_size": {"type": "categorical", "choices": [1, 2]}}
    for point, key in [({"method_config.n_layers": 1.5, "method_config.hidden_size": 1}, "n_layers"),
                       ({"method_config.n_layers": 2, "method_config.hidden_size": True}, "hidden_size")]:
        bad.write_text(yaml.safe_dump({"params": layers, "start": [point]}))
        with pytest.raises(SpecError, match=f"start.0..method_config.{key} = .* is outside"):
            load_space(bad)
    bad.write_text(yaml.safe_dump({"params": {"method_config.lr": {"typ": "float"}}}))
    with pytest.raises(SpecError, match=r"unknown key 'params.method_config.lr.typ'"):
        load_space(bad)


@pytest.mark.parametrize("name", ["sasrec", "sasrec-hist50", "gru4rec"])
def test_shipped_spaces_validate(name):
    from pathlib import Path

    from bench.config import build_spec
    from bench.tune import _nest, load_space

    space = load_space(Path(__file__).parent.parent / "leaderboard" / "spaces" / f"{name}.yaml")
    values = {k: (p.choices[0] if p.type == "categorical" else p.low) for k, p in space.params.items()}
    layers = _nest({**space.fixed, **values})
    spec = build_spec(space.method, "ml-100k", **layers)
    assert spec.data["max_history"] == (50 if "50" in name else 20)
    json.dumps(spec.model_dump(mode="json"))


def test_cli_tune_end_to_end_on_ml100k(tmp_path):
    """`reasonrec tune` on ml-100k (embedded in the recbole wheel): two tiny SASRec trials, the table, the
    best config; collaborative SIDs keep data preparation short (SASRec does not use them)."""
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({**SPACE, "fixed": {**SPACE["fixed"], "method_config.epochs": 1,
                                                        "method_config.batch_size": 1024,
                                                        "data.sids.embedding": "collaborative"}}))
    env = {**os.environ, "REASONREC_CACHE": str(tmp_path / "cache"), "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([sys.executable, "-m", "bench.cli", "--threads", "1", "tune", "--method", "sasrec",
                           "--dataset", "ml-100k", "--space", str(space), "--trials", "2", "--out",
                           str(tmp_path / "tune"), "--no-progress"], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| trial | state | valid |" in proc.stdout and "best: trial" in proc.stdout
    (study,) = (tmp_path / "tune").iterdir()
    assert (study / "best.yaml").is_file() and (study / "study.db").is_file()
    assert len(list((study / "trials").iterdir())) == 2


def test_a_resumed_study_does_not_repeat_its_parameters(toy_env, tmp_path):
    """The sampler continues after a resume (seeded by the trials so far): the next trials' parameters
    are new, not the first trials' again (a fixed seed would replay them, and their cached runs)."""
    from bench.tune import tune

    space = _space(tmp_path, fixed={**SPACE["fixed"], "method_config.epochs": 1})
    first = tune("sasrec", "toy", space, tmp_path / "t", trials=2, progress=False, log=lambda *_: None)
    both = tune("sasrec", "toy", space, tmp_path / "t", trials=4, progress=False, log=lambda *_: None)
    lrs = [t["params"]["method_config.lr"] for t in both["trials"]]
    assert lrs[:2] == [t["params"]["method_config.lr"] for t in first["trials"]]
    assert len(set(lrs)) == 4


def test_start_points_run_first(toy_env, tmp_path):
    """``start`` trials run first with exactly their values (then the sampler's), once per study."""
    from bench.tune import tune

    point = {"method_config.lr": 0.004, "method_config.hidden_size": 16}
    space = _space(tmp_path, start=[point], fixed={**SPACE["fixed"], "method_config.epochs": 1})
    res = tune("sasrec", "toy", space, tmp_path / "t", trials=2, progress=False, log=lambda *_: None)
    assert res["trials"][0]["params"] == point and res["trials"][1]["params"] != point
    again = tune("sasrec", "toy", space, tmp_path / "t", trials=3, progress=False, log=lambda *_: None)
    assert [t["params"] == point for t in again["trials"]] == [True, False, False]


def test_a_space_without_start_points_keeps_its_study_name(tmp_path):
    """The ``start`` field came later: a space without it hashes as before (its study resumes)."""
    from bench.tune import load_space, study_name

    p = _space(tmp_path)
    assert study_name("sasrec", "toy", load_space(p), 0) == "sasrec-toy-s0-adf6c901"


def test_prune_after_holds_the_pruner_off_for_that_many_epochs(tmp_path):
    """Two finished trials score 0.5 at epochs 0-3; a third scores 0.1. With ``prune_after: 3`` it may not be
    pruned at epochs 0 and 1 and is pruned at epoch 2 (the default, 2, prunes at epoch 1). The setting is
    part of the study name only when it is not the default."""
    import optuna

    from bench.tune import load_space, make_pruner, study_name

    def pruned_at(space):
        study = optuna.create_study(direction="maximize", pruner=make_pruner(space))
        for _ in range(2):
            t = study.ask()
            for epoch in range(4):
                t.report(0.5, epoch)
            study.tell(t, 0.5)
        t = study.ask()
        for epoch in range(4):
            t.report(0.1, epoch)
            if t.should_prune():
                return epoch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    default = load_space(_space(tmp_path))
    (tmp_path / "b").mkdir()
    later = load_space(_space(tmp_path / "b", prune_after=3))
    assert pruned_at(default) == 1 and pruned_at(later) == 2
    assert study_name("sasrec", "toy", later, 0) != study_name("sasrec", "toy", default, 0)
