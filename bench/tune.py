"""``reasonrec tune``: validation-based hyperparameter search for any registered method, on Optuna.

A search space is a YAML file (any method can have one; ``leaderboard/spaces/`` ships SASRec's and
GRU4Rec's)::

    method: sasrec                      # optional: the method the space is for (checked)
    params:                             # dotted run-spec keys, as ``--set`` takes them
      method_config.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
      method_config.n_layers: {type: int, low: 1, high: 3}
      method_config.hidden_size: {type: categorical, choices: [64, 128, 256]}
      data.max_history: {type: categorical, choices: [20, 50]}   # a protocol variant, recorded in the result
    fixed:                              # the same for every trial
      method_config.epochs: 40
      method_config.max_minutes: 30
    start:                              # optional: trials run first, in this order (e.g. the defaults, so
      - {method_config.lr: 1.0e-3, method_config.n_layers: 2, method_config.hidden_size: 64}
                                        # the study's best is never worse on validation than them)
    prune_after: 2                      # optional: epochs a trial runs before it may be pruned

Each trial is an ordinary run (its own run id under ``<out>/<study>/trials/``, resumable) whose final
ranking is scored on the **validation** split (``eval.split: valid``): the objective is the validation
metric of the selection protocol (NDCG@10 by default) from the shared evaluator, and the test split is
never read. The TPE sampler proposes; a median pruner stops trials whose intermediate validation scores
(one per epoch, reported through :func:`bench.method.validation_hook`) trail the earlier trials'. The study
lives in ``<out>/<study>/study.db`` (SQLite): rerunning the same command resumes it (a trial that was
running when the process stopped is retried with the same parameters, so its run resumes from its
checkpoint). At the end: ``best.yaml`` (a run config for ``reasonrec run --config`` and suites, test
evaluation) and ``trials.md`` (every trial, also printed).
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from bench import locks
from bench.atomic import atomic_write_text
from bench.overrides import deep_merge, load_yaml, set_dotted
from bench.specs import SpecError, Strict, validated

TOP_LEVEL = ("method_config.", "data.", "eval.", "selection.")


class Param(Strict):
    """One searched setting: a float or int range (``log`` for a log scale, ``step`` for a grid) or a
    categorical choice."""
    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(None, gt=0)
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _check(self):
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty 'choices' list")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"a {self.type} parameter needs low < high (got low={self.low}, high={self.high})")
        elif self.log and self.low <= 0:
            raise ValueError("a log-scale parameter needs low > 0")
        return self

    def suggest(self, trial, name: str):
        if self.type == "categorical":
            return trial.suggest_categorical(name, self.choices)
        if self.type == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return trial.suggest_float(name, self.low, self.high, log=self.log, step=self.step)


class SearchSpace(Strict):
    method: str | None = None
    params: dict[str, Param]
    fixed: dict[str, Any] = Field(default_factory=dict)
    start: list[dict[str, Any]] = Field(default_factory=list,
                                        description="trials to run first (every searched key, a value inside its range)")
    prune_after: int = Field(2, ge=1, description="epochs every trial runs before the median pruner may stop it "
                                                  "(raise it for settings that start slowly: large batches, low lr)")

    @model_validator(mode="after")
    def _keys(self):
        for key in [*self.params, *self.fixed]:
            if not key.startswith(TOP_LEVEL):
                raise ValueError(f"'{key}': keys are dotted run-spec paths starting with one of "
                                 f"{', '.join(TOP_LEVEL)} (e.g. method_config.lr)")
            if key.startswith("eval.split"):
                raise ValueError("'eval.split' is set by tune itself (trials rank the validation split)")
        both = set(self.params) & set(self.fixed)
        if both:
            raise ValueError(f"{sorted(both)}: both searched and fixed")
        for i, point in enumerate(self.start):
            if set(point) != set(self.params):
                missing, extra = sorted(set(self.params) - set(point)), sorted(set(point) - set(self.params))
                raise ValueError(f"start[{i}] must set every searched key and only those"
                                 + (f"; missing {missing}" if missing else "") + (f"; not searched {extra}" if extra else ""))
            for k, v in point.items():
                p = self.params[k]
                if p.type == "categorical":  # by type and value (True == 1 in python)
                    ok = any(type(v) is type(c) and v == c for c in p.choices)
                else:
                    kinds = (int,) if p.type == "int" else (int, float)
                    ok = isinstance(v, kinds) and not isinstance(v, bool) and p.low <= v <= p.high and (
                        p.step is None or abs((v - p.low) / p.step - round((v - p.low) / p.step)) < 1e-9)
                if not ok:
                    raise ValueError(f"start[{i}].{k} = {v!r} is outside the searched "
                                     + (f"choices {p.choices}" if p.type == "categorical" else
                                        f"{p.type} range [{p.low}, {p.high}]" + (f" step {p.step}" if p.step else "")))
        return self


def load_space(path: str | Path) -> SearchSpace:
    return validated(SearchSpace, load_yaml(path), f"search space {path}")


def _nest(flat: dict[str, Any]) -> dict:
    tree: dict = {}
    for k, v in flat.items():
        set_dotted(tree, k, v)
    return tree


def _lock(path: Path) -> locks.Held:
    """One tune process per study (a second would share its trials' run folders)."""
    try:
        return locks.hold(path)
    except locks.Busy:
        raise SpecError(f"another `reasonrec tune` is running this study ({path.parent})") from None


def study_name(method: str, dataset: str, space: SearchSpace, seed: int) -> str:
    dumped = space.model_dump(mode="json")
    if not dumped["start"]:  # spaces written before the field existed keep their study
        dumped.pop("start")
    if dumped["prune_after"] == 2:  # likewise
        dumped.pop("prune_after")
    digest = hashlib.sha256(json.dumps({"method": method, "dataset": dataset, "seed": seed,
                                        "space": dumped}, sort_keys=True).encode())
    return f"{method}-{dataset}-s{seed}-{digest.hexdigest()[:8]}"


def make_pruner(space: SearchSpace):
    """The median pruner: from the third trial on, a trial whose validation score at an epoch trails the
    median of the earlier trials' scores at that epoch is stopped, once it has run ``prune_after`` epochs
    (epochs are reported as steps 0, 1, ...)."""
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=space.prune_after - 1)


def tune(method: str, dataset: str, space_path: str | Path, out: str | Path = "runs/tune", *, trials: int = 20,
         minutes: float | None = None, seed: int = 0, dataset_path: str | None = None, data=None,
         progress: bool = True, log=print) -> dict:
    """Run (or resume) the study; returns {study, dir, best, trials} and writes best.yaml / trials.md."""
    import optuna

    from bench.config import build_spec
    from bench.method import TrainingDiverged, validation_hook
    from bench.registry import get_method
    from bench.runner import run

    space = load_space(space_path)
    if space.method is not None and space.method != method:
        raise SpecError(f"search space {space_path} is for method '{space.method}', not '{method}'")
    get_method(method)  # unknown method: a did-you-mean error before anything is created

    def spec_for(values: dict[str, Any]):
        layers = deep_merge(_nest(space.fixed), _nest(values))
        layers = deep_merge(layers, {"eval": {"split": "valid"}})
        return build_spec(method, dataset, seed=seed, dataset_path=dataset_path, **layers)

    spec_for({k: (p.choices[0] if p.type == "categorical" else p.low) for k, p in space.params.items()})  # validate
    name = study_name(method, dataset, space, seed)
    folder = Path(out) / name
    folder.mkdir(parents=True, exist_ok=True)
    lock = _lock(folder / ".lock")
    try:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = f"sqlite:///{(folder / 'study.db').resolve()}"
        pruner = make_pruner(space)
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize", pruner=pruner,
                                    load_if_exists=True)
        # the sampler's random start-up draws continue where the earlier processes left off (a fixed seed
        # would propose the first trials' parameters again after a resume): seeded by the trials so far
        study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials))
        state = optuna.trial.TrialState
        for t in study.get_trials(deepcopy=False, states=(state.RUNNING,)):
            # this process holds the study's lock: a running trial is one a stopped process left behind
            study.tell(t.number, state=state.FAIL)
            study.enqueue_trial(t.params)
            log(f"trial {t.number} was interrupted: queued again with the same parameters (its run resumes)")
        if not study.trials:  # a new study: the given starting points first
            for point in space.start:
                study.enqueue_trial(point)
        done = len(study.get_trials(deepcopy=False, states=(state.COMPLETE, state.PRUNED)))
        todo = max(0, trials - done)
        log(f"study {name}: {done} trial(s) done, {todo} to run (of {trials}); folder {folder}")

        def objective(trial):
            values = {k: p.suggest(trial, k) for k, p in space.params.items()}
            # the label (not part of the run id) names the study and trial on the leaderboard's tuning tables
            spec = spec_for(values).model_copy(update={"label": f"{name} #{trial.number}"})
            trial.set_user_attr("run_id", spec.run_id())
            step = [0]

            def report(score: float, epoch: int | None = None) -> None:
                # at the run's own epoch: a retried trial's run resumes mid-way, and its scores must meet the
                # other trials' scores of the same epoch in the pruner's median
                step[0] = step[0] if epoch is None else epoch
                trial.report(score, step[0])
                step[0] += 1
                if trial.should_prune():
                    raise optuna.TrialPruned(f"validation {score:.4f} after {step[0]} epoch(s) trails the "
                                             "median of earlier trials")

            t0 = time.time()
            with validation_hook(report):
                result = run(spec, folder / "trials", dataset_path=dataset_path, progress=progress, echo=False,
                             data=data)
            metric = spec.selection.metric
            # a retried trial's run resumed: its epochs and minutes are the run's, over every attempt
            training = result.training.model_dump()
            trial.set_user_attr("minutes", round(float(training.get("seconds") or time.time() - t0) / 60, 2))
            if training.get("epochs_run") is not None:
                trial.set_user_attr("epochs", int(training["epochs_run"]))
            log(f"trial {trial.number}: valid {metric} {result.metrics[metric]:.4f}  {values}")
            return result.metrics[metric]

        if todo:
            # a diverged trial (NaN loss: TrainingDiverged) is a failed trial, not the end of the study
            study.optimize(objective, n_trials=todo, timeout=minutes * 60 if minutes else None,
                           catch=(TrainingDiverged,), gc_after_trial=True)
        return _report(study, folder, method, spec_for, space.fixed, log)
    finally:
        lock.close()


def _report(study, folder: Path, method: str, spec_for, fixed: dict, log) -> dict:
    import optuna

    state = optuna.trial.TrialState
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({"trial": t.number, "state": t.state.name.lower(),
                     "value": None if t.value is None else round(t.value, 5),
                     "epochs": t.user_attrs.get("epochs", len(t.intermediate_values)), "minutes": t.user_attrs.get("minutes"),
                     "run_id": t.user_attrs.get("run_id"),
                     "params": {k: (float(f"{v:.3g}") if isinstance(v, float) else v) for k, v in t.params.items()}})
    keys = sorted({k for r in rows for k in r["params"]})
    lines = ["| trial | state | valid | epochs | minutes | " + " | ".join(keys) + " | run |",
             "|---|---|---|---|---|" + "---|" * len(keys) + "---|"]
    for r in rows:
        value = "" if r["value"] is None else f"{r['value']:.4f}"
        lines.append(f"| {r['trial']} | {r['state']} | {value} | "
                     f"{r['epochs']} | {r['minutes'] or ''} | "
                     + " | ".join(str(r["params"].get(k, "")) for k in keys) + f" | {r['run_id'] or ''} |")
    table = "\n".join(lines)
    complete = study.get_trials(deepcopy=False, states=(state.COMPLETE,))
    best = None
    if complete:
        bt = study.best_trial
        spec = spec_for(bt.params)
        best = {"trial": bt.number, "value": bt.value, "params": bt.params, "run_id": bt.user_attrs.get("run_id")}
        import yaml

        # the fixed and the best searched settings (the rest are defaults): a run config, test evaluation
        config = {**_nest({**fixed, **bt.params}), "label": f"{method} (tuned)"}
        atomic_write_text(folder / "best.yaml", f"# reasonrec tune: study {study.study_name}, best of "
                          f"{len(complete)} complete trial(s): trial {bt.number}, validation {bt.value:.5f}\n"
                          f"# reasonrec run --method {method} --dataset {spec.dataset} --config {folder / 'best.yaml'}\n"
                          + yaml.safe_dump(config, sort_keys=True))
    atomic_write_text(folder / "trials.md", table + "\n")
    log(table)
    if best:
        log(f"best: trial {best['trial']}, validation {best['value']:.4f}; config {folder / 'best.yaml'}")
    return {"study": study.study_name, "dir": str(folder), "best": best, "trials": rows}
