"""The result schema on disk: one ``result.json`` per run, written atomically and last."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from bench.atomic import atomic_write_json
from bench.specs import RunSpec, SpecError

SCHEMA_VERSION = 1


class Latency(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds_per_sample: float
    total_seconds: float
    n_samples: int
    batch_size: int
    warmup_batches: int


class Training(BaseModel):
    model_config = ConfigDict(extra="allow")
    seconds: float = 0.0


class RunResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: int = SCHEMA_VERSION
    run_id: str
    spec: RunSpec
    method_info: dict[str, Any]
    metrics: dict[str, float]
    latency: Latency
    training: Training
    evaluation: dict[str, Any] = Field(default_factory=dict)  # protocol facts: beam, exclusion, invalid...
    method_facts: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict)        # name, fingerprint, stats
    environment: dict[str, Any] = Field(default_factory=dict)
    created: str = ""
    _folder: Path | None = PrivateAttr(None)

    @field_validator("run_id")
    @classmethod
    def _plain_run_id(cls, v: str) -> str:
        # it names files and links on the site: no path separators, no URL schemes
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v) or ".." in v:
            raise ValueError(f"run_id {v!r} is not a plain name (letters, digits, '_', '.', '-')")
        return v  # where it was read from (its per_user.json is beside it)

    @property
    def folder(self) -> Path | None:
        return self._folder

    @property
    def display_name(self) -> str:
        return self.spec.label or self.spec.method

    def configuration(self) -> dict:
        """What determines this run's numbers, seed aside, in the current schema (:func:`upgrade`):
        method, dataset, the data's fingerprint, eval settings, selection metric and the *resolved* method
        config the run recorded (``method_facts.config``). Results written by different versions of the
        spec format (older ones stored only the overrides) compare equal when they ran the same thing;
        seeds of one configuration are one leaderboard row."""
        return {"method": self.spec.method, "dataset": self.spec.dataset, "label": self.spec.label,
                "data": self.data.get("fingerprint"), "eval": self.spec.eval.model_dump(mode="json"),
                "selection": self.spec.selection.metric,
                "method_config": self.method_facts["config"]}

    def trained_as(self) -> str:
        """A digest of what was trained: :meth:`configuration` without the eval settings and the label, and
        with the seed. A model re-made from a row's spec only to be timed (``reasonrec run --config <its
        spec.json> --set eval.max_users=64``) has that row's digest under another run id."""
        import hashlib

        what = {k: v for k, v in self.configuration().items() if k not in ("eval", "label")}
        what["seed"] = self.spec.seed
        return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def to_disk(self, folder: Path) -> Path:
        return atomic_write_json(folder / "result.json", self.model_dump(mode="json"))

    @classmethod
    def from_disk(cls, path: Path) -> "RunResult":
        obj = json.loads(Path(path).read_text())
        if obj.get("schema_version", 1) > SCHEMA_VERSION:
            raise ValueError(f"{path}: schema_version {obj['schema_version']} is newer than this reasonrec")
        r = cls(**upgrade(obj))
        r._folder = Path(path).parent
        return r


def upgrade(obj: dict) -> dict:
    """The one place a result file written by an older version is read into the current format (what the
    summary, the site and the reports may then rely on): ``evaluation.split`` (added with tuning; before, every
    result ranked the test split), ``method_facts.config`` (the resolved method config; older results stored
    only the spec's overrides) in the current schema (:func:`upgrade_config`), and a reused SFT stage marked on its
    phase (older results counted it only in ``training.reused_seconds``). What only the method registry can add
    (``method_facts.row``) is written by ``reasonrec upgrade`` (:mod:`bench.rowfacts`)."""
    obj = dict(obj)
    spec = obj.get("spec") or {}
    evaluation = dict(obj.get("evaluation") or {})
    evaluation.setdefault("split", "test")
    facts = dict(obj.get("method_facts") or {})
    metric = (spec.get("selection") or {}).get("metric") or "NDCG@10"
    facts["config"] = upgrade_config(facts.get("config", spec.get("method_config") or {}), metric)
    training = dict(obj.get("training") or {})
    if training.get("reused_seconds") and not any(isinstance(v, dict) and v.get("reused") for v in training.values()):
        sft = dict(training.get("sft") or {})
        sft["reused"] = True
        sft.setdefault("seconds", training["reused_seconds"])
        training["sft"] = sft
    return {**obj, "evaluation": evaluation, "method_facts": facts, "training": training}


#: method settings added after results were written, at the value that reproduces the behaviour before them
ADDED_SETTINGS = {("rl", "updates_per_rollout"): 1}


def upgrade_config(config: dict, selection_metric: str = "NDCG@10") -> dict:
    """A recorded method config in the current schema: ``valid_metric: ndcg@10`` (before ``protocol``
    existed, which means "the selection metric") is ``protocol`` when the selection metric is NDCG@10, and
    settings added later take the value that reproduces the older behaviour (:data:`ADDED_SETTINGS`)."""
    out = json.loads(json.dumps(config))
    if out.get("valid_metric") == "ndcg@10" and selection_metric == "NDCG@10":
        out["valid_metric"] = "protocol"
    for path, value in ADDED_SETTINGS.items():
        node = out
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get(path[-1]) is None:
            node[path[-1]] = value
    return out


def load_results(runs_dir: Path) -> list[RunResult]:
    """Every complete run under ``runs_dir`` (recursively); unreadable files are an error naming them."""
    out = []
    for p in sorted(Path(runs_dir).rglob("result.json")):
        try:
            out.append(RunResult.from_disk(p))
        except Exception as e:  # noqa: BLE001 - re-raised with the file name
            raise ValueError(f"{p}: not a valid result file: {e}") from None
    return out


def export_results(runs_dir: Path, dest: Path, allow_dirty: bool = False) -> list[Path]:
    """Copy the result files (result.json, spec.json, per_user.json; never checkpoints or data) of
    every complete run under ``runs_dir`` to ``dest/<dataset>/<run_id>/``, for committing. A run made
    from a checkout with uncommitted changes (``environment.git_commit`` ending in ``-dirty``) cannot be
    reproduced from its commit: refused (all of them named) unless ``allow_dirty``."""
    import shutil

    results = load_results(runs_dir)
    if not results:
        raise SpecError(f"no complete run (result.json) under {runs_dir}")
    dirty = [r.run_id for r in results if str(r.environment.get("git_commit") or "").endswith("-dirty")]
    if dirty and not allow_dirty:
        raise SpecError(f"{len(dirty)} run(s) were made from a checkout with uncommitted changes: "
                         f"{', '.join(dirty)}; rerun them from a clean commit, or pass --allow-dirty")
    written = []
    for res in results:
        src = next(Path(runs_dir).rglob(f"{res.run_id}/result.json")).parent
        out = Path(dest) / res.spec.dataset / res.run_id
        out.mkdir(parents=True, exist_ok=True)
        for name in ("result.json", "spec.json", "per_user.json"):
            if (src / name).is_file():
                shutil.copy2(src / name, out / name)
        written.append(out)
    return written


def by_trained_as(runs) -> dict[str, RunResult]:
    """Runs by :meth:`RunResult.trained_as`. Where runs were trained alike and ranked differently (an
    ``evaluate`` variant), the one ranked by the default protocol stands for them, then the first run id."""
    out: dict[str, RunResult] = {}
    for r in sorted(runs, key=lambda r: (r.spec.eval != type(r.spec.eval)(), r.run_id)):
        out.setdefault(r.trained_as(), r)
    return out
