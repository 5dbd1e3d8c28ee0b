"""``reasonrec evaluate``: a finished run's trained model ranked again under other evaluation settings, without
training (its ``model/`` reloaded through the method's ``load``; a new run id and folder)."""
from __future__ import annotations

from pathlib import Path

from bench.overrides import flatten
from bench.config import TRAINING_FIELDS, reevaluation_spec, resolve_spec
from bench.registry import get_method
from bench.results import RunResult
from bench.rundir import is_complete, lock
from bench.runner import _run_in_dir, can_reload, checkpoint_weights
from bench.specs import SpecError


def reevaluate(source: str | Path, sets: list[str] = (), out: str | Path | None = None, *,
               dataset_path: str | None = None, progress: bool = True, echo: bool = True) -> RunResult:
    """Evaluate the trained model of the complete run in ``source`` under other evaluation settings
    (``eval.*``: test users, beam width, history exclusion...) without training again.

    The method's :meth:`~bench.method.Method.load` restores ``<source>/model`` (what the runner saved
    after ``fit``); ``fit`` is never called. The new run gets its own run id and directory (default:
    beside the source); its ``training`` block is the source's, marked ``trained_in: <source run id>``.
    """
    source = Path(source)
    if not (source / "result.json").is_file():
        raise SpecError(f"{source} is not a complete run (no result.json); finish it first with `reasonrec run`"
                        " or `reasonrec suite`, which resume it")
    src = RunResult.from_disk(source / "result.json")
    cls = get_method(src.spec.method)
    if not can_reload(cls):
        raise SpecError(f"method '{src.spec.method}' does not implement save() and load(), so its trained model "
                        f"cannot be reloaded: re-evaluating it needs training again (`reasonrec run` with these "
                        f"eval settings)")
    if not (source / "model").is_dir():
        raise SpecError(f"{source} has no model/ folder (exported result files only, or a run from before models "
                        f"were saved): nothing to reload")
    spec = reevaluation_spec(src.spec, sets, dataset_path=dataset_path)
    if spec.run_id() == src.run_id:
        raise SpecError(f"these are the evaluation settings of {src.run_id} itself; its result is {source / 'result.json'}")
    mine, theirs = spec.model_dump(mode="json"), resolve_spec(src.spec, check_files=False).model_dump(mode="json")
    if not any(s.split("=", 1)[0].strip() == "label" for s in sets):  # named after what it changed
        before = flatten(theirs["eval"], "eval.")
        changed = {k: v for k, v in flatten(mine["eval"], "eval.").items() if before.get(k) != v}
        spec = spec.model_copy(update={"label": f"{src.display_name} ("
                                                + ", ".join(f"{k}={v}" for k, v in sorted(changed.items())) + ")"})
    if spec.eval.weights is not None:  # checked before any folder exists
        checkpoint_weights(source, spec.eval.weights)
    differ = [f for f in TRAINING_FIELDS if mine[f] != theirs[f]]
    if differ:  # cannot happen through reevaluation_spec; a guard for API callers
        raise SpecError(f"run {src.run_id} was trained with other {', '.join(differ)}; its model does not apply")
    run_dir = Path(out or source.parent).resolve() / spec.run_id()
    if is_complete(run_dir):
        return RunResult.from_disk(run_dir / "result.json")
    run_dir.mkdir(parents=True, exist_ok=True)
    held = lock(run_dir)
    try:
        return _run_in_dir(spec, run_dir, dataset_path=dataset_path, progress=progress, echo=echo, data=None,
                           source=(source, src))
    finally:
        held.close()

