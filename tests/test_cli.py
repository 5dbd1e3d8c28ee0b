import json
import subprocess
import sys

import pytest

from bench.cli import main


def test_cli_end_to_end(toy_env, tmp_path, capsys):
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    assert "sasrec" in out and "traditional" in out and "toy" in out and "ml-100k" in out

    assert main(["prepare", "--dataset", "toy", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "collisions before resolution" in out and "codebook usage" in out and "users" in out

    other = tmp_path / "other"
    assert main(["run", "--method", "pop", "--dataset", "toy", "--out", str(other), "--no-progress",
                 "--set", "eval.batch_size=7"]) == 0
    (run_dir,) = list(other.iterdir())
    result = json.loads((run_dir / "result.json").read_text())
    assert result["spec"]["eval"]["batch_size"] == 7 and result["latency"]["batch_size"] == 7

    runs = tmp_path / "runs"
    assert main(["run", "--method", "pop", "--dataset", "toy", "--out", str(runs), "--no-progress"]) == 0

    suite = tmp_path / "suite.yaml"
    suite.write_text(f"methods: [pop, {{method: random, label: Random ranker}}]\ndatasets: [toy]\nseeds: [0, 1]\n"
                     f"out: {runs}\n")
    assert main(["suite", str(suite), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "4 runs complete" in out
    table = out.split("4 runs complete")[1].strip().splitlines()  # the closing results table: header, rule, 4 runs
    assert table[0].split()[:4] == ["method", "dataset", "seed", "NDCG@10"] and len(table) == 6
    assert sum("Random ranker" in line for line in table) == 2 and sum(line.startswith("pop ") for line in table) == 2
    assert len(list(runs.glob("*/result.json"))) == 4  # pop seed 0 was reused, not duplicated

    # --allow-dirty: the checkout under test may have uncommitted changes (a clean clone in CI)
    assert main(["export", "--runs", str(runs), "--to", str(tmp_path / "exported"), "--allow-dirty"]) == 0
    exported = sorted((tmp_path / "exported" / "toy").glob("*/result.json"))
    assert len(exported) == 4 and not list((tmp_path / "exported").rglob("checkpoints"))
    # a run made from a dirty checkout is refused by name; an empty folder is an error
    one = sorted(runs.rglob("result.json"))[0]
    data = json.loads(one.read_text())
    data["environment"]["git_commit"] = "abc123-dirty"
    one.write_text(json.dumps(data))
    assert main(["export", "--runs", str(runs), "--to", str(tmp_path / "again")]) == 2
    assert data["run_id"] in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["export", "--runs", str(tmp_path / "empty"), "--to", str(tmp_path / "again")]) == 2
    assert "no complete run" in capsys.readouterr().err

    site = tmp_path / "site"
    assert main(["leaderboard", "--runs", str(runs), "--out", str(site)]) == 0
    html = (site / "index.html").read_text()
    assert "Random ranker" in html and "Table 1" in html and "±" in html  # two seeds -> mean ± std


def test_cli_errors_exit_2_and_name_the_culprit(toy_env, tmp_path, capsys):
    assert main(["run", "--method", "sasrc", "--dataset", "toy"]) == 2
    assert "unknown method 'sasrc'; did you mean 'sasrec'" in capsys.readouterr().err
    assert main(["run", "--method", "pop", "--dataset", "toyy"]) == 2
    assert "unknown dataset 'toyy'; did you mean 'toy'" in capsys.readouterr().err
    assert main(["run", "--method", "pop", "--dataset", "toy", "--set", "seeed=1", "--out", str(tmp_path)]) == 2
    assert "unknown key 'seeed'; did you mean 'seed'" in capsys.readouterr().err
    assert main(["run", "--method", "pop", "--dataset", "toy", "--set", "novalue"]) == 2
    assert not any(tmp_path.iterdir())


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "bench.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "demo" in out.stdout and "leaderboard" in out.stdout


def test_cli_evaluate_reuses_a_finished_run(toy_env, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["run", "--method", "pop", "--dataset", "toy", "--out", str(runs), "--no-progress",
                 "--set", "eval.max_users=5"]) == 0
    (src,) = list(runs.iterdir())
    capsys.readouterr()
    assert main(["evaluate", str(src), "--set", "eval.max_users=null", "--no-progress"]) == 0
    assert f"trained in {src.name}" in capsys.readouterr().out
    assert len(list(runs.glob("*/result.json"))) == 2
    assert main(["evaluate", str(src), "--set", "seed=3"]) == 2
    assert "evaluation settings only" in capsys.readouterr().err


def test_parallel_suite_equals_the_sequential_one_and_names_failures(toy_env, tmp_path, capfd):
    from bench.registry import REGISTRY
    from bench.suites import SuiteFailed, run_suite
    from bench.specs import SuiteSpec

    suite = SuiteSpec(methods=["pop", "random"], datasets=["toy"], seeds=[0, 1])
    seq = run_suite(suite, tmp_path / "seq", progress=False, echo=False)
    par = run_suite(suite, tmp_path / "par", progress=False, jobs=2)
    assert [r.run_id for r in par] == [r.run_id for r in seq]
    assert [r.metrics for r in par] == [r.metrics for r in seq]
    out = capfd.readouterr().out
    assert "4 to run, 2 at a time" in out
    # each worker's log lines reach the suite's output named after its run (a long run is never silent)
    assert "  pop: " in out and "  random: " in out and "starting run pop-toy-s1-" in out
    # a worker runs several runs (4 runs, 2 workers): each line carries its own run's name once, not the names of
    # the runs that worker ran before ("  pop:   random: ...")
    assert all(line.count("pop: ") + line.count("random: ") <= 1 for line in out.splitlines()), out
    # a run that fails (a diverging lr) is named after the others finished; the others are complete
    bad = {**REGISTRY.get("minionerec").smoke_config, "sft": {"epochs": 1, "batch_size": 16, "lr": 1e10},
           "reuse_sft": False}
    failing = SuiteSpec(methods=[SuiteSpec.Entry(method="minionerec", method_config=bad), "pop"], datasets=["toy"])
    with pytest.raises(SuiteFailed, match=r"1 run\(s\) failed: minionerec-toy-s0-\w+ \(TrainingDiverged"):
        run_suite(failing, tmp_path / "fail", progress=False, echo=False, jobs=2)
    assert len(list((tmp_path / "fail").glob("pop-*/result.json"))) == 1


def test_text_table_aligns_columns_under_a_rule():
    """The terminal tables (``run``/``suite`` results, ``suite --plan``): each column as wide as its widest cell,
    two spaces between columns, the named columns right-aligned, no trailing spaces (hand-written expectation)."""
    from bench.report import text_table

    table = text_table(["run", "seed", "NDCG@10"], [["pop-x", "0", "0.0053"], ["lasar-long-id", "12", "0.1"]],
                       right={"seed", "NDCG@10"})
    assert table.splitlines() == ["run            seed  NDCG@10",
                                  "-------------  ----  -------",
                                  "pop-x             0   0.0053",
                                  "lasar-long-id    12      0.1"]
    assert text_table(["a", "b"], [["x", ""]]).splitlines()[-1] == "x"  # a blank last cell leaves no padding


def test_suite_runs_only_the_rows_and_seeds_asked_for_and_skips_committed_runs(toy_env, tmp_path, capsys):
    """``reasonrec suite FILE --only ROW --seed N --results DIR``: a subset of a suite under the suite's own run ids
    (no hand-written subset file), runs already committed in DIR not run again; ``--plan`` says which is which."""
    import shutil

    from bench.config import suite_specs
    from bench.specs import SpecError, SuiteSpec
    from bench.suites import select_specs

    suite = SuiteSpec(methods=[SuiteSpec.Entry(method="pop", label="pop"),
                               SuiteSpec.Entry(method="random", label="coin", seeds=[0, 1, 2]),
                               SuiteSpec.Entry(method="random", label="dice", method_config={}, seeds=[5])],
                      datasets=["toy"], seeds=[0])
    specs = suite_specs(suite)
    ids = {(s.label, s.seed): s.run_id() for s in specs}
    assert [(s.label, s.seed) for s in select_specs(specs, only=["coin"], seeds=[2, 0])] == [("coin", 0), ("coin", 2)]
    assert [s.label for s in select_specs(specs, only=["random"])] == ["coin"] * 3 + ["dice"]  # a method: its rows
    assert [s.run_id() for s in select_specs(specs, seeds=[1])] == [ids["coin", 1]]  # the suite's ids, unchanged
    with pytest.raises(SpecError, match=r"--only 'cion'.*rows: 'pop', 'coin', 'dice'; did you mean 'coin'\?"):
        select_specs(specs, only=["cion"])
    with pytest.raises(SpecError, match=r"--seed 1: the selected rows have seeds 0 only"):
        select_specs(specs, only=["pop"], seeds=[1])

    path = tmp_path / "suite.yaml"
    import yaml

    path.write_text(yaml.safe_dump(suite.model_dump(mode="json")))
    runs, results = tmp_path / "runs", tmp_path / "results"
    assert main(["suite", str(path), "--out", str(runs), "--only", "coin", "--seed", "1", "--no-progress"]) == 0
    assert sorted(d.name for d in runs.iterdir()) == [ids["coin", 1]]  # nothing else ran
    # commit it the way `reasonrec export` lays results out (<dataset>/<run id>), then start afresh
    shutil.copytree(runs / ids["coin", 1], results / "toy" / ids["coin", 1])
    shutil.rmtree(runs)
    (runs / ids["coin", 2]).mkdir(parents=True)  # a run that started and stopped
    capsys.readouterr()
    assert main(["suite", str(path), "--out", str(runs), "--results", str(results), "--only", "coin", "--plan"]) == 0
    plan = capsys.readouterr().out
    states = {line.split()[-1]: line.split()[0] for line in plan.splitlines()[2:-1]}
    assert states == {ids["coin", 0]: "new", ids["coin", 1]: "committed", ids["coin", 2]: "resume"}, plan
    assert plan.splitlines()[-1] == f"3 runs: 1 committed in {results}, 1 to resume, 1 to run"
    assert not (runs / ids["coin", 0]).exists()  # --plan runs nothing
    assert main(["suite", str(path), "--out", str(runs), "--results", str(tmp_path / "resluts"), "--plan"]) == 2
    assert "--results: folder not found" in capsys.readouterr().err
    assert main(["suite", str(path), "--out", str(runs), "--results", str(results), "--only", "coin",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"{ids['coin', 1]} (committed)" in out and "3 runs complete" in out
    assert not (runs / ids["coin", 1]).exists()  # the committed run was not run again
    assert all((runs / ids["coin", s] / "result.json").is_file() for s in (0, 2))
    # the same with worker processes
    shutil.rmtree(runs)
    capsys.readouterr()
    assert main(["suite", str(path), "--out", str(runs), "--results", str(results), "--only", "coin",
                 "--jobs", "2"]) == 0
    assert not (runs / ids["coin", 1]).exists() and "3 runs complete" in capsys.readouterr().out


def test_a_workers_output_reaches_the_suite_as_whole_prefixed_lines():
    """Workers and the suite share one output: a line written in pieces (``print(a, b)`` is several writes) must
    not be passed on in pieces, or another process's line lands in the middle of it (seen in the demo)."""
    from bench.suites import _Prefixed

    class Recorder:
        def __init__(self):
            self.writes, self.flushes = [], 0

        def write(self, text):
            self.writes.append(text)

        def flush(self):
            self.flushes += 1

    rec = Recorder()
    out = _Prefixed(rec, "  a: ")
    out.write("epoch 0:")
    out.write(" loss 1.0")
    assert rec.writes == []  # nothing until the line is complete
    out.write("\nepoch 1\nepoch")
    assert rec.writes == ["  a: epoch 0: loss 1.0\n  a: epoch 1\n"] and rec.flushes == 1
    out.close_line()
    assert rec.writes[-1] == "  a: epoch\n"
    out.close_line()
    assert len(rec.writes) == 2


def test_run_demo_starts_from_the_demo_rows_budget(capsys):
    """``reasonrec run --method M --dataset ml-100k --demo [ROW]`` is the demo's run for that row (same run id,
    so `--set` on top reproduces the demo budget sweeps); a wrong row is refused, naming the rows."""
    from bench.config import build_spec, suite_specs
    from bench.demo import demo_method_config, demo_suite

    demo = {(s.method, s.label): s.run_id() for s in suite_specs(demo_suite())}
    assert ("gream", "GREAM (reasoning)") in demo and ("lcrec", None) in demo
    for (method, label), run_id in demo.items():
        row, config = demo_method_config(method, label)
        assert build_spec(method, "ml-100k", method_config=config, label=row).run_id() == run_id
    changed = build_spec("lcrec", "ml-100k", method_config=demo_method_config("lcrec")[1],
                         sets=["method_config.sft.epochs=6", "eval.split=valid"])
    assert changed.method_config["sft"]["epochs"] == 6 and changed.method_config["max_alignment_per_task"] == 300
    assert main(["run", "--method", "gream", "--dataset", "ml-100k", "--demo", "GREAM (reasonin)"]) == 2
    assert "did you mean 'GREAM (reasoning)'" in capsys.readouterr().err
    assert main(["run", "--method", "gream", "--dataset", "ml-100k", "--demo"]) == 2


def test_a_card_name_must_be_a_plain_name(toy_env, tmp_path):
    """``name`` becomes part of run ids and folder names: ``Industrial v2`` or ``industrial/v2`` is refused when
    the card is read (naming the card file and a usable name), before anything runs or is written."""
    from bench import assets
    from bench.loaders import load_card
    from bench.specs import SpecError

    text = assets.TOY_CARD.read_text()
    for bad, hint in (("Industrial v2", "Industrial-v2"), ("industrial/v2", "industrial-v2"), ("..", "my-dataset")):
        card = tmp_path / "bad.yaml"
        card.write_text("\n".join(f"name: {bad!r}" if line.startswith("name:") else line for line in text.splitlines()))
        with pytest.raises(SpecError, match="not a plain name") as err:
            load_card(str(card))
        assert str(card) in str(err.value) and repr(hint) in str(err.value)


def test_leaderboard_on_a_missing_runs_folder_is_a_clear_error(tmp_path, capsys):
    from bench.cli import main

    assert main(["leaderboard", "--runs", str(tmp_path / "nope"), "--out", str(tmp_path / "site")]) == 2
    err = capsys.readouterr().err
    assert f"runs folder not found: {tmp_path / 'nope'}" in err and "Traceback" not in err
    assert not (tmp_path / "site").exists()


def test_no_progress_bars_when_the_output_is_not_a_terminal(toy_env, tmp_path, capsys):
    """A run whose output goes to a file (a cluster job, CI, ``> log``) gets the per-epoch lines, not tqdm's
    redraws (a GPU Beauty run's log was 618 KB, 99% bars); ``--progress`` asks for them anyway."""
    from bench.registry import REGISTRY

    cfg = REGISTRY.get("minionerec").smoke_config
    sets = [f"method_config.{k}={json.dumps(v)}" for k, v in cfg.items()] + ["method_config.reuse_sft=false",
                                                                               "method_config.rl.enabled=false"]
    args = ["run", "--method", "minionerec", "--dataset", "toy", "--out", str(tmp_path)]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0  # pytest's stderr is not a terminal
    out = capsys.readouterr()
    (log,) = tmp_path.glob("*/run.log")
    assert "sft epoch 0" in log.read_text()  # the per-epoch line
    assert "it/s" not in out.err + out.out and "\r" not in out.err
    assert main(args[:-2] + ["--set", "method_config.rl.enabled=true", "--progress"]) == 0
    assert "it/s" in capsys.readouterr().err  # forced


def test_terminal_details(toy_env, tmp_path, capsys):
    """`ls` lists each method's variants; a missing card file is "not found", not "unknown dataset"; `run --help`
    explains its arguments; a results table's training column keeps one unit."""
    from bench.report import column_seconds

    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    assert "variant: ReaRec-ERL" in out and "variant: GREAM (reasoning)" in out
    assert main(["run", "--method", "pop", "--dataset", str(tmp_path / "nope.yaml")]) == 2
    assert f"dataset card file not found: {tmp_path / 'nope.yaml'}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    helptext = " ".join(capsys.readouterr().out.split())  # argparse wraps the lines
    assert "a registered method" in helptext and "default: runs" in helptext and "random seed" in helptext
    assert column_seconds([113.6, 162.0]) == ["1.9min", "2.7min"] and column_seconds([3.0, 45.5]) == ["3.0s", "45.5s"]


def test_paired_pools_the_seeds_two_rows_share(tmp_path, capsys):
    """``reasonrec paired A0,A1 B1,B2``: only seed 1 is shared; HR@10 per user A (hit, miss, hit) vs B (miss,
    miss, hit): mean difference 1/3. With seeds 1 and 2 on both sides, each user's difference is the mean over
    the two seeds: seed 1 (1, 0, 0), seed 2 A (miss, miss, miss) - B (hit, miss, hit) = (-1, 0, -1); per user
    (0, 0, -1/2), mean -1/6."""
    def row(name, seed, ranks):
        d = tmp_path / name
        d.mkdir()
        (d / "result.json").write_text(json.dumps({"spec": {"seed": seed}}))
        (d / "per_user.json").write_text(json.dumps({"users": [0, 1, 2], "targets": [5, 6, 7], "ranks": ranks}))
        return str(d)

    a0, a1, a2 = row("a0", 0, [1, 1, 1]), row("a1", 1, [1, 0, 3]), row("a2", 2, [0, 0, 0])
    b1, b2 = row("b1", 1, [0, 0, 1]), row("b2", 2, [1, 0, 1])
    assert main(["paired", f"{a0},{a1}", f"{b1},{b2}", "--metric", "HR@10"]) == 0
    out = capsys.readouterr().out
    assert "pooled over seeds [1]" in out and "A-B +0.3333" in out
    assert main(["paired", f"{a1},{a2}", f"{b1},{b2}", "--metric", "HR@10"]) == 0
    out = capsys.readouterr().out
    assert "pooled over seeds [1, 2]" in out and "A-B -0.1667" in out and "B for 1\n" in out
    assert main(["paired", a0, f"{b1},{b2}"]) == 2  # no shared seed: a clear error
    assert "share no seed" in capsys.readouterr().err


def test_evaluate_ranks_a_checkpoint_of_the_run_with_eval_weights(toy_env, tmp_path):
    """``reasonrec evaluate RUN --set eval.weights=NAME`` ranks ``RUN/checkpoints/NAME/model.safetensors`` in place
    of ``RUN/model``: the last SFT epoch's weights (= the kept ones, with one epoch) rank every user as the run does,
    the untrained backbone's do not; a missing checkpoint is refused before any folder exists, naming the ones
    there; a training run refuses the setting; a spec without it keeps the id it had before the field existed."""
    import json

    from bench.config import build_spec
    from bench.reevaluate import reevaluate
    from bench.registry import get_method
    from bench.runner import run
    from bench.specs import SpecError

    cfg = {**get_method("minionerec").smoke_config, "sft": {"epochs": 1, "lr": 1e-3}, "rl": {"enabled": False}}
    spec = build_spec("minionerec", "toy", method_config=cfg, sets=["eval.max_users=24"])
    res = run(spec, tmp_path / "runs", progress=False, echo=False)
    src = tmp_path / "runs" / res.run_id

    def ranks(run_id):
        p = json.loads((tmp_path / "runs" / run_id / "per_user.json").read_text())
        return dict(zip(p["users"], p["ranks"]))

    last = reevaluate(src, ["eval.weights=sft_last"], progress=False, echo=False)
    assert last.run_id != res.run_id and ranks(last.run_id) == ranks(res.run_id)
    init = reevaluate(src, ["eval.weights=backbone_init"], progress=False, echo=False)
    assert ranks(init.run_id) != ranks(res.run_id)  # the checkpoint's weights are the ones ranked
    before = sorted(p.name for p in (tmp_path / "runs").iterdir())
    with pytest.raises(SpecError, match="sft_last"):  # names the checkpoints the run has
        reevaluate(src, ["eval.weights=epoch_3"], progress=False, echo=False)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == before
    with pytest.raises(SpecError, match="reasonrec evaluate"):
        run(build_spec("pop", "toy", sets=["eval.weights=sft_last"]), tmp_path / "runs", progress=False, echo=False)
    from pathlib import Path

    from bench.specs import RunSpec
    results = Path(__file__).resolve().parent.parent / "leaderboard" / "results"
    for row in ("sports/minionerec-sports-s0-b9bf633454", "instruments/lasar-instruments-s1-c170292fe2"):
        committed = RunSpec.model_validate(json.loads((results / row / "spec.json").read_text()))
        assert committed.eval.weights is None and committed.run_id() == row.split("/")[1]  # ids made before it
