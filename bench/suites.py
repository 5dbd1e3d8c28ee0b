"""Suites: methods x datasets x seeds from a YAML file (``reasonrec suite``), each run through
:func:`bench.runner.run`; complete runs are skipped, interrupted ones resumed. With ``jobs`` > 1 each run
is its own spawned process (one torch thread), watched so that a killed suite leaves no orphan training."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from bench import distributed
from bench.config import suite_specs
from bench.data import SIDData, prepare
from bench.report import text_table
from bench.results import RunResult
from bench.rundir import RunInProgress, is_complete
from bench.runner import run
from bench.specs import RunSpec, SpecError, SuiteSpec


class SuiteFailed(RuntimeError):
    """Runs of a parallel suite failed (each named, with its error); the others completed."""


def select_specs(specs: list[RunSpec], *, only: list[str] | None = None,
                 seeds: list[int] | None = None) -> list[RunSpec]:
    """The runs of a suite named by ``only`` (a row's label, or a method name for all its rows) and
    ``seeds``, in the suite's order; their run ids are the suite's. A name or seed the suite lacks raises,
    naming what it has (a typo must not run nothing, or everything, quietly)."""
    import difflib

    if only:
        names = list(dict.fromkeys([s.label or s.method for s in specs] + [s.method for s in specs]))
        for name in only:
            if name not in names:
                close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
                raise SpecError(f"--only {name!r}: no row or method of that name in the suite; its rows: "
                                + ", ".join(map(repr, dict.fromkeys(s.label or s.method for s in specs)))
                                + (f"; did you mean {close[0]!r}?" if close else ""))
        specs = [s for s in specs if (s.label or s.method) in only or s.method in only]
    if seeds is not None:
        have = sorted({s.seed for s in specs})
        for seed in seeds:
            if seed not in have:
                raise SpecError(f"--seed {seed}: the selected rows have seeds {', '.join(map(str, have))} only")
        specs = [s for s in specs if s.seed in seeds]
    return specs


def committed_run(results: Path | None, spec: RunSpec) -> Path | None:
    """``spec``'s complete run in a results folder of committed runs (``results/<dataset>/<run id>``, as
    ``reasonrec export`` writes it, or ``results/<run id>``), or None."""
    if results is None:
        return None
    for d in (results / spec.dataset / spec.run_id(), results / spec.run_id()):
        if is_complete(d):
            return d
    return None


def run_state(spec: RunSpec, out: Path, results: Path | None = None) -> str:
    """``committed`` (in ``results``), ``done`` (complete in ``out``), ``resume`` (started) or ``new``."""
    if committed_run(results, spec) is not None:
        return "committed"
    run_dir = out / spec.run_id()
    return "done" if is_complete(run_dir) else ("resume" if run_dir.exists() else "new")


def plan_table(specs: list[RunSpec], out: Path, results: Path | None = None) -> str:
    """What ``reasonrec suite --plan`` prints: each run's state, row, dataset, seed and id, then the counts."""
    states = [run_state(s, out, results) for s in specs]
    head = ["state", "row", "dataset", "seed", "run"]
    body = [[st, s.label or s.method, s.dataset, str(s.seed), s.run_id()] for s, st in zip(specs, states)]
    lines = [text_table(head, body)]
    counts = {st: states.count(st) for st in ("committed", "done", "resume", "new")}
    where = {"committed": f"committed in {results}", "done": f"done in {out}", "resume": "to resume",
             "new": "to run"}
    lines.append(f"{len(specs)} runs: " + ", ".join(f"{n} {where[st]}" for st, n in counts.items()
                                                    if n or st == "new"))
    return "\n".join(lines)


def run_suite(suite: SuiteSpec, out: str | Path | None = None, *, dataset_path: str | None = None,
              progress: bool = True, echo: bool = True, jobs: int = 1, only: list[str] | None = None,
              seeds: list[int] | None = None, results: str | Path | None = None) -> list[RunResult]:
    """Every (method, dataset, seed) of ``suite``, skipping complete runs and resuming interrupted ones.
    ``only`` / ``seeds``: just those rows (labels or method names) and seeds (:func:`select_specs`).
    ``results``: a folder of committed runs (e.g. ``leaderboard/results``); a run found there is not run
    again, and its committed result is returned.
    ``jobs`` > 1: that many runs at once, each in its own process (one torch thread each unless the suite
    sets ``threads``): on a machine with that many cores, about that many times faster. The workers are
    spawned, so a script calling this needs the ``if __name__ == "__main__":`` guard."""
    out = Path(out or suite.out)
    results = Path(results) if results is not None else None
    # validate everything before running anything
    specs = select_specs(suite_specs(suite, dataset_path=dataset_path), only=only, seeds=seeds)
    if jobs > 1 and distributed.world_size() == 1:
        return _run_parallel(specs, out, dataset_path=dataset_path, echo=echo, jobs=jobs, results=results)
    done = []
    cache: dict[tuple, SIDData] = {}
    for n, spec in enumerate(specs, 1):
        run_dir = out / spec.run_id()
        state = run_state(spec, out, results)
        if echo and distributed.is_main():
            print(f"[{n}/{len(specs)}] {spec.run_id()} ({state})", flush=True)
        if state in ("done", "committed"):
            done.append(RunResult.from_disk((committed_run(results, spec) or run_dir) / "result.json"))
            continue
        key = (spec.dataset_card or spec.dataset, json.dumps(spec.data, sort_keys=True))
        if key not in cache:
            with distributed.main_process_first():  # multi-process launch: the others read its cache
                cache[key] = prepare(key[0], spec.data, path=dataset_path, progress=progress,
                                     log=print if echo and distributed.is_main() else (lambda *_: None))
        try:
            done.append(run(spec, out, dataset_path=dataset_path, progress=progress, echo=echo, data=cache[key]))
        except RunInProgress as e:  # another process runs it: leave it alone, carry on
            if distributed.world_size() > 1:  # the helper processes would wait in training: stop them all
                raise
            print(f"  skipped: {e}", flush=True)
    return done


def _exit_with_parent(parent: int, every: float = 2.0) -> None:
    """End this worker once ``parent`` (the suite process) is gone: a killed suite must not leave its runs
    training on (orphaned, they hold their run locks and keep the cores; the runs resume from their last
    epoch checkpoint when the suite is started again). A daemon thread polls the parent pid."""
    import threading

    def watch():
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(3)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def _suite_worker(spec_json: dict, out: str, dataset_path: str | None, parent: int | None = None) -> str:
    """One run of a parallel suite, in a fresh (spawned) process (no progress bars: they would interleave)."""
    if parent is not None:
        _exit_with_parent(parent)
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    spec = RunSpec(**spec_json)
    torch.set_num_threads(spec.threads or 1)
    # the run's log lines (its start, each epoch, each phase) on the suite's output, each named after its run:
    # two workers' lines interleave, and a long run is never silent for minutes
    # (a worker process takes run after run: each run's prefix replaces the last one's, it does not nest)
    base = sys.stdout
    sys.stdout = prefixed = _Prefixed(base, f"  {spec.label or spec.method}: ")
    try:
        return run(spec, out, dataset_path=dataset_path, progress=False, echo=True).run_id
    finally:
        prefixed.close_line()
        sys.stdout = base


class _Prefixed:
    """A text stream that starts every line with ``prefix`` (a parallel suite's worker output). It passes on
    whole lines only, each written and flushed at once: the workers and the suite share one output, and a line
    flushed in pieces would interleave with another process's line."""

    def __init__(self, stream, prefix: str):
        self.stream, self.prefix, self.partial = stream, prefix, ""

    def write(self, text: str) -> int:
        lines = (self.partial + text).splitlines(keepends=True)
        self.partial = lines.pop() if lines and not lines[-1].endswith("\n") else ""
        if lines:
            self.stream.write("".join(self.prefix + line for line in lines))
            self.stream.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def close_line(self) -> None:
        """Pass on a last line that never got its newline."""
        if self.partial:
            self.write("\n")

    def __getattr__(self, name):
        return getattr(self.stream, name)


def _run_parallel(specs: list[RunSpec], out: Path, *, dataset_path: str | None, echo: bool,
                  jobs: int, results: Path | None = None) -> list[RunResult]:
    """``jobs`` worker processes take the pending runs in the suite's order. Each dataset is prepared
    first, here (the workers read its cache). A failed run is reported with its ``error.txt`` once the
    others have finished; then the suite fails naming every failed run."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    say = print if echo else (lambda *_a, **_k: None)
    pending = [s for s in specs if run_state(s, out, results) not in ("done", "committed")]
    for key in {(s.dataset_card or s.dataset, json.dumps(s.data, sort_keys=True)) for s in pending}:
        prepare(key[0], json.loads(key[1]), path=dataset_path, progress=False, log=say)
    say(f"{len(specs) - len(pending)} of {len(specs)} runs complete; {len(pending)} to run, {jobs} at a time "
        f"(logs: {out}/<run id>/run.log)", flush=True)
    failed: dict[str, str] = {}
    t0 = time.time()
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_suite_worker, s.model_dump(mode="json"), str(out), dataset_path, os.getpid()): s for s in pending}
        for n, fut in enumerate(as_completed(futures), 1):
            s = futures[fut]
            try:
                fut.result()
                res = RunResult.from_disk(out / s.run_id() / "result.json")
                say(f"[{n}/{len(pending)}] {s.run_id()} ({s.label or s.method}): "
                    + ", ".join(f"{k} {v:.4f}" for k, v in res.metrics.items() if k.endswith("@10"))
                    + f"  [{(time.time() - t0) / 60:.1f} min]", flush=True)
            except RunInProgress as e:
                say(f"[{n}/{len(pending)}] skipped: {e}", flush=True)
            except Exception as e:  # noqa: BLE001 - collected, raised below with every failure named
                failed[s.run_id()] = f"{type(e).__name__}: {e}"
                say(f"[{n}/{len(pending)}] {s.run_id()} FAILED: {failed[s.run_id()]}", flush=True)
    if failed:
        raise SuiteFailed(f"{len(failed)} run(s) failed: " + "; ".join(f"{k} ({v})" for k, v in failed.items()))
    finished = [committed_run(results, s) or out / s.run_id() for s in specs]
    return [RunResult.from_disk(d / "result.json") for d in finished if is_complete(d)]
