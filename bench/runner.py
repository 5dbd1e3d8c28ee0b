"""The runner owns the loop: data -> fit -> timed recommend -> evaluate -> result.json.

A run directory holds ``spec.json`` (written first), ``run.log``, ``checkpoints/`` and, written
atomically and last, ``result.json`` + ``per_user.json``. A run whose ``result.json`` exists is
complete and skipped; any other run directory is resumed (methods reload their checkpoints).
"""
from __future__ import annotations

import datetime as _dt
import json
import random
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pydantic import ValidationError

from bench import distributed, provenance
from bench.data import SIDData, prepare
from bench.method import FitContext, Method
from bench.metrics import evaluate
from bench.registry import get_method
from bench.results import Latency, RunResult, Training, atomic_write_json
from bench.specs import (EvalSettings, RunSpec, SpecError, SuiteSpec, format_validation_error, load_yaml,
                         merge_overrides, parse_sets)

EVAL_SUBSET_SEED = 12345  # the same test users for every method and seed


def build_spec(method: str, dataset: str, *, config_file: str | None = None, sets: list[str] = (),
               **fields) -> RunSpec:
    """defaults < config file < --set key=value (dotted keys: method_config.lr=1e-3, eval.max_users=100)."""
    cli = parse_sets(sets)
    file_layer = load_yaml(config_file) if config_file else {}
    merged = merge_overrides({"method": method, "dataset": dataset}, {k: v for k, v in fields.items() if v is not None},
                             file_layer, cli)
    try:
        spec = RunSpec(**merged)
    except ValidationError as e:
        raise SpecError(format_validation_error(e, "run spec" + (f" ({config_file})" if config_file else ""), RunSpec)) from None
    method_config(spec)  # validate now, before any work
    return spec


def method_config(spec: RunSpec):
    cls = get_method(spec.method)
    try:
        return cls.Config(**spec.method_config)
    except ValidationError as e:
        raise SpecError(format_validation_error(e, f"method_config for '{spec.method}'", cls.Config,
                                                 prefix="method_config.")) from None


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass


def _logger(path: Path, echo: bool) -> Callable[[str], None]:
    def log(msg: str) -> None:
        line = f"[{_dt.datetime.now().strftime('%H:%M:%S')}] {msg}"
        with open(path, "a") as f:
            f.write(line + "\n")
        if echo:
            print(line, flush=True)

    return log


def is_complete(run_dir: Path) -> bool:
    return (run_dir / "result.json").is_file()


class RunInProgress(RuntimeError):
    """Another process holds this run's lock."""


def _lock(run_dir: Path):
    """An exclusive, non-blocking lock on ``run_dir/.lock`` (released when the process exits)."""
    import fcntl
    import os

    f = open(run_dir / ".lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "?"
        f.close()
        raise RunInProgress(f"run {run_dir.name} is in progress in another process (pid {holder}); "
                            f"wait for it or stop it") from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


def run(spec: RunSpec, out: str | Path = "runs", *, dataset_path: str | None = None, progress: bool = True,
        echo: bool = True, data: SIDData | None = None, trained_in: str | Path | None = None) -> RunResult:
    """Run ``spec`` into ``out/<run_id>``. ``trained_in``: the directory of a complete run with the same
    method, data and training settings whose checkpoints this run starts from (see :func:`reevaluate`)."""
    run_dir = Path(out).resolve() / spec.run_id()  # absolute: some libraries chdir (RecBole)
    if is_complete(run_dir):
        return RunResult.from_disk(run_dir / "result.json")
    run_dir.mkdir(parents=True, exist_ok=True)
    main = distributed.is_main()  # a helper process of a multi-process launch trains, then waits: no lock
    lock = _lock(run_dir) if main else None
    try:
        return _run_in_dir(spec, run_dir, dataset_path=dataset_path, progress=progress and main,
                           echo=echo and main, data=data, trained_in=Path(trained_in) if trained_in else None)
    finally:
        if lock is not None:
            lock.close()


TRAINING_FIELDS = ("method", "dataset", "seed", "method_config", "data")


def reevaluate(source: str | Path, sets: list[str] = (), out: str | Path | None = None, *,
               dataset_path: str | None = None, progress: bool = True, echo: bool = True) -> RunResult:
    """Evaluate the trained model of the complete run in ``source`` under other evaluation settings
    (``eval.*``: test users, beam width, history exclusion...) without training again.

    The new run gets its own run id and directory (default: beside the source); it starts from a copy of
    the source's checkpoints, so the method's own resume logic reloads the trained weights, and its
    ``training`` block is the source's, marked ``trained_in: <source run id>``.
    """
    source = Path(source)
    if not (source / "result.json").is_file():
        raise SpecError(f"{source} is not a complete run (no result.json); finish it first with `reasonrec run`"
                        " or `reasonrec suite`, which resume it")
    if not (source / "checkpoints").is_dir():
        raise SpecError(f"{source} has no checkpoints/ folder (exported result files only?): nothing to reload")
    src = RunResult.from_disk(source / "result.json")
    fields = parse_sets(sets, src.spec.model_dump(mode="json"), allowed=lambda key: None if (
        key.startswith("eval.") or key in ("threads", "label")) else (
        f"re-evaluation changes evaluation settings only (eval.*, threads, label), not {key!r}: that would need "
        f"training again; use `reasonrec run`"))
    try:
        spec = RunSpec(**fields)
    except ValidationError as e:
        raise SpecError(format_validation_error(e, "re-evaluation settings", RunSpec)) from None
    if spec.run_id() == src.run_id:
        raise SpecError(f"these are the evaluation settings of {src.run_id} itself; its result is {source / 'result.json'}")
    return run(spec, out or source.parent, dataset_path=dataset_path, progress=progress, echo=echo,
               trained_in=source)


def _run_in_dir(spec: RunSpec, run_dir: Path, *, dataset_path, progress, echo, data,
                trained_in: Path | None = None) -> RunResult:
    main, started = distributed.is_main(), time.time()
    if main:
        spec_path = run_dir / "spec.json"
        resumed = spec_path.is_file()
        atomic_write_json(spec_path, spec.model_dump(mode="json"))
        (run_dir / "error.txt").unlink(missing_ok=True)  # from an earlier attempt
        log = _logger(run_dir / "run.log", echo)
        log(f"{'resuming' if resumed else 'starting'} run {spec.run_id()} in {run_dir}"
            + (f" (process 0 of {distributed.world_size()})" if distributed.world_size() > 1 else ""))
    else:
        def log(msg: str) -> None:
            pass
    try:
        return _run_body(spec, run_dir, main=main, started=started, dataset_path=dataset_path, progress=progress,
                         log=log, data=data, trained_in=trained_in)
    except Exception as e:
        if main:
            (run_dir / "error.txt").write_text(f"{type(e).__name__}: {e}\n")
            log(f"run failed: {type(e).__name__}: {e}")
        raise


def _run_body(spec: RunSpec, run_dir: Path, *, main: bool, started: float, dataset_path, progress, log, data,
              trained_in: Path | None) -> RunResult:

    cls = get_method(spec.method)
    config = method_config(spec)
    if spec.threads:
        import torch

        torch.set_num_threads(spec.threads)
    if data is None:
        with distributed.main_process_first():  # the others read the main process's cache
            data = prepare(spec.dataset, spec.data, path=dataset_path, progress=progress, log=log)
    if cls.info.needs_text and not any(data.item_text):
        raise SpecError(f"method '{spec.method}' needs item text, dataset '{spec.dataset}' has none")
    set_seed(spec.seed)
    method: Method = cls(config)
    ctx = FitContext(workdir=run_dir / "checkpoints", seed=spec.seed, beam_width=spec.eval.beam_width,
                     progress=progress, log=log)
    source = None
    if trained_in is not None:
        source = RunResult.from_disk(trained_in / "result.json")
        with distributed.main_process_first():
            _adopt_checkpoints(spec, source, trained_in / "checkpoints", ctx.workdir, data, log)
    ctx.workdir.mkdir(exist_ok=True)
    valid = data.split("valid")
    t0 = time.perf_counter()
    fit_facts = method.fit(data, valid=valid, ctx=ctx) or {}
    train_seconds = time.perf_counter() - t0
    if not main:  # the main process evaluates and writes the result
        return RunResult.from_disk(distributed.wait_for_result(run_dir, since=started))
    if source is None:
        log(f"trained in {train_seconds:.1f}s: {fit_facts}")
    else:  # the training happened in the source run: report that run's training
        log(f"reloaded the model trained in {source.run_id} in {train_seconds:.1f}s")
        fit_facts = {**source.training.model_dump(), "trained_in": source.run_id,
                     "reload_seconds": round(train_seconds, 3)}
        train_seconds = fit_facts.pop("seconds")

    test = data.split("test")
    if spec.eval.max_users and spec.eval.max_users < len(test):
        idx = np.sort(np.random.default_rng(EVAL_SUBSET_SEED).choice(len(test), spec.eval.max_users, replace=False))
        test = test.subset(idx)
    items, latency, stats = timed_recommend(method, test.histories, spec.eval, data.max_history, progress)
    ev = evaluate(items, test.targets, data.n_items, ks=spec.eval.ks,
                  histories=test.histories if spec.eval.exclude_history else None)
    log("test metrics: " + ", ".join(f"{k} {v:.4f}" for k, v in ev.metrics.items()))

    atomic_write_json(run_dir / "per_user.json", {
        "users": test.users.tolist(), "targets": test.targets.tolist(), "ranks": ev.ranks.tolist(),
        "stats": {k: np.asarray(v).tolist() for k, v in stats.items()}})
    result = RunResult(
        run_id=spec.run_id(), spec=spec, method_info=cls.info.model_dump(), metrics=ev.metrics,
        latency=latency, training=Training(seconds=round(train_seconds, 3), **fit_facts),
        evaluation={"split": "test", "n_users": len(test), "ks": list(spec.eval.ks),
                    "beam_width": spec.eval.beam_width, "exclude_history": spec.eval.exclude_history,
                    "max_history": data.max_history, "invalid_items": ev.invalid, "duplicate_items": ev.duplicates,
                    "per_user_file": "per_user.json"},
        method_facts={"config": config.model_dump(mode="json"), **method.describe()},
        data={"name": data.name, "fingerprint": data.fingerprint, "stats": data.stats,
              "settings": data.settings.model_dump(mode="json")},
        environment=provenance.environment(),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    result.to_disk(run_dir)  # last: its presence marks the run complete
    (run_dir / "error.txt").unlink(missing_ok=True)
    log(f"wrote {run_dir / 'result.json'}")
    return result


def _adopt_checkpoints(spec: RunSpec, src: RunResult, src_ckpt: Path, workdir: Path, data: SIDData, log) -> None:
    """Copy a finished run's checkpoints into a new run's (empty) checkpoint folder, after checking that
    they were trained with the same method, settings and data."""
    import shutil

    mine, theirs = spec.model_dump(mode="json"), src.spec.model_dump(mode="json")
    differ = [f for f in TRAINING_FIELDS if mine[f] != theirs[f]]
    if differ:
        raise SpecError(f"run {src.run_id} was trained with other {', '.join(differ)}; its checkpoints do not apply")
    if src.data.get("fingerprint") != data.fingerprint:
        raise SpecError(f"run {src.run_id} was trained on data {src.data.get('fingerprint')}, the prepared data is "
                        f"{data.fingerprint} (dataset files or code changed): train again")
    if workdir.is_dir() and any(workdir.iterdir()):
        log(f"checkpoints of {src.run_id} already copied")
        return
    if not src_ckpt.is_dir():
        raise SpecError(f"{src_ckpt} does not exist: nothing to reload")
    tmp = workdir.with_name(workdir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src_ckpt, tmp)  # copy, then rename: an interrupted copy is never taken as complete
    if workdir.is_dir():
        workdir.rmdir()
    tmp.rename(workdir)
    log(f"copied the checkpoints of {src.run_id} ({src_ckpt})")


def timed_recommend(method: Method, histories: list[list[int]], ev: EvalSettings, max_history: int,
                    progress: bool = True):
    k = max(ev.ks) + (max_history if ev.exclude_history else 0)
    bs = ev.batch_size
    batches = [histories[i:i + bs] for i in range(0, len(histories), bs)]
    for b in batches[: ev.warmup_batches]:  # warm-up: lazy init, allocator, caches; not timed
        method.recommend(b, k=k)
    from tqdm.auto import tqdm

    outs, stats = [], {}
    t0 = time.perf_counter()
    for b in tqdm(batches, desc="recommend", disable=not progress, leave=False):
        rec = method.recommend(b, k=k)
        items = np.asarray(rec.items)
        if items.shape[0] != len(b):
            raise RuntimeError(f"{method.info.name}.recommend returned {items.shape[0]} rows for {len(b)} histories")
        if items.shape[1] < k:
            items = np.pad(items, ((0, 0), (0, k - items.shape[1])), constant_values=-1)
        outs.append(items[:, :k])
        for name, v in rec.stats.items():
            stats.setdefault(name, []).append(np.asarray(v))
    total = time.perf_counter() - t0
    n = len(histories)
    latency = Latency(seconds_per_sample=total / max(n, 1), total_seconds=round(total, 4), n_samples=n,
                      batch_size=bs, warmup_batches=min(ev.warmup_batches, len(batches)))
    items = np.concatenate(outs) if outs else np.zeros((0, k), dtype=np.int64)
    return items, latency, {name: np.concatenate(v) for name, v in stats.items()}


# ---------------------------------------------------------------- suites

def load_suite(path: str | Path) -> SuiteSpec:
    try:
        return SuiteSpec(**load_yaml(path))
    except ValidationError as e:
        raise SpecError(format_validation_error(e, f"suite file {path}", SuiteSpec)) from None


def suite_specs(suite: SuiteSpec) -> list[RunSpec]:
    specs = []
    for entry in suite.entries():
        for ds in suite.datasets:
            for seed in suite.seeds:
                try:
                    spec = RunSpec(method=entry.method, dataset=ds, seed=seed, label=entry.label,
                                   method_config=entry.method_config, data=suite.data,
                                   eval=EvalSettings(**suite.eval), threads=suite.threads)
                except ValidationError as e:
                    raise SpecError(format_validation_error(e, f"suite entry {entry.method}/{ds}")) from None
                method_config(spec)
                specs.append(spec)
    return specs


def run_suite(suite: SuiteSpec, out: str | Path | None = None, *, dataset_path: str | None = None,
              progress: bool = True, echo: bool = True) -> list[RunResult]:
    out = Path(out or suite.out)
    specs = suite_specs(suite)  # validate everything before running anything
    results = []
    cache: dict[tuple, SIDData] = {}
    for n, spec in enumerate(specs, 1):
        run_dir = out / spec.run_id()
        state = "done" if is_complete(run_dir) else ("resume" if run_dir.exists() else "new")
        if echo and distributed.is_main():
            print(f"[{n}/{len(specs)}] {spec.run_id()} ({state})", flush=True)
        if state == "done":
            results.append(RunResult.from_disk(run_dir / "result.json"))
            continue
        key = (spec.dataset, json.dumps(spec.data, sort_keys=True))
        if key not in cache:
            with distributed.main_process_first():  # multi-process launch: the others read its cache
                cache[key] = prepare(spec.dataset, spec.data, path=dataset_path, progress=progress,
                                     log=print if echo and distributed.is_main() else (lambda *_: None))
        try:
            results.append(run(spec, out, dataset_path=dataset_path, progress=progress, echo=echo, data=cache[key]))
        except RunInProgress as e:  # another process runs it: leave it alone, carry on
            if distributed.world_size() > 1:  # the helper processes would wait in training: stop them all
                raise
            print(f"  skipped: {e}", flush=True)
    return results
