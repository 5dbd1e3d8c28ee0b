"""The runner owns the loop: data -> fit -> timed recommend -> evaluate -> result.json.

A run directory is created only once the spec is resolved and validated (bench.config). It holds
``spec.json`` (the resolved spec, written first), ``run.log``, ``attempts.json`` (training time of
every attempt), ``checkpoints/`` (the method's, for resuming), ``model/`` (what ``Method.save`` wrote
after ``fit``; ``reasonrec evaluate`` loads it) and, written atomically and last, ``result.json`` +
``per_user.json``. A run whose ``result.json`` exists is complete and skipped; any other run
directory is resumed (methods reload their checkpoints; resumes must be exact).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from bench import distributed, provenance, rundir
from bench.atomic import atomic_dir, atomic_write_json, atomic_write_text
from bench.config import build_spec, load_suite, method_config, resolve_spec  # noqa: F401  (build_spec, load_suite: re-exported)
from bench.data import SIDData, prepare
from bench.method import FitContext, Method
from bench.metrics import evaluate, grouped_metrics
from bench.ranking import decode_log_for, timed_recommend
from bench.registry import get_method
from bench.results import RunResult, Training
from bench.rowfacts import row_facts
from bench.specs import RunSpec, SpecError

EVAL_SUBSET_SEED = 12345  # the same test users for every method and seed


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass


def run(spec: RunSpec | dict, out: str | Path = "runs", *, dataset_path: str | None = None, progress: bool = True,
        echo: bool = True, data: SIDData | None = None) -> RunResult:
    """Run ``spec`` into ``out/<run_id>``: resolve and validate it (before any folder exists), prepare the
    data, ``fit``, ``save`` the model into ``<run>/model``, rank the test users, write ``result.json``."""
    spec = resolve_spec(spec, dataset_path=dataset_path)
    if spec.eval.weights is not None:
        raise SpecError(f"eval.weights={spec.eval.weights!r} ranks a checkpoint of a finished run: use `reasonrec "
                        f"evaluate RUN --set eval.weights={spec.eval.weights}`, not a training run")
    run_dir = Path(out).resolve() / spec.run_id()  # absolute: some libraries chdir (RecBole)
    if rundir.is_complete(run_dir):
        done = RunResult.from_disk(run_dir / "result.json")
        rundir.check_same_data(done, spec, dataset_path, data)
        if spec.label != done.spec.label and spec.label is not None:  # a label changes no number: relabel
            rundir.relabel(run_dir, done, spec.label, echo)
            done = RunResult.from_disk(run_dir / "result.json")
        return done
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    main = distributed.is_main()  # a helper process of a multi-process launch trains, then waits: no lock
    lock = rundir.lock(run_dir) if main else None
    orphan = False
    try:
        return _run_in_dir(spec, run_dir, dataset_path=dataset_path, progress=progress and main,
                           echo=echo and main, data=data)
    except Exception:
        # failed before training began (bad data, a method that cannot run on it): the folder this call made
        # holds only its spec, log and error, no progress to resume; the error was raised to the caller
        orphan = main and created and not (run_dir / "attempts.json").exists()
        raise
    finally:
        if lock is not None:
            lock.close()
        if orphan:
            shutil.rmtree(run_dir, ignore_errors=True)


def checkpoint_weights(src_dir: Path, name: str) -> Path:
    """``<src_dir>/checkpoints/<name>/model.safetensors``, checked against ``<src_dir>/model/model.safetensors``
    (the same tensor names and shapes); a SpecError naming what differs otherwise."""
    from safetensors import safe_open

    ckpt, own = src_dir / "checkpoints" / name / "model.safetensors", src_dir / "model" / "model.safetensors"
    if not ckpt.is_file():
        have = sorted(p.parent.name for p in (src_dir / "checkpoints").glob("*/model.safetensors"))
        raise SpecError(f"eval.weights={name!r}: {ckpt} does not exist; the run's checkpoints with weights: "
                        + (", ".join(have) or "none"))
    if not own.is_file():
        raise SpecError(f"eval.weights: {own} does not exist (this method does not save its model as safetensors)")

    def shapes(path: Path) -> dict:
        with safe_open(str(path), "pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}

    a, b = shapes(own), shapes(ckpt)
    if a != b:
        diff = sorted(set(a) ^ set(b)) or sorted(k for k in a if a[k] != b[k])
        raise SpecError(f"eval.weights={name!r}: {ckpt} does not hold the tensors of {own} (first difference: "
                        f"{diff[0]})")
    return ckpt


@contextlib.contextmanager
def checkpoint_model(src_dir: Path, weights: str | None):
    """The model folder to load: ``<src_dir>/model``, or (``weights``) a temporary copy of it whose
    ``model.safetensors`` is that checkpoint's (:func:`checkpoint_weights`)."""
    if weights is None:
        yield src_dir / "model"
        return
    ckpt = checkpoint_weights(src_dir, weights)
    with tempfile.TemporaryDirectory(prefix="reasonrec-weights-") as tmp:
        model_dir = Path(tmp) / "model"
        shutil.copytree(src_dir / "model", model_dir)
        shutil.copyfile(ckpt, model_dir / "model.safetensors")
        yield model_dir


def can_reload(cls: type[Method]) -> bool:
    """Whether a method implements both save and load (and so can be re-evaluated)."""
    return cls.save is not Method.save and cls.load is not Method.load


def _run_in_dir(spec: RunSpec, run_dir: Path, *, dataset_path, progress, echo, data,
                source: tuple[Path, RunResult] | None = None) -> RunResult:
    main, started = distributed.is_main(), time.time()
    if main:
        spec_path = run_dir / "spec.json"
        resumed = (run_dir / "attempts.json").is_file()
        atomic_write_json(spec_path, spec.model_dump(mode="json"))
        (run_dir / "error.txt").unlink(missing_ok=True)  # from an earlier attempt
        log = rundir.logger(run_dir / "run.log", echo)
        log(f"{'resuming' if resumed else 'starting'} run {spec.run_id()} in {run_dir}"
            + (f" (process 0 of {distributed.world_size()})" if distributed.world_size() > 1 else ""))
    else:
        def log(msg: str) -> None:
            pass
    try:
        return _run_body(spec, run_dir, main=main, started=started, dataset_path=dataset_path, progress=progress,
                         log=log, data=data, source=source)
    except Exception as e:
        if main:
            atomic_write_text(run_dir / "error.txt", f"{type(e).__name__}: {e}\n")
            log(f"run failed: {type(e).__name__}: {e}")
        raise


def _run_body(spec: RunSpec, run_dir: Path, *, main: bool, started: float, dataset_path, progress, log, data,
              source: tuple[Path, RunResult] | None) -> RunResult:
    cls = get_method(spec.method)
    config = method_config(spec)
    if spec.threads:
        import torch

        torch.set_num_threads(spec.threads)
    if data is None:
        with distributed.main_process_first():  # the others read the main process's cache
            card = spec.resolution["card"] if spec.resolution else (spec.dataset_card or spec.dataset)
            data = prepare(card, spec.data, path=dataset_path, progress=progress, log=log)
    if cls.info.needs_text and not any(data.item_text):
        raise SpecError(f"method '{spec.method}' needs item text, dataset '{spec.dataset}' has none")
    if main and source is None:
        rundir.claim_for_data(run_dir, data, log)
    set_seed(spec.seed)
    method: Method = cls(config)
    trained = rundir.finished_training(run_dir, data, log) if source is None else None
    if trained is not None and not main:
        return RunResult.from_disk(distributed.wait_for_result(run_dir, since=started))
    if trained is not None:  # an earlier attempt trained and saved the model, then stopped while evaluating
        t0 = time.perf_counter()
        method.load(run_dir / "model", data)
        fit_facts, train_seconds = trained["facts"], trained["seconds"]
        fit_facts["evaluation_attempts"] = fit_facts.get("evaluation_attempts", 1) + 1
        log(f"training finished in an earlier attempt ({train_seconds:.1f}s): reloaded {run_dir / 'model'} in "
            f"{time.perf_counter() - t0:.1f}s, evaluating it (no training)")
    elif source is None:
        fit_facts, train_seconds = _fit_and_save(method, spec, run_dir, data, main=main, progress=progress, log=log)
        if not main:  # the main process evaluates and writes the result
            return RunResult.from_disk(distributed.wait_for_result(run_dir, since=started))
    else:  # re-evaluation: reload the source run's model; no training
        src_dir, src = source
        if src.data.get("fingerprint") != data.fingerprint:
            raise SpecError(f"run {src.run_id} was trained on data {src.data.get('fingerprint')}, the prepared data is "
                            f"{data.fingerprint} (dataset files or code changed): train again")
        t0 = time.perf_counter()
        with checkpoint_model(src_dir, spec.eval.weights) as model_dir:
            method.load(model_dir, data)
        reload_seconds = time.perf_counter() - t0
        what = f"{src_dir / 'model'}" if spec.eval.weights is None else \
            f"{src_dir / 'model'} with the weights of checkpoints/{spec.eval.weights}"
        log(f"loaded the model trained in {src.run_id} from {what} in {reload_seconds:.1f}s (no training)")
        fit_facts = {**src.training.model_dump(), "trained_in": src.run_id, "reload_seconds": round(reload_seconds, 3)}
        train_seconds = fit_facts.pop("seconds")

    test = data.split(spec.eval.split)  # "valid" for a tuning trial: the test split is never read
    if spec.eval.max_users and spec.eval.max_users < len(test):
        idx = np.sort(np.random.default_rng(EVAL_SUBSET_SEED).choice(len(test), spec.eval.max_users, replace=False))
        test = test.subset(idx)
    options = {name: getattr(spec.eval, name) for name in cls.inference_options}
    decode_log = decode_log_for(spec, run_dir, test, data.max_history, options, source) if main else None
    items, latency, stats, resumed = timed_recommend(method, test.histories, spec.eval, data.max_history, progress,
                                                     decode_log=decode_log, **options)
    if resumed:
        log(f"ranking resumed: {resumed['batches']} of {resumed['of']} batches ranked in an earlier attempt were "
            f"reused ({run_dir / rundir.DECODE_DIR})")
    ev = evaluate(items, test.targets, data.n_items, ks=spec.eval.ks,
                  histories=test.histories if spec.eval.exclude_history else None, sid_groups=data.sid_groups)
    log(f"{spec.eval.split} metrics: " + ", ".join(f"{k} {v:.4f}" for k, v in ev.metrics.items()))
    if ev.sid_level is not None:
        log("SID-level (items that shared a SID count as one): " +
            ", ".join(f"{k} {v:.4f}" for k, v in ev.sid_level.items()))

    by_stat = {}
    for name, v in stats.items():  # per-user integer statistics (e.g. latent steps): mean and per-value table
        table = grouped_metrics(ev.ranks, np.asarray(v), ks=spec.eval.ks)
        by_stat[name] = {"mean": round(float(np.mean(v)), 4), "max": float(np.max(v)),
                         **({"by_value": table} if table is not None else {})}  # a table for <= 32 values
        log(f"{name}: mean {by_stat[name]['mean']}" + ("; " + ", ".join(
            f"{k}: {t['share']:.1%} N@10 {t.get('NDCG@10', float('nan')):.4f}" for k, t in table.items())
            if table is not None else ""))
    atomic_write_json(run_dir / "per_user.json", {
        "users": test.users.tolist(), "targets": test.targets.tolist(), "ranks": ev.ranks.tolist(),
        "stats": {k: np.asarray(v).tolist() for k, v in stats.items()}})
    result = RunResult(
        run_id=spec.run_id(), spec=spec, method_info=cls.info.model_dump(), metrics=ev.metrics,
        latency=latency, training=Training(seconds=round(train_seconds, 3), **fit_facts),
        evaluation={"split": spec.eval.split, "n_users": len(test), "ks": list(spec.eval.ks), "metrics": list(ev.metrics),
                    "beam_width": spec.eval.beam_width, "inference": options,
                    "exclude_history": spec.eval.exclude_history,
                    "max_history": data.max_history, "invalid_items": ev.invalid, "duplicate_items": ev.duplicates,
                    "per_user_file": "per_user.json", **({"by_stat": by_stat} if by_stat else {}),
                    **({"resumed_batches": resumed} if resumed else {}),
                    **_levels(ev, data)},
        method_facts={"config": config.model_dump(mode="json"), **method.describe(),
                      "row": row_facts(spec, config.model_dump(mode="json"))},
        data={"name": data.name, "fingerprint": data.fingerprint, "stats": data.stats,
              "settings": data.settings.model_dump(mode="json")},
        environment=provenance.environment(),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    result.to_disk(run_dir)  # last: its presence marks the run complete
    (run_dir / "error.txt").unlink(missing_ok=True)
    if decode_log is not None:
        decode_log.remove()
    log(f"wrote {run_dir / 'result.json'}")
    return result


def _levels(ev, data: SIDData) -> dict:
    """Which level the metrics are (item: the tables'), and the SID-level ones where they can differ."""
    if data.sid_groups is None:
        return {"level": "item", "sid_level": None, "sid_level_note": "not recorded for this data cache"}
    if ev.sid_level is None:
        return {"level": "item", "sid_level": "equal", "sid_level_note": "no two items shared a SID"}
    shared = int(len(data.sid_groups) - len(np.unique(data.sid_groups)))
    return {"level": "item", "sid_level": ev.sid_level,
            "sid_level_note": f"items that shared a SID before collisions were resolved count as one answer "
                              f"({shared} items beyond one per SID)"}


def _fit_and_save(method: Method, spec: RunSpec, run_dir: Path, data: SIDData, *, main: bool, progress: bool,
                  log) -> tuple[dict, float]:
    """``fit`` (resuming from ``checkpoints/``), then ``save`` into ``model/``. Returns the training facts
    (with the attempts of this run and whether it was resumed) and the training seconds of all attempts."""
    tracker = None
    if main and spec.tracking.log_with:
        from bench.tracking import Tracker

        folder = Path(spec.tracking.dir) if spec.tracking.dir else run_dir / "tracking"
        tracker = Tracker(spec.tracking.log_with, folder, spec.run_id(), spec.model_dump(mode="json"))
        log(f"tracking with {spec.tracking.log_with}" + (f" in {folder}" if spec.tracking.log_with == "tensorboard" else ""))
    ctx = FitContext(workdir=run_dir / "checkpoints", seed=spec.seed, progress=progress, log=log,
                     selection_metric=spec.selection.metric, exclude_history=spec.eval.exclude_history, tracker=tracker)
    ctx.workdir.mkdir(exist_ok=True)
    valid = data.split("valid")
    clock = rundir.AttemptClock(run_dir) if main else contextlib.nullcontext()
    from bench.generative.stages import waited_seconds

    waited_seconds(reset=True)
    t0 = time.perf_counter()
    with clock, (tracker if tracker is not None else contextlib.nullcontext()):
        fit_facts = dict(method.fit(data, valid=valid, ctx=ctx) or {})
        waited = waited_seconds(reset=True)  # another run was training a stage this one then reused
        seconds = time.perf_counter() - t0 - waited
        if waited:
            fit_facts["stage_wait_seconds"] = round(waited, 1)
        if main:
            _save_model(method, run_dir / "model", log)
    if not main:
        return fit_facts, seconds
    fit_facts["attempts"] = clock.attempts
    fit_facts["resumed"] = clock.attempts > 1
    if clock.attempts > 1:
        fit_facts["this_attempt_seconds"] = round(seconds, 3)
        seconds += clock.previous_seconds
    fit_facts["model_saved"] = (run_dir / "model").is_dir()
    log(f"trained in {seconds:.1f}s" + (f" over {clock.attempts} attempts" if clock.attempts > 1 else "")
        + f"; {_facts_summary(fit_facts)} (all facts: result.json training)")
    if fit_facts["model_saved"]:  # a run stopped during evaluation resumes from here, without training again
        atomic_write_json(run_dir / rundir.TRAINED_FILE, {"seconds": round(seconds, 3), "facts": fit_facts,
                                                  "data_fingerprint": data.fingerprint})
    return fit_facts, seconds


#: written next to ``model/`` when training finished: the training facts a resumed evaluation reports
def _facts_summary(facts: dict) -> str:
    """One short line of a run's training facts: each phase's epochs, best validation score, minutes and
    reuse (the full facts, histories included, go to result.json, not to the log)."""
    parts = []
    for name, v in facts.items():
        if isinstance(v, dict) and ("seconds" in v or "best_valid" in v):
            bits = [f"{v['epochs_run']} epochs" if "epochs_run" in v else "",
                    f"best {v['best_valid']:.4f}" if isinstance(v.get("best_valid"), (int, float)) else "",
                    f"{v['seconds'] / 60:.1f} min" if isinstance(v.get("seconds"), (int, float)) else "",
                    "reused" if v.get("reused") else ""]
            parts.append(f"{name}: " + ", ".join(b for b in bits if b))
    if not parts:  # a method without phases (RecBole, pop): its scalar facts
        parts = [f"{k} {v}" for k, v in facts.items() if isinstance(v, (int, float, str, bool)) and k != "history"]
    return "; ".join(parts)[:400]


def _save_model(method: Method, path: Path, log) -> None:
    if not can_reload(type(method)):
        log(f"{method.info.name} implements no save()/load(): the model is not kept (it cannot be re-evaluated)")
        return
    with atomic_dir(path) as tmp:
        method.save(tmp)
    log(f"saved the model to {path}")
