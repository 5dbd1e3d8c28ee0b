"""``reasonrec``: a thin command line over the Python API (bench.api)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bench.cli_bench import add_bench_parser


def _common_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset-path", help="folder with the dataset files (overrides the card's path)")
    _progress_args(p)


def _progress_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--progress", action="store_true",
                   help="progress bars even when the output is not a terminal (by default a log file, a cluster job "
                        "or CI gets the per-epoch lines only: tqdm's redraws would be most of the log)")


def _progress(args) -> bool:
    """Progress bars on a terminal only (or with --progress), never with --no-progress."""
    if getattr(args, "no_progress", False):
        return False
    return bool(getattr(args, "progress", False)) or sys.stderr.isatty()


def cmd_ls(args) -> int:
    from bench.loaders import known_datasets, load_card
    from bench.registry import REGISTRY

    print("methods:")
    for name in REGISTRY.names():
        info = REGISTRY.get(name).info
        needs = ",".join(k for k in ("text", "cot", "sids") if getattr(info, f"needs_{k}", False)
                         or (k == "sids" and info.uses_sids)) or "-"
        print(f"  {name:<12} {info.family:<12} needs:{needs:<10} {info.paper}")
        for row in getattr(REGISTRY.get(name), "demo_rows", {}) or {}:  # variants, each a row of its own
            print(f"  {'':<12} {'':<12} {'':<16} variant: {row}  (reasonrec run --method {name} --demo '{row}')")
    print("datasets:")
    for name in known_datasets():
        card = load_card(name)
        print(f"  {name:<12} {card.format:<15} {card.description}")
    return 0


def cmd_prepare(args) -> int:
    from bench.data import prepare
    from bench.overrides import parse_sets

    data = prepare(args.dataset, parse_sets(args.set), path=args.dataset_path, progress=_progress(args), force=args.force)
    s = data.stats
    print(f"dataset {data.name} (fingerprint {data.fingerprint})")
    print(f"  users {s['users']:,}  items {s['items']:,}  interactions {s['interactions']:,}  "
          f"(raw: {s['raw_users']:,} users, {s['raw_interactions']:,} interactions)")
    print(f"  SIDs: {s['sid_source']}, {s['sid_levels']} levels x {s['codebook_size']} codes; "
          f"codebook usage per level {s['codebook_usage']}")
    print(f"  collisions before resolution: {s['sid_collision_items']} items ({100 * s['sid_collision_rate']:.2f}%), "
          f"resolved by {s['sid_collisions_resolved_by']}; unique SIDs {s['unique_sids']:,}")
    print(f"  example: item {data.item_ids[0]} -> {data.sid(0)}  {data.item_text[0][:80]!r}")
    return 0


def cmd_run(args) -> int:
    from bench.config import build_spec
    from bench.runner import run

    base = {}
    if args.demo is not None:  # the demo row's budget, under --config and --set
        from bench.demo import demo_method_config

        label, config = demo_method_config(args.method, args.demo or None)
        base = {"method_config": config, "label": label}
    spec = build_spec(args.method, args.dataset, config_file=args.config, sets=args.set or [], seed=args.seed,
                      dataset_path=args.dataset_path, **base)
    from bench.report import results_table

    res = run(spec, args.out, dataset_path=args.dataset_path, progress=_progress(args))
    print(f"run {res.run_id}: " + "  ".join(f"{k} {v:.4f}" for k, v in res.metrics.items()))
    print(f"latency {res.latency.seconds_per_sample * 1000:.3f} ms/sample; result: {Path(args.out) / res.run_id / 'result.json'}")
    print("\n" + results_table([res]))
    return 0


def cmd_evaluate(args) -> int:
    from bench.reevaluate import reevaluate

    res = reevaluate(args.run_dir, args.set or [], args.out, dataset_path=args.dataset_path,
                     progress=_progress(args))
    from bench.report import results_table

    print(f"run {res.run_id} (trained in {res.training.model_dump().get('trained_in')}): "
          + "  ".join(f"{k} {v:.4f}" for k, v in res.metrics.items()))
    print("\n" + results_table([res]))
    return 0


def cmd_tune(args) -> int:
    from bench.tune import tune

    res = tune(args.method, args.dataset, args.space, args.out, trials=args.trials, minutes=args.minutes,
               seed=args.seed, dataset_path=args.dataset_path, progress=_progress(args))
    return 0 if res["best"] is not None else 1


def cmd_suite(args) -> int:
    from bench.config import load_suite
    from bench.suites import run_suite

    from bench.report import results_table

    suite = load_suite(args.file)
    if args.results and not Path(args.results).is_dir():  # a typo must not mean "nothing is committed"
        from bench.specs import SpecError

        raise SpecError(f"--results: folder not found: {args.results}")
    if args.plan:
        from bench.config import suite_specs
        from bench.suites import plan_table, select_specs

        specs = select_specs(suite_specs(suite, dataset_path=args.dataset_path, check_files=False),
                             only=args.only, seeds=args.seed)
        print(plan_table(specs, Path(args.out or suite.out), Path(args.results) if args.results else None))
        return 0
    results = run_suite(suite, args.out, dataset_path=args.dataset_path, progress=_progress(args),
                        jobs=args.jobs, only=args.only, seeds=args.seed, results=args.results)
    print(f"{len(results)} runs complete\n\n" + results_table(results))
    return 0


def cmd_leaderboard(args) -> int:
    from bench.leaderboard import build_site
    from bench.specs import SpecError

    missing = [r for r in args.runs if not Path(r).is_dir()]
    if missing:
        raise SpecError(f"runs folder not found: {', '.join(missing)}")
    from bench.leaderboard import main_rows

    missing = [m for m in args.main or [] if not Path(m).is_file()]
    if missing:
        raise SpecError(f"suite file not found: {', '.join(missing)}")
    index = build_site([Path(r) for r in args.runs], Path(args.out), title=args.title,
                       main=main_rows([Path(m) for m in args.main]) if args.main else None,
                       log=lambda msg: print(f"leaderboard: {msg}", flush=True))
    print(f"leaderboard: {index}")
    return 0


def cmd_upgrade(args) -> int:
    from bench.rowfacts import upgrade_results
    from bench.specs import SpecError

    if not Path(args.runs).is_dir():
        raise SpecError(f"runs folder not found: {args.runs}")
    upgrade_results(Path(args.runs))
    from bench.latency import upgrade_latency_reports

    upgrade_latency_reports(Path(args.runs))
    return 0


def cmd_export(args) -> int:
    from bench.results import export_results

    for path in export_results(Path(args.runs), Path(args.to), allow_dirty=args.allow_dirty):
        print(path)
    return 0


def cmd_demo(args) -> int:
    from bench.demo import demo

    from bench.report import results_table
    from bench.results import load_results

    index = demo(Path(args.out), methods=args.methods, progress=_progress(args), jobs=args.jobs)
    print("\n" + results_table(load_results(Path(args.out) / "runs")))
    print(f"\nleaderboard ready: {index}\nopen it in a browser: file://{index.resolve()}")
    return 0


def cmd_paired(args) -> int:
    from bench.significance import paired_test
    from bench.specs import SpecError

    try:
        res = paired_test([Path(r) for r in args.run_a.split(",")], [Path(r) for r in args.run_b.split(",")],
                          metric=args.metric)
    except (ValueError, FileNotFoundError) as e:
        raise SpecError(str(e)) from None
    seeds = f" (pooled over seeds {res['seeds']})" if res["seeds"] else ""
    print(f"{args.metric} on {res['users']:,} users{seeds}: A {res['a']:.4f}, B {res['b']:.4f}, A-B {res['mean_difference']:+.4f} "
          f"(95% CI {res['ci95'][0]:+.4f} .. {res['ci95'][1]:+.4f}); paired t p={res['t_pvalue']:.3g}; "
          f"A better for {res['a_better_users']:,} users, "
          f"B for {res['b_better_users']:,}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="reasonrec", description="ReasonRec Bench: compare reasoning methods "
                                "for generative recommendation on one protocol")
    p.add_argument("--threads", type=int, help="torch threads (default: as torch decides)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("ls", help="registered methods and known datasets")
    s.set_defaults(func=cmd_ls)

    s = sub.add_parser("prepare", help="build and cache the shared SID data; print its statistics")
    s.add_argument("--dataset", required=True)
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="data setting, e.g. sids.codebook_size=128")
    s.add_argument("--force", action="store_true", help="rebuild even if cached")
    _common_run_args(s)
    s.set_defaults(func=cmd_prepare)

    s = sub.add_parser("run", help="train, rank the test users, evaluate, write <out>/<run_id>/result.json")
    s.add_argument("--method", required=True, help="a registered method (`reasonrec ls`), e.g. sasrec, minionerec, lasar")
    s.add_argument("--dataset", required=True,
                   help="a dataset card name (`reasonrec ls`: toy, ml-100k, beauty, ...) or a card file path")
    s.add_argument("--config", help="YAML run spec (method_config, data, eval, seed, label)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override, e.g. method_config.epochs=3, eval.max_users=500, seed=1")
    s.add_argument("--seed", type=int, help="random seed (default 0; part of the run id)")
    s.add_argument("--demo", nargs="?", const="", metavar="ROW",
                   help="start from the method's `reasonrec demo` budget (ROW: the row's label, for a method with "
                        "several, e.g. 'GREAM (reasoning)'); --config and --set apply on top, so with neither "
                        "this is the demo's run (same run id)")
    s.add_argument("--out", default="runs", help="runs folder; the run goes to OUT/<run id>/ (default: runs)")
    _common_run_args(s)
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("evaluate", help="re-evaluate a finished run's trained model under other evaluation settings "
                                        "(eval.max_users, eval.beam_width, eval.exclude_history...) without training")
    s.add_argument("run_dir", help="a complete run directory (with result.json and model/)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="eval.* / threads / label, e.g. eval.max_users=null")
    s.add_argument("--out", help="runs folder of the new run (default: beside the source run)")
    _common_run_args(s)
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("tune", help="validation-based hyperparameter search (Optuna TPE + median pruning, a resumable "
                                    "SQLite study); trials rank the validation split, never the test")
    s.add_argument("--method", required=True)
    s.add_argument("--dataset", required=True)
    s.add_argument("--space", required=True, help="search space YAML (params / fixed; see leaderboard/spaces/)")
    s.add_argument("--trials", type=int, default=20, help="complete + pruned trials wanted in all (default 20)")
    s.add_argument("--minutes", type=float, help="start no new trial after this many minutes")
    s.add_argument("--seed", type=int, default=0, help="the trials' seed and the sampler's")
    s.add_argument("--out", default="runs/tune", help="studies folder (default runs/tune)")
    _common_run_args(s)
    s.set_defaults(func=cmd_tune)

    s = sub.add_parser("suite", help="methods x datasets x seeds from a YAML file; skips done runs, resumes others")
    s.add_argument("file")
    s.add_argument("--out", help="runs folder (default: the suite's 'out')")
    s.add_argument("--jobs", type=int, default=1, help="runs at once, each its own process (default 1)")
    s.add_argument("--only", action="append", metavar="ROW",
                   help="only this row (its label, e.g. 'MiniOneRec (SFT+RL)', or a method name for all its rows; "
                        "repeatable); run ids stay the suite's")
    s.add_argument("--seed", action="append", type=int, metavar="N", help="only this seed (repeatable)")
    s.add_argument("--results", metavar="DIR",
                   help="folder of committed runs (e.g. leaderboard/results): a run found there "
                        "(DIR/<dataset>/<run id>) is not run again")
    s.add_argument("--plan", action="store_true",
                   help="print each run's state (committed, done, resume, new) and its id; run nothing")
    _common_run_args(s)
    s.set_defaults(func=cmd_suite)

    s = sub.add_parser("leaderboard", help="render the static leaderboard site from result files")
    s.add_argument("--runs", action="append", required=True, help="folder of runs (repeatable)")
    s.add_argument("--out", required=True, help="site folder")
    s.add_argument("--title", default="ReasonRec Bench leaderboard")
    s.add_argument("--main", action="append", metavar="SUITE.yaml",
                   help="a suite whose entries are Table-1 rows (repeatable, e.g. leaderboard/suites/table1-*.yaml); "
                        "a dataset's other rows go to a table below it. Default: every row in Table 1")
    s.set_defaults(func=cmd_leaderboard)

    s = sub.add_parser("upgrade", help="add what the site reads from a result (the paper tables it fills, its "
                                       "non-default settings, the command that remakes it) to results written "
                                       "before results carried it, and to the latency reports in its bench/ "
                                       "folder which run each timed model is and its paper Table-4 row; no "
                                       "number changes")
    s.add_argument("runs", help="folder of runs or committed results")
    s.set_defaults(func=cmd_upgrade)

    s = sub.add_parser("export", help="copy result files of complete runs (no checkpoints) for committing")
    s.add_argument("--runs", required=True)
    s.add_argument("--to", default="leaderboard/results")
    s.add_argument("--allow-dirty", action="store_true",
                   help="also export runs made from a checkout with uncommitted changes")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("paired", help="paired significance of two runs on the same test users (per-user ranks)")
    s.add_argument("run_a", help="a run folder, or the run folders of one row's seeds separated by commas")
    s.add_argument("run_b", help="the same for the other row; several seeds: each user's difference is averaged "
                                 "over the seeds both rows have")
    s.add_argument("--metric", default="NDCG@10")
    s.set_defaults(func=cmd_paired)

    add_bench_parser(sub)

    s = sub.add_parser("demo", help="every registered method, small budgets, on ml-100k; builds the leaderboard")
    s.add_argument("--out", default="reasonrec-demo")
    s.add_argument("--methods", nargs="*", help="subset of methods (default: all registered)")
    s.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="runs at once, one process and one torch thread each (default: 2, or 1 on a one-core "
                        "machine; 1 = one after another)")
    _progress_args(s)
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from bench.loaders import DataError
    from bench.method import TrainingDiverged
    from bench.registry import RegistryError
    from bench.rundir import RunInProgress
    from bench.suites import SuiteFailed
    from bench.specs import SpecError

    try:
        return args.func(args)
    except (SpecError, DataError, RegistryError, RunInProgress) as e:
        print(f"reasonrec: error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"reasonrec: training diverged: {e}", file=sys.stderr)
        return 1
    except SuiteFailed as e:
        print(f"reasonrec: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nreasonrec: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
