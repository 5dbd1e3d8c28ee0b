"""One config resolution: defaults < config file < ``--set`` merged once, everything validated
before a run folder exists, and the run id computed from the fully resolved spec.

A *resolved* :class:`~bench.specs.RunSpec` has
- ``dataset``: the card's name (a card given as a file path is kept in ``dataset_card``, which is
  not part of the run id, so the run folder is never nested);
- ``method_config``: every field of the method's config, defaults filled in;
- ``data``: every data setting (the card's, overridden by the run's);
- ``eval`` / ``selection``: every field.
So ``method_config: {}`` and the same defaults spelled out give one run id, and a default changed in
code gives a new one (an old ``result.json`` is never returned for new settings).
"""
from __future__ import annotations

from pathlib import Path

from bench.overrides import load_yaml, merge_overrides, parse_sets
from bench.specs import EvalSettings, RunSpec, SpecError, SuiteSpec, validated


def method_config(spec: RunSpec):
    """The method's typed config for ``spec`` (SpecError naming ``method_config.<key>``)."""
    from bench.registry import get_method

    if spec.resolution is not None:  # built while resolving
        return spec.resolution["config"]
    cls = get_method(spec.method)
    return validated(cls.Config, spec.method_config, f"method_config for '{spec.method}'", prefix="method_config.")


def resolve_spec(values: dict | RunSpec, *, where: str = "run spec", dataset_path: str | None = None,
                 check_files: bool = True) -> RunSpec:
    """Validate every part of a run (spec, method and its config, dataset card, data settings,
    evaluation and selection settings, and that the dataset's files exist) and fill every default.
    Idempotent: resolving a resolved spec returns an equal spec with the same run id."""
    from bench import loaders
    from bench.data import settings_for

    if isinstance(values, RunSpec):
        done = values.resolution
        if done is not None and (done["dataset_path"] == dataset_path or not check_files) \
                and (done["checked_files"] or not check_files):
            return values  # resolved already (with these files checked): nothing is loaded twice
        values = values.model_dump(mode="json")
    spec = validated(RunSpec, values, where)
    config = method_config(spec)  # RegistryError (did-you-mean) for an unknown method
    card_ref = spec.dataset_card or spec.dataset
    card = loaders.load_card(card_ref)
    card_file = str(Path(card_ref).resolve()) if Path(card_ref).suffix in (".yaml", ".yml") else None
    settings = settings_for(card, spec.data)
    digest = None
    if check_files:
        from bench.data import files_digest

        digest = files_digest(loaders.check_files(card, dataset_path, settings=settings))
    resolved = validated(RunSpec, {
        **spec.model_dump(mode="json"),
        "dataset": card.name,
        "dataset_card": card_file,
        "method_config": config.model_dump(mode="json"),
        "data": settings.model_dump(mode="json"),
    }, where)
    resolved._resolved = {"card": card, "settings": settings, "config": config, "dataset_path": dataset_path,
                          "checked_files": check_files, "dump": resolved.model_dump_json(),
                          "files_digest": digest, "id_fields": resolved._id_fields()}
    return resolved


def build_spec(method: str, dataset: str, *, config_file: str | None = None, sets: list[str] = (),
               dataset_path: str | None = None, **fields) -> RunSpec:
    """``reasonrec run``: defaults < config file < ``--set key=value`` (dotted keys:
    ``method_config.sft.lr=1e-3``, ``eval.max_users=100``), resolved and validated."""
    cli = parse_sets(sets)
    file_layer = load_yaml(config_file) if config_file else {}
    merged = merge_overrides({"method": method, "dataset": dataset}, {k: v for k, v in fields.items() if v is not None},
                             file_layer, cli)
    return resolve_spec(merged, where="run spec" + (f" ({config_file})" if config_file else ""),
                        dataset_path=dataset_path)


def load_suite(path: str | Path) -> SuiteSpec:
    return validated(SuiteSpec, load_yaml(path), f"suite file {path}")


def suite_specs(suite: SuiteSpec, *, dataset_path: str | None = None, check_files: bool = True) -> list[RunSpec]:
    """Every run of a suite, each resolved: suite-level data/eval/selection/threads < the entry's
    method config. All are validated before any runs, so a bad entry stops nothing midway (``check_files``
    False: everything but the dataset's files, e.g. a real-data suite on a machine without the data)."""
    specs, seen = [], set()
    for entry in suite.entries():
        for ds in suite.datasets:
            for seed in entry.seeds if entry.seeds is not None else suite.seeds:
                values = merge_overrides(
                    {"data": suite.data, "eval": suite.eval, "selection": suite.selection, "threads": suite.threads},
                    {"method": entry.method, "label": entry.label, "method_config": entry.method_config,
                     "dataset": ds, "seed": seed})
                spec = resolve_spec(values, where=f"suite entry {entry.method}/{ds}/seed {seed}",
                                    dataset_path=dataset_path, check_files=check_files)
                if spec.run_id() in seen:
                    raise SpecError(f"suite entry {entry.method}/{ds}/seed {seed} ({entry.label or 'no label'}) "
                                    f"resolves to the same run as an earlier entry ({spec.run_id()})")
                seen.add(spec.run_id())
                specs.append(spec)
    return specs


#: the spec fields a re-evaluation may change (they change no trained weight)
REEVALUATION_FIELDS = ("eval", "threads", "label")
#: the spec fields that determine the trained model
TRAINING_FIELDS = ("method", "dataset", "seed", "method_config", "data", "selection")


def reevaluation_spec(source: RunSpec, sets: list[str] = (), *, dataset_path: str | None = None) -> RunSpec:
    """The spec of a re-evaluation of ``source``: its resolved spec with ``eval.*`` / ``threads`` /
    ``label`` changed by ``sets``; any other key is refused (it would need training again)."""
    base = resolve_spec(source, where=f"the spec of {source.run_id()}", dataset_path=dataset_path)
    fields = parse_sets(sets, base.model_dump(mode="json"), allowed=lambda key: None if (
        key.split(".")[0] in REEVALUATION_FIELDS) else (
        f"re-evaluation changes evaluation settings only (eval.*, threads, label), not {key!r}: that would need "
        f"training again; use `reasonrec run`"))
    return resolve_spec(fields, where="re-evaluation settings", dataset_path=dataset_path)


__all__ = ["validated", "method_config", "resolve_spec", "build_spec", "load_suite", "suite_specs",
           "reevaluation_spec", "EvalSettings", "TRAINING_FIELDS"]
