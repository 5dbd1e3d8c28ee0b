import json
import os
from pathlib import Path

import numpy as np
import pytest

from bench.method import Method, MethodConfig, MethodInfo, Recommendations
from bench.registry import REGISTRY
from bench.metrics import metric_names
from bench.results import RunResult
from bench.runner import build_spec, run
from bench.suites import run_suite
from bench.specs import SpecError, SuiteSpec


def _quiet(spec, out, **kw):
    return run(spec, out, progress=False, echo=False, **kw)


def _generative(name):
    from bench.generative.method import GenerativeMethod

    return issubclass(REGISTRY.get(name), GenerativeMethod)  # has prompt styles (rearec, family latent, has not)


SMOKE_CASES = [(n, None) for n in REGISTRY.names()] + [(n, s) for n in REGISTRY.names() if _generative(n)
                                                       for s in ("compact", "paper")]


#: every registered method's toy metrics and run id at its smoke budget, pinned so that a refactor that must
#: preserve behaviour (the phase pipeline, one epoch loop) shows any change. A metric moves by >= 1/(40 log2 21)
#: when one toy user's rank changes, so 1e-6 tells a changed ranking from float noise. Regenerate, after a
#: change that is meant to move them, with REASONREC_UPDATE_PINS=1 and say why in the commit.
PINS = Path(__file__).parent / "toy_metrics.json"


def _check_pin(key: str, run_id: str, metrics: dict) -> None:
    pins = json.loads(PINS.read_text()) if PINS.is_file() else {}
    if os.environ.get("REASONREC_UPDATE_PINS"):
        pins[key] = {"run_id": run_id, "metrics": metrics}
        PINS.write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n")
        return
    assert key in pins, f"no pinned toy metrics for {key}: run with REASONREC_UPDATE_PINS=1"
    assert run_id == pins[key]["run_id"], f"{key}: the run id changed"
    for m, v in pins[key]["metrics"].items():
        assert metrics[m] == pytest.approx(v, abs=1e-6), f"{key}: {m} {metrics[m]:.6f}, pinned {v:.6f}"


@pytest.mark.parametrize("name,style", SMOKE_CASES)
def test_every_registered_method_trains_and_ranks(name, style, toy_env, tmp_path):
    cls = REGISTRY.get(name)
    cfg = dict(cls.smoke_config, **({"prompt_style": style} if style else {}))
    spec = build_spec(name, "toy", method_config=cfg)
    res = _quiet(spec, tmp_path)
    if style:
        assert res.method_facts["prompt_style"] == style and res.training.model_extra["prompt_style"] == style
    assert set(metric_names(spec.eval.ks)) == set(res.metrics)
    assert all(0.0 <= v <= 1.0 for v in res.metrics.values())
    assert res.evaluation["invalid_items"] == 0
    assert res.latency.n_samples == res.data["stats"]["users"] and res.latency.seconds_per_sample > 0
    run_dir = tmp_path / spec.run_id()
    assert json.loads((run_dir / "spec.json").read_text())["method"] == name
    per_user = json.loads((run_dir / "per_user.json").read_text())
    assert len(per_user["ranks"]) == res.latency.n_samples
    assert RunResult.from_disk(run_dir / "result.json").metrics == res.metrics
    _check_pin(f"{name}/{style or 'default'}", spec.run_id(), res.metrics)


@pytest.mark.parametrize("name", REGISTRY.names())
def test_every_registered_method_saves_and_loads(name, toy_env, toy_data, tmp_path):
    """A fitted method written with save() and read back by a fresh instance with load() ranks alike."""
    from bench.method import FitContext
    from bench.runner import set_seed

    cls = REGISTRY.get(name)
    cfg = cls.Config(**cls.smoke_config)
    set_seed(0)
    (tmp_path / "fit").mkdir()
    fitted = cls(cfg)
    fitted.fit(toy_data, valid=toy_data.split("valid"), ctx=FitContext(workdir=tmp_path / "fit", seed=3,
                                                                       progress=False, log=lambda *_: None))
    (tmp_path / "saved").mkdir()
    fitted.save(tmp_path / "saved")
    histories = toy_data.split("test").histories[:6]
    want = fitted.recommend(histories, k=5).items
    loaded = cls(cfg)
    loaded.load(tmp_path / "saved", toy_data)
    got = loaded.recommend(histories, k=5).items
    if name == "random":  # a loaded ranker restarts from its seed: equal to a freshly fitted one
        again = cls(cfg)
        again.fit(toy_data, valid=None, ctx=FitContext(workdir=tmp_path / "again", seed=3, progress=False))
        want = again.recommend(histories, k=5).items
    assert np.array_equal(got, want)


def test_sequential_models_beat_random(toy_env, tmp_path):
    got = {m: _quiet(build_spec(m, "toy", method_config=cfg), tmp_path).metrics["HR@5"]
           for m, cfg in [("random", {}), ("gru4rec", {"epochs": 8, "batch_size": 64, "lr": 5e-3})]}
    assert got["gru4rec"] > got["random"] + 0.15, got


@pytest.mark.parametrize("name", ["random", "gru4rec"])
def test_same_seed_same_metrics(name, toy_env, tmp_path):
    cfg = REGISTRY.get(name).smoke_config
    a = _quiet(build_spec(name, "toy", method_config=cfg), tmp_path / "a")
    b = _quiet(build_spec(name, "toy", method_config=cfg), tmp_path / "b")
    assert a.metrics == b.metrics and a.run_id == b.run_id


def test_run_id_is_deterministic_and_config_sensitive():
    a = build_spec("pop", "toy")
    assert a.run_id() == build_spec("pop", "toy").run_id()
    assert a.run_id() != build_spec("pop", "toy", seed=1).run_id()
    assert a.run_id() == build_spec("pop", "toy", threads=1).run_id()  # threads do not change results


def test_spec_errors_name_the_key(tmp_path):
    with pytest.raises(SpecError, match="unknown key 'method_config.epoch'; did you mean 'epochs'"):
        build_spec("sasrec", "toy", sets=["method_config.epoch=3"])
    with pytest.raises(SpecError, match="unknown key 'evaluation'"):
        build_spec("pop", "toy", sets=["evaluation.ks=[5]"])
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method_config: {lr: -1}\n")
    with pytest.raises(SpecError, match=r"lr: .*greater than 0"):
        build_spec("sasrec", "toy", config_file=str(cfg))
    with pytest.raises(SpecError, match="config file not found"):
        build_spec("pop", "toy", config_file=str(tmp_path / "missing.yaml"))


def test_defaults_file_cli_precedence(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("seed: 3\nmethod_config: {epochs: 4, lr: 0.01}\neval: {max_users: 10}\n")
    spec = build_spec("sasrec", "toy", config_file=str(cfg), sets=["method_config.epochs=7", "eval.ks=[1, 5]"])
    assert spec.seed == 3 and spec.method_config["epochs"] == 7 and spec.method_config["lr"] == 0.01
    assert spec.method_config["patience"] == REGISTRY.get("sasrec").Config().patience  # defaults filled in
    assert spec.eval.max_users == 10 and spec.eval.ks == (1, 5)


class Flaky(Method):
    """Fails in fit unless its checkpoint from an earlier attempt exists (a crash mid-training)."""

    info = MethodInfo(name="flaky", family="baseline")

    class Config(MethodConfig):
        pass

    def fit(self, data, *, valid, ctx):
        ckpt = ctx.workdir / "half.txt"
        if not ckpt.exists():
            ckpt.write_text("epoch 1 done")
            raise RuntimeError("simulated crash")
        self.n = data.n_items
        return {"resumed_from": ckpt.read_text()}

    def recommend(self, histories, *, k):
        return Recommendations(np.tile(np.arange(min(k, self.n)), (len(histories), 1)))


@pytest.fixture
def flaky():
    REGISTRY.register()(Flaky)
    yield
    REGISTRY.unregister("flaky")


def test_suite_resumes_after_interruption(toy_env, tmp_path, flaky):
    suite = SuiteSpec(methods=["pop", "flaky", "random"], datasets=["toy"], seeds=[0], out=str(tmp_path))
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_suite(suite, progress=False, echo=False)
    dirs = {p.name.split("-")[0]: p for p in tmp_path.iterdir()}
    assert (dirs["pop"] / "result.json").is_file()
    assert not (dirs["flaky"] / "result.json").exists(), "an interrupted run must not look complete"
    assert (dirs["flaky"] / "error.txt").is_file() and "random" not in dirs
    pop_mtime = (dirs["pop"] / "result.json").stat().st_mtime_ns
    results = run_suite(suite, progress=False, echo=False)
    assert [r.spec.method for r in results] == ["pop", "flaky", "random"]
    assert (dirs["pop"] / "result.json").stat().st_mtime_ns == pop_mtime  # skipped, not rerun
    assert results[1].training.model_extra["resumed_from"] == "epoch 1 done"
    assert not (dirs["flaky"] / "error.txt").exists()


def test_suite_validates_everything_before_running(toy_env, tmp_path):
    suite = SuiteSpec(methods=["pop", SuiteSpec.Entry(method="sasrec", method_config={"epoch": 1})],
                      datasets=["toy"], out=str(tmp_path))
    with pytest.raises(SpecError, match="epoch"):
        run_suite(suite, progress=False, echo=False)
    assert not any(tmp_path.iterdir())


def test_recbole_training_resumes_from_last_epoch(toy_env, toy_data, tmp_path):
    from bench.method import FitContext

    cls = REGISTRY.get("gru4rec")
    ctx = FitContext(workdir=tmp_path, progress=False, log=lambda *_: None)
    first = cls(cls.Config(epochs=1, batch_size=64)).fit(toy_data, valid=toy_data.split("valid"), ctx=ctx)
    logs = []
    ctx.log = logs.append
    second = cls(cls.Config(epochs=3, batch_size=64)).fit(toy_data, valid=toy_data.split("valid"), ctx=ctx)
    assert any("resumed gru4rec at epoch 1" in m for m in logs)
    assert [h["epoch"] for h in second["history"]][:1] == [0] and second["history"][0] == first["history"][0]
    assert len(second["history"]) == 3


def test_exclude_history_applies_to_every_method(toy_env, tmp_path):
    spec = build_spec("pop", "toy", sets=["eval.exclude_history=true"])
    res = _quiet(spec, tmp_path)
    assert res.evaluation["exclude_history"] is True
    per_user = json.loads((tmp_path / spec.run_id() / "per_user.json").read_text())
    assert len(per_user["ranks"]) == res.latency.n_samples


def test_relative_out_dir_survives_chdir(toy_env, tmp_path, monkeypatch):
    """RecBole chdirs into the checkpoint folder: logs and best weights must still land in the run dir."""
    monkeypatch.chdir(tmp_path)
    spec = build_spec("gru4rec", "toy", method_config={"epochs": 2, "batch_size": 64})
    res = _quiet(spec, "rel_runs")
    run_dir = tmp_path / "rel_runs" / spec.run_id()
    log = (run_dir / "run.log").read_text()
    assert "epoch 1:" in log and "test metrics" in log
    assert (run_dir / "checkpoints" / "best.pth").is_file()
    assert not list((run_dir / "checkpoints").rglob("run.log"))
    assert res.training.model_extra["epochs_run"] == 2


def test_a_run_in_progress_elsewhere_is_not_entered(toy_env, tmp_path):
    import subprocess
    import sys

    from bench.rundir import RunInProgress

    spec = build_spec("pop", "toy")
    run_dir = tmp_path / spec.run_id()
    run_dir.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
        "f.write(str(os.getpid())); f.flush(); print('locked', flush=True); time.sleep(30)"), str(run_dir / ".lock")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunInProgress, match=f"pid {holder.pid}"):
            _quiet(spec, tmp_path)
        suite = SuiteSpec(methods=["pop", "random"], datasets=["toy"], out=str(tmp_path))
        results = run_suite(suite, progress=False, echo=False)
        assert [r.spec.method for r in results] == ["random"] and not (run_dir / "result.json").exists()
    finally:
        holder.kill()
        holder.wait()
    assert _quiet(spec, tmp_path).spec.method == "pop"  # lock released with the process


def test_recbole_run_ended_by_early_stopping_trains_no_more(toy_env, toy_data, tmp_path, monkeypatch):
    from bench.method import FitContext

    # never improves after epoch 0
    monkeypatch.setattr(FitContext, "validate", lambda self, *a, **k: {"NDCG@10": 0.5, "HR@10": 0.5, "users": 1,
                                                                         "score": 0.5})
    cls = REGISTRY.get("gru4rec")
    ctx = FitContext(workdir=tmp_path, progress=False, log=lambda *_: None)
    first = cls(cls.Config(epochs=10, patience=2, batch_size=64)).fit(toy_data, valid=toy_data.split("valid"), ctx=ctx)
    assert first["stopped_by"] == "early_stopping" and len(first["history"]) == 3
    logs = []
    ctx.log = logs.append
    again = cls(cls.Config(epochs=10, patience=2, batch_size=64)).fit(toy_data, valid=toy_data.split("valid"), ctx=ctx)
    assert again["stopped_by"] == "early_stopping" and again["history"] == first["history"]  # no epoch added
    assert any("training had ended (early_stopping)" in m for m in logs)


@pytest.mark.parametrize("name", ["gru4rec", "minionerec"])
def test_reevaluate_reuses_the_trained_model(name, toy_env, tmp_path):
    from bench.reevaluate import reevaluate

    cls = REGISTRY.get(name)
    spec = build_spec(name, "toy", method_config=cls.smoke_config, sets=["eval.max_users=10"])
    first = _quiet(spec, tmp_path)
    full = reevaluate(tmp_path / spec.run_id(), ["eval.max_users=null", "label=full"], progress=False, echo=False)
    assert full.run_id != first.run_id and full.spec.eval.max_users is None and full.spec.label == "full"
    assert full.spec.method_config == first.spec.method_config
    facts = full.training.model_dump()
    assert facts["trained_in"] == first.run_id and full.training.seconds == first.training.seconds
    assert full.latency.n_samples == full.data["stats"]["users"] > first.latency.n_samples
    # the same trained model: the 10 users of the first evaluation get the same ranks again
    a = json.loads((tmp_path / first.run_id / "per_user.json").read_text())
    b = json.loads((tmp_path / full.run_id / "per_user.json").read_text())
    rank_b = dict(zip(b["users"], b["ranks"]))
    assert [rank_b[u] for u in a["users"]] == a["ranks"]
    log = (tmp_path / full.run_id / "run.log").read_text()
    assert f"loaded the model trained in {first.run_id}" in log and "(no training)" in log
    assert "epoch 0:" not in log and "epoch 1/" not in log and "trained in" not in log.replace("model trained in", "")
    assert not (tmp_path / full.run_id / "checkpoints").exists()  # nothing was fitted


def test_reevaluate_refuses_what_needs_training(toy_env, tmp_path):
    from bench.reevaluate import reevaluate

    spec = build_spec("pop", "toy", sets=["eval.max_users=10"])
    _quiet(spec, tmp_path)
    src = tmp_path / spec.run_id()
    with pytest.raises(SpecError, match="method_config.epochs"):
        reevaluate(src, ["method_config.epochs=3"], progress=False, echo=False)
    with pytest.raises(SpecError, match="evaluation settings of"):
        reevaluate(src, ["eval.max_users=10"], progress=False, echo=False)
    with pytest.raises(SpecError, match="max_userz"):
        reevaluate(src, ["eval.max_userz=5"], progress=False, echo=False)
    (src / "result.json").unlink()
    with pytest.raises(SpecError, match="not a complete run"):
        reevaluate(src, ["eval.max_users=null"], progress=False, echo=False)


def test_recbole_import_leaves_autograd_anomaly_mode_off(toy_env, toy_data, tmp_path):
    """RecBole's sine.py switches anomaly detection on for the whole process when its models are
    imported; the wrapper switches it off again (it slowed every later backward pass ~2.4x)."""
    import torch

    cls = REGISTRY.get("gru4rec")
    m = cls(cls.Config(**cls.smoke_config))
    m._build(toy_data, tmp_path, 0)
    import recbole.model.sequential_recommender.sine  # noqa: F401  (the module that turns it on)
    assert not torch.is_anomaly_enabled()


def test_committed_rows_keep_their_run_ids():
    """A setting added later (at its old behaviour's value) does not change the ids of committed rows:
    each recent committed row's spec resolves to its folder's run id. (The first Beauty baseline rows predate
    data settings added since; they reproduce at their own commits.)"""
    import json
    from pathlib import Path

    from bench.config import resolve_spec

    root = Path(__file__).parent.parent / "leaderboard" / "results"
    folders = [f for f in sorted(root.glob("*/*")) if (f / "spec.json").is_file()
               and (f.parent.name == "ml-100k" or f.name.startswith(("lasar-", "gream-", "tgh-", "tiger-")))]
    assert any(f.name.startswith("sasrec-ml-100k") for f in folders) and len(folders) >= 15
    for f in folders:
        spec = resolve_spec(json.loads((f / "spec.json").read_text()), check_files=False)
        assert spec.run_id() == f.name, f


def test_suite_worker_exits_when_the_suite_process_is_killed(tmp_path):
    """A parallel suite's worker watches its parent: killing the suite process (not its process group)
    must not leave the run training on as an orphan."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    child = ("import os, time\nfrom bench.suites import _exit_with_parent\n"
             "_exit_with_parent(os.getppid(), every=0.1)\nprint('ready', flush=True)\ntime.sleep(60)\n")
    parent = ("import subprocess, sys, time\n"
              f"p = subprocess.Popen([sys.executable, '-c', {child!r}], stdout=subprocess.PIPE, text=True)\n"
              "p.stdout.readline()\nprint(p.pid, flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    worker = int(proc.stdout.readline())

    def alive(pid):
        try:
            return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return False

    assert alive(worker)
    proc.kill()
    proc.wait()
    deadline = time.time() + 15
    while alive(worker) and time.time() < deadline:
        time.sleep(0.1)
    assert not alive(worker)


def test_other_data_files_are_another_run(toy_env, tmp_path, monkeypatch):
    """The run id sees the data files (issue 27 item 2): a truncated copy behind --dataset-path, or an edit in
    place, is another run id, trained on those files (before, the old result came back with exit 0 in seconds,
    the files never read); an identical copy is the same run; the card's own files keep the ids made before
    the data entered them (the pinned toy ids). A finished run whose data code changed (same files, another
    data fingerprint) is refused, naming both."""
    import shutil

    from bench import assets

    spec = build_spec("pop", "toy")
    first = _quiet(spec, tmp_path / "runs")
    assert run(spec, tmp_path / "runs", progress=False, echo=False).metrics == first.metrics  # same data: returned
    copy = tmp_path / "copy"
    shutil.copytree(assets.TOY_DIR, copy)
    assert run(spec, tmp_path / "runs", dataset_path=str(copy), progress=False, echo=False).run_id == first.run_id
    inter = json.loads((copy / "Toy.inter.json").read_text())
    (copy / "Toy.inter.json").write_text(json.dumps(dict(list(inter.items())[:-1])))  # one user fewer, in place
    other = run(spec, tmp_path / "runs", dataset_path=str(copy), progress=False, echo=False)
    assert other.run_id != first.run_id and other.data["fingerprint"] != first.data["fingerprint"]
    assert other.data["stats"]["users"] == first.data["stats"]["users"] - 1
    assert RunResult.from_disk(tmp_path / "runs" / first.run_id / "result.json").metrics == first.metrics
    import bench.data

    monkeypatch.setattr(bench.data, "FORMAT_VERSION", bench.data.FORMAT_VERSION + 1)  # the data code changed
    with pytest.raises(SpecError, match=f"was made on data {first.data['fingerprint']}"):
        run(spec, tmp_path / "runs", progress=False, echo=False)


def test_a_new_label_on_a_finished_run_is_taken(toy_env, tmp_path, capsys):
    """``--set label=...`` on a finished run relabels it (the label is no number and not in the run id);
    before, the old label stayed and the CLI had no way to rename a row."""
    from bench.cli import main

    first = _quiet(build_spec("pop", "toy"), tmp_path)
    assert first.spec.label is None
    assert main(["run", "--method", "pop", "--dataset", "toy", "--out", str(tmp_path), "--set", "label=Popularity",
                 "--no-progress"]) == 0
    res = RunResult.from_disk(tmp_path / first.run_id / "result.json")
    assert res.spec.label == "Popularity" and res.metrics == first.metrics and res.run_id == first.run_id
    assert json.loads((tmp_path / first.run_id / "spec.json").read_text())["label"] == "Popularity"
    assert "label=" in res.method_facts["row"]["command"] and "Popularity" in res.method_facts["row"]["command"]
    assert "label None -> 'Popularity'" in capsys.readouterr().out
