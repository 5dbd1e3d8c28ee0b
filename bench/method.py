"""The method interface: plugins train and rank; the runner does everything else."""
from __future__ import annotations

import contextlib
import contextvars

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator

if TYPE_CHECKING:
    from bench.data import SIDData, Split


class MethodInfo(BaseModel):
    """Typed metadata shown by ``reasonrec ls`` and in the leaderboard."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    family: Literal["baseline", "traditional", "generative", "latent", "explicit-cot"]
    paper: str = ""
    description: str = ""
    needs_text: bool = False
    needs_cot: bool = False
    uses_sids: bool = False


def _merge_into_defaults(model_cls: type[BaseModel], values: Any) -> Any:
    """A partial dict for a nested-config field overrides that field's *default* (so
    ``sft: {batch_size: 16}`` keeps the method's own ``sft.epochs`` and ``sft.lr``), recursively."""
    if not isinstance(values, dict):
        return values
    out = dict(values)
    for name, info in model_cls.model_fields.items():
        default = info.default
        if name in out and isinstance(out[name], dict) and isinstance(default, BaseModel):
            merged = default.model_dump()
            merged.update(_merge_into_defaults(type(default), out[name]))
            out[name] = merged
    return out


class MethodConfig(BaseModel):
    """Base of every method's hyperparameters: strict, so a typo names the field. A nested block
    given in part keeps the method's defaults for the rest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _partial_blocks(cls, values):
        return _merge_into_defaults(cls, values)


class TrainingDiverged(RuntimeError):
    """A training loss became NaN or infinite: the run stops with this error and writes no result."""


@dataclass
class Recommendations:
    """Ranked item ids per user, best first; -1 pads rows shorter than k."""

    items: np.ndarray                      # [n, k] int64
    scores: np.ndarray | None = None       # [n, k] float, higher is better
    stats: dict[str, np.ndarray] = field(default_factory=dict)  # optional per-sample stats


_VALIDATION_HOOK: contextvars.ContextVar = contextvars.ContextVar("validation_hook", default=None)
_VALIDATION_EPOCH: contextvars.ContextVar = contextvars.ContextVar("validation_epoch", default=None)


@contextlib.contextmanager
def validation_hook(fn):
    """Call ``fn(score, epoch)`` after every model-selection validation (:meth:`FitContext.validate`) in this
    context: ``reasonrec tune`` reports the intermediate scores to its pruner, which may raise to stop.
    ``epoch`` is the one the training loop named (:func:`validation_epoch`), or None."""
    token = _VALIDATION_HOOK.set(fn)
    try:
        yield
    finally:
        _VALIDATION_HOOK.reset(token)


@contextlib.contextmanager
def validation_epoch(epoch: int):
    """A training loop names the epoch (0-based, counted over every attempt of a resumed run) that the
    validations inside belong to, so a tuning trial whose run resumed reports each score at its own epoch."""
    token = _VALIDATION_EPOCH.set(int(epoch))
    try:
        yield
    finally:
        _VALIDATION_EPOCH.reset(token)


@dataclass
class FitContext:
    """What the runner hands a method besides the data. Evaluation settings (beam width, k) are not
    here: they reach :meth:`Method.recommend`."""

    workdir: Path                      # checkpoints go here; resuming reads them back
    seed: int = 0
    progress: bool = True
    log: Any = print                   # callable(str)
    selection_metric: str = "NDCG@10"  # RunSpec.selection.metric
    exclude_history: bool = False      # as the test evaluation (RunSpec.eval.exclude_history)
    tracker: Any = None                # bench.tracking.Tracker (RunSpec.tracking) or None: log_epoch(phase, record)

    def validate(self, recommend, valid: Split, n_items: int, *, max_users: int | None = None,
                 batch_size: int = 256) -> dict:
        """The one model-selection protocol: ``recommend(histories, k) -> item ids [n, >=k]`` scored by
        the shared evaluator on ``valid`` (a fixed random subset of ``max_users`` users where decoding is
        expensive). Returns the metrics, ``users`` and ``score`` (the selection metric; higher is better)."""
        from bench.metrics import validate

        got = validate(recommend, valid.histories, valid.targets, n_items, metric=self.selection_metric,
                       exclude_history=self.exclude_history, max_users=max_users, batch_size=batch_size)
        hook = _VALIDATION_HOOK.get()
        if hook is not None:  # e.g. a tuning trial's pruner: may raise to stop a hopeless trial
            hook(float(got["score"]), _VALIDATION_EPOCH.get())
        return got

    def selection(self, max_users: int | None, n_valid: int) -> dict:
        """How the model was selected, for the result file."""
        return {"metric": self.selection_metric, "split": "valid", "users": min(max_users or n_valid, n_valid),
                "exclude_history": self.exclude_history, "evaluator": "bench.metrics.validate"}


class Method:
    info: ClassVar[MethodInfo]
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    #: small-budget overrides used by ``reasonrec demo`` and the registry-wide smoke test
    demo_config: ClassVar[dict[str, Any]] = {}
    #: several demo rows (label -> overrides on top of ``demo_config``), e.g. a method's variants; empty =
    #: one row with ``demo_config``
    demo_rows: ClassVar[dict[str, dict[str, Any]]] = {}
    #: demo order: higher first (the longest rows first, so parallel demo workers finish together)
    demo_priority: ClassVar[int] = 0
    #: per-row demo order (label -> priority) where a row differs from ``demo_priority``: e.g. a row that
    #: reuses a stage another row of the method trains waits for it, so it is queued last instead of
    #: holding a worker idle on the stage lock
    demo_row_priority: ClassVar[dict[str, int]] = {}
    smoke_config: ClassVar[dict[str, Any]] = {}
    #: config fields added after the method's rows were committed, each at the value that reproduces the
    #: behaviour before it existed: at that value they are left out of run ids and stage keys
    #: (:func:`bench.specs.without_late_settings`), so committed rows keep their ids
    late_settings: ClassVar[dict[str, Any]] = {}
    #: fields renamed after rows were committed: new name -> the old name run ids and stage keys still hash it
    #: under (:func:`bench.specs.hashed_names`), so committed rows and cached stages keep theirs
    renamed_settings: ClassVar[dict[str, str]] = {}

    @classmethod
    def inert_settings(cls, config: dict[str, Any]) -> set[str]:
        """Dotted config keys that change no number given the rest of ``config`` (a config dump): left out of
        run ids, so a setting added for a phase a row does not run does not change the row's id. Default:
        none."""
        return set()
    #: evaluation settings (``RunSpec.eval`` fields) the runner passes to :meth:`recommend` as keywords
    inference_options: ClassVar[tuple[str, ...]] = ()
    #: the paper's ablation tables this method's rows fill: table key (a ``published.json`` section) ->
    #: (title, dataset, rows); a row is (the paper's row name or None, method, config subset): every result
    #: of that method on that dataset whose resolved ``method_config`` contains the subset is listed under
    #: it (``python -m bench.compare --tables``)
    paper_tables: ClassVar[dict[str, tuple[str, str, list[tuple[str | None, str, dict[str, Any]]]]]] = {}
    #: the paper's Table-4 row (a ``published.json`` ``table4_latency`` name) this method's latency compares
    #: with; "" = none. :meth:`paper_latency_row` may choose by config (GREAM: its reasoning mode only)
    table4_row: ClassVar[str] = ""

    def paper_latency_row(self) -> str:
        """The paper's Table-4 row this model's latency is set beside (``reasonrec bench latency``)."""
        return self.table4_row

    def __init__(self, config: MethodConfig | None = None):
        self.config = config if config is not None else self.Config()

    def fit(self, data: SIDData, *, valid: Split, ctx: FitContext) -> dict[str, Any]:
        """Train on ``data`` (train parts only); may use ``valid`` for early stopping.
        Returns a small dict of training facts (epochs, best validation score, ...)."""
        raise NotImplementedError

    def recommend(self, histories: list[list[int]], *, k: int) -> Recommendations:
        """Rank items for each history (internal item ids, oldest first). A method that declares
        ``inference_options = ("beam_width",)`` also receives ``beam_width=...`` from the run's
        evaluation settings."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Facts recorded in the result (model size, beam width...)."""
        return {}

    def save(self, path: Path) -> None:
        """Write the fitted model into the folder ``path`` (created by the caller, owned by the method).
        The runner calls it after :meth:`fit` (into ``<run>/model``); ``reasonrec evaluate`` calls
        :meth:`load` on it and never ``fit``. A method without save/load cannot be re-evaluated."""
        raise NotImplementedError(f"{self.info.name} does not implement save()")

    def load(self, path: Path, data: SIDData) -> None:
        """Restore what :meth:`save` wrote into ``path``; afterwards ``recommend`` works as after ``fit``."""
        raise NotImplementedError(f"{self.info.name} does not implement load()")
