"""Issue 27's smaller findings, each reproduced as a new user met it: bad seeds, run folders left behind by
data errors, a k-core filter that silently drops most of a catalog, float item ids, private file modes,
`reasonrec evaluate` writing into its source, a text-field typo with the wrong hint, and a resumed run on
changed data."""
from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from bench import assets
from bench.cli import main
from bench.config import build_spec
from bench.runner import run


def _card(toy_env, tmp_path: Path, data: Path, name: str = "toy2", extra: str = "") -> Path:
    """A copy of the toy card named ``name`` reading ``data``."""
    text = (toy_env["cards"] / "toy.yaml").read_text()
    lines = [f"path: {data}" if line.startswith("path:") else f"name: {name}" if line.startswith("name:") else line
             for line in text.splitlines()]
    card = tmp_path / f"{name}.yaml"
    card.write_text("\n".join(lines) + "\n" + extra)
    return card


def _copy_toy(tmp_path: Path) -> Path:  # noqa: D103
    data = tmp_path / "data"
    shutil.copytree(assets.TOY_DIR, data)
    return data


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_a_seed_out_of_range_is_a_clean_error_and_leaves_no_folder(toy_env, tmp_path, capsys, seed):
    """numpy and torch take seeds 0 .. 2**32 - 1; before, -1 gave a numpy traceback and an orphan run folder."""
    out = tmp_path / "runs"
    assert main(["run", "--method", "pop", "--dataset", "toy", "--out", str(out), "--set", f"seed={seed}",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "seed" in err and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("breakage", ["malformed", "empty"])
def test_a_data_error_while_preparing_leaves_no_run_folder(toy_env, tmp_path, capsys, breakage):
    """Data errors are named cleanly; before, the run folder stayed behind (spec.json, run.log, error.txt,
    .lock), an orphan that looked like a run in progress."""
    data = _copy_toy(tmp_path)
    (data / "Toy.inter.json").write_text("{not json" if breakage == "malformed" else "{}")
    card = _card(toy_env, tmp_path, data)
    out = tmp_path / "runs"
    assert main(["run", "--method", "pop", "--dataset", str(card), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Toy.inter.json" in err or "no user" in err, err
    assert not out.exists() or list(out.iterdir()) == []


def test_a_run_that_trained_keeps_its_folder_when_it_fails_later(toy_env, tmp_path, monkeypatch):
    """Only a run that failed before training began is removed: one that started training keeps its
    checkpoints (it resumes)."""
    from bench.registry import REGISTRY

    cls = REGISTRY.get("pop")

    def boom(self, histories, k, **_):
        raise RuntimeError("ranking failed")

    monkeypatch.setattr(cls, "recommend", boom)
    spec = build_spec("pop", "toy")
    with pytest.raises(RuntimeError, match="ranking failed"):
        run(spec, tmp_path, progress=False, echo=False)
    assert (tmp_path / spec.run_id() / "attempts.json").is_file()
    assert "ranking failed" in (tmp_path / spec.run_id() / "error.txt").read_text()


def test_a_kcore_filter_that_drops_most_of_the_data_warns(toy_env, tmp_path):
    """A catalog k-core on users only, read with kcore 5: most items have < 5 users, the cascade empties
    it; before, 90% vanished without a word. Now a warning with the share kept and the setting to change,
    and the share in the data's stats."""
    from bench.data import prepare

    data = tmp_path / "data"
    data.mkdir()
    # 40 users x 6 items each, over 200 items: every user has >= 5 interactions, most items 1-2 users
    inter = {str(u): [(u * 5 + j) % 200 for j in range(6)] for u in range(40)}
    inter.update({str(40 + u): list(range(6)) for u in range(6)})  # a dense corner survives the filter
    (data / "Toy.inter.json").write_text(json.dumps(inter))
    (data / "Toy.item.json").write_text(json.dumps({str(i): {"title": f"t{i}", "categories": ["c"]}
                                                    for i in range(200)}))
    card = _card(toy_env, tmp_path, data, "sparse")
    logs: list[str] = []
    got = prepare(str(card), {"kcore": 5, "sids": {"embedding": "collaborative"}}, progress=False, log=logs.append)
    warned = [m for m in logs if m.startswith("warning") and "5-core" in m]
    assert warned and "data.kcore=0" in warned[0], logs
    assert got.stats["kcore_kept_share"] < 0.5
    logs.clear()
    full = prepare(str(card), {"kcore": 0, "sids": {"embedding": "collaborative"}}, progress=False, log=logs.append)
    assert full.stats["kcore_kept_share"] == 1.0 and not [m for m in logs if m.startswith("warning")]


def test_a_whole_float_item_id_is_the_integer_item(tmp_path):
    """Some JSON writers emit integer ids as 3112.0: the same item as 3112, not a new item "3112.0";
    a fractional id is refused."""
    from bench.loaders import DataError, _read_sequences

    path = tmp_path / "X.inter.json"
    path.write_text(json.dumps({"u1": [3112, 7.0, "9"], "u2": [3112.0]}))
    assert _read_sequences(path) == {"u1": ["3112", "7", "9"], "u2": ["3112"]}
    path.write_text(json.dumps({"u1": [3112.5]}))
    with pytest.raises(DataError, match="entry 1 is a float"):
        _read_sequences(path)


def test_written_files_and_folders_are_readable_by_others(tmp_path):
    """Results and the site are served by web servers running as another user: files 0644 and folders 0755
    under the usual umask (before: mkstemp's 0600 and mkdtemp's 0700)."""
    from bench.atomic import atomic_dir, atomic_write_json

    old = os.umask(0o022)
    try:
        import importlib

        import bench.atomic

        importlib.reload(bench.atomic)  # the module reads the umask once, at import
        f = bench.atomic.atomic_write_json(tmp_path / "result.json", {"a": 1})
        with bench.atomic.atomic_dir(tmp_path / "site") as d:
            (d / "index.html").write_text("x")
    finally:
        os.umask(old)
        importlib.reload(bench.atomic)
    assert stat.S_IMODE(f.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "site").stat().st_mode) == 0o755
    assert atomic_write_json and atomic_dir  # the names other modules imported still work


def test_evaluate_writes_nothing_into_its_source_and_is_labelled_after_its_change(toy_env, tmp_path, capsys):
    """`reasonrec evaluate` reloads the source's model: RecBole's dataset files went into the source's
    model/ folder; and the new run took the source's display name (two rows, one name)."""
    from bench.results import RunResult

    cfg = {"epochs": 1, "batch_size": 256}
    src = run(build_spec("sasrec", "toy", method_config=cfg, label="SASRec"), tmp_path, progress=False, echo=False)
    model = tmp_path / src.run_id / "model"
    before = sorted(p.relative_to(model) for p in model.rglob("*"))
    assert main(["evaluate", str(tmp_path / src.run_id), "--set", "eval.beam_width=20", "--no-progress"]) == 0
    assert sorted(p.relative_to(model) for p in model.rglob("*")) == before
    new = [RunResult.from_disk(p) for p in tmp_path.glob("*/result.json") if p.parent.name != src.run_id]
    assert [r.spec.label for r in new] == ["SASRec (eval.beam_width=20)"]


def test_a_text_field_typo_names_the_field_not_a_missing_text(toy_env, tmp_path):
    """`text_fields: [titel]`: the items have text under another name. Before, the hint was "no item text:
    use sids.embedding=attributes"; now the field, the fields present and a close match."""
    from bench.data import prepare
    from bench.loaders import DataError

    card = _card(toy_env, tmp_path, assets.TOY_DIR, "typo")
    card.write_text(card.read_text().replace("text_fields: [title, categories]", "text_fields: [titel]"))
    assert "titel" in card.read_text()
    with pytest.raises(DataError, match=r"'titel'.*did you mean 'title'"):
        prepare(str(card), progress=False, log=lambda *_: None)


def test_an_unfinished_run_on_changed_data_starts_over(toy_env, tmp_path, monkeypatch):
    """A run folder records the data it trains on (data.json); an unfinished run found with another data
    fingerprint under the same run id (the files are the same, the data code changed) removes its checkpoints
    instead of resuming epochs made on the other data. (Changed files are another run id altogether:
    tests/test_runner.py::test_other_data_files_are_another_run.)"""
    import bench.data
    from bench.rundir import DATA_FILE

    spec = build_spec("pop", "toy")
    res = run(spec, tmp_path / "runs", progress=False, echo=False)
    folder = tmp_path / "runs" / res.run_id
    recorded = json.loads((folder / DATA_FILE).read_text())["fingerprint"]
    assert recorded == res.data["fingerprint"]
    # an interrupted attempt: no result, a checkpoint left; then the data code changes
    (folder / "result.json").unlink()
    (folder / "checkpoints").mkdir(exist_ok=True)
    (folder / "checkpoints" / "epoch.pt").write_text("old")
    monkeypatch.setattr(bench.data, "FORMAT_VERSION", bench.data.FORMAT_VERSION + 1)
    again = run(spec, tmp_path / "runs", progress=False, echo=False)
    assert again.run_id == res.run_id and again.data["fingerprint"] != recorded
    assert not (folder / "checkpoints" / "epoch.pt").exists()
    assert json.loads((folder / DATA_FILE).read_text())["fingerprint"] == again.data["fingerprint"]
    assert "removing" in (folder / "run.log").read_text()


def test_no_loading_weights_bar_when_a_named_backbone_loads(tmp_path, capfd):
    """A backbone given by name or path loads without transformers' "Loading weights" bar (a line of noise
    in every log, even with --no-progress)."""
    from bench.generative.backbone import BackboneConfig, build_backbone

    bb = build_backbone(BackboneConfig(preset="tiny"), sid_tokens=["<a_0>", "<a_1>"], levels=1, codebook_size=2,
                        corpus=["a b c"])
    bb.save(tmp_path / "bb")
    capfd.readouterr()
    build_backbone(BackboneConfig(name_or_path=str(tmp_path / "bb")), sid_tokens=["<a_0>", "<a_1>"], levels=1,
                   codebook_size=2)
    out = capfd.readouterr()
    assert "Loading weights" not in out.out + out.err


@pytest.mark.parametrize("method,phases", [("minionerec", {"sft", "grpo"}), ("sasrec", {"train"})])
def test_tracking_with_tensorboard_writes_every_phases_curves(method, phases, toy_env, tmp_path, monkeypatch):
    """`--set tracking.log_with=tensorboard`: an event file under <run>/tracking with each phase's per-epoch
    train loss and validation score (accelerate's TensorBoard tracker); tracking is not part of the run id."""
    monkeypatch.setenv("REASONREC_CACHE", str(tmp_path / "cache"))  # every phase trains here (no stage reused)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from bench.registry import REGISTRY

    cfg = REGISTRY.get(method).smoke_config
    spec = build_spec(method, "toy", method_config=cfg, tracking={"log_with": "tensorboard"})
    assert spec.run_id() == build_spec(method, "toy", method_config=cfg).run_id()
    res = run(spec, tmp_path, progress=False, echo=False)
    events = list((tmp_path / res.run_id / "tracking").rglob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for phase in phases:
        assert any(t.startswith(f"{phase}/") and "loss" in t for t in tags), tags
        assert f"{phase}/valid_score" in tags, tags
