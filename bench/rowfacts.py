"""What the leaderboard shows of a run that only the method registry knows, written into the result when the run
is made (``result.method_facts["row"]``), so the site, ``bench.compare`` and the run pages are built from result
files alone (no method, config class or dataset card imported to render them):

- ``settings``: the method settings that differ from the method's defaults (tuning tables, run pages);
- ``command``: the ``reasonrec run`` command that remakes the row;
- ``paper_tables``: the paper's ablation tables the row fills (``Method.paper_tables`` of every registered
  method): ``[{table, title, dataset, order, paper_rows, matched}]``.

:func:`upgrade_results` adds them to result files written before (``reasonrec upgrade RUNS``).
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

from bench.atomic import atomic_write_json
from bench.overrides import flatten
from bench.specs import RunSpec


def _contains(cfg, sub) -> bool:
    if isinstance(sub, dict):
        return isinstance(cfg, dict) and all(k in cfg and _contains(cfg[k], v) for k, v in sub.items())
    return cfg == sub


def changed_settings(method: str, config: dict) -> dict:
    """Flattened method settings that differ from the method's defaults (all of them for an unknown method)."""
    from bench.registry import REGISTRY

    try:
        defaults = flatten(REGISTRY.get(method).Config().model_dump(mode="json"))
    except Exception:  # noqa: BLE001 - an unknown method or an older schema: every stored setting
        defaults = {}
    return {k: v for k, v in flatten(config).items() if k not in defaults or defaults[k] != v}


def _set_value(v) -> str:
    # --set values are read back as YAML: JSON (strings quoted) is YAML, so '#', ': ', 'yes', '2024' stay strings
    return json.dumps(v)


def reproduce_command(spec: RunSpec, config: dict) -> str:
    """The ``reasonrec run`` command that makes this row: every method setting that differs from the method's
    defaults as ``--set``, the label, the seed and the data / eval / selection settings that differ from the
    card's and the defaults."""
    parts = ["reasonrec", "run", "--method", spec.method, "--dataset", spec.dataset]
    if spec.seed:
        parts += ["--seed", str(spec.seed)]
    for k, v in sorted(changed_settings(spec.method, config).items()):
        parts += ["--set", f"method_config.{k}={_set_value(v)}"]
    mine = spec.model_dump(mode="json")
    base = RunSpec(method=spec.method, dataset=spec.dataset).model_dump(mode="json")  # default eval / selection
    if spec.resolution is not None:  # the card the spec was resolved with: its data settings
        base["data"] = spec.resolution["card"].data.model_dump(mode="json")
    else:
        try:  # the card's data settings (no dataset files needed)
            from bench.cards import load_card

            base["data"] = load_card(spec.dataset_card or spec.dataset).data.model_dump(mode="json")
        except Exception:  # noqa: BLE001 - an unknown dataset card: every stored data setting
            pass
    for section in ("data", "eval", "selection"):
        ref = flatten(base.get(section) or {})
        for k, v in sorted(flatten(mine.get(section) or {}).items()):
            if ref.get(k, object()) != v:
                parts += ["--set", f"{section}.{k}={_set_value(v)}"]
    if spec.label:
        parts += ["--set", f"label={_set_value(spec.label)}"]
    return " ".join(shlex.quote(p) for p in parts)


def paper_tables(method: str, dataset: str, config: dict) -> list[dict]:
    """The paper's ablation tables whose rows this run fills (its resolved config contains a row's subset)."""
    from bench.registry import REGISTRY

    out = []
    for n, name in enumerate(REGISTRY.names()):
        for m, (key, (title, ds, specs)) in enumerate(REGISTRY.get(name).paper_tables.items()):
            if ds != dataset:
                continue
            matched = [i for i, (_, meth, sub) in enumerate(specs) if meth == method and _contains(config, sub)]
            if matched:
                out.append({"table": key, "title": title, "dataset": ds, "order": [n, m],
                            "paper_rows": [p for p, _, _ in specs], "matched": matched})
    return out


def row_facts(spec: RunSpec, config: dict) -> dict:
    """``result.method_facts["row"]`` of a run with this (resolved) spec and method config dump."""
    return {"settings": changed_settings(spec.method, config), "command": reproduce_command(spec, config),
            "paper_tables": paper_tables(spec.method, spec.dataset, config)}


def _full_config(spec: RunSpec, recorded: dict | None) -> dict:
    """An older result's method config with every default filled in (some stored only the overrides)."""
    from bench.registry import REGISTRY

    try:
        return REGISTRY.get(spec.method).Config(**spec.method_config).model_dump(mode="json")
    except Exception:  # noqa: BLE001 - an unknown method or an older schema: what was recorded
        return recorded or spec.method_config


def _renamed(config: dict | None, renamed: dict[str, str]) -> bool:
    """Rename, in place and in its position, each field of ``config`` stored under an old name
    (``Method.renamed_settings``: new -> old); whether any was."""
    back = {old: new for new, old in renamed.items() if config and old in config and new not in config}
    if not back:
        return False
    items = [(back.get(k, k), v) for k, v in config.items()]
    config.clear()
    config.update(items)
    return True


def rename_settings(obj: dict, path: Path) -> bool:
    """A result (a ``result.json`` object) written before a method renamed a setting stores it under the old
    name, so it is not the same configuration as a newer seed of the same row on the site; give it the current
    name (the run id hashes the old one: unchanged, checked). Whether anything changed."""
    from bench.registry import REGISTRY, RegistryError

    try:
        renamed = dict(REGISTRY.get(obj["spec"]["method"]).renamed_settings or {})
    except RegistryError:
        return False
    facts = obj.get("method_facts", {})
    changed = _renamed(obj["spec"].get("method_config"), renamed) | _renamed(facts.get("config"), renamed)
    if changed and RunSpec(**obj["spec"]).run_id() != obj["run_id"]:
        raise ValueError(f"{path}: renaming {sorted(renamed)} would change its run id {obj['run_id']}")
    return changed


def upgrade_results(runs: Path, log=print) -> int:
    """Add ``method_facts.row`` to every ``result.json`` under ``runs`` written before results carried it (from
    the registered methods' declarations and the stored config), and give settings a method renamed since
    their current names (the ``spec.json`` beside too); returns how many files changed."""
    changed = 0
    for path in sorted(Path(runs).rglob("result.json")):
        obj = json.loads(path.read_text())
        facts = obj.setdefault("method_facts", {})
        renamed = rename_settings(obj, path)
        if renamed and (path.parent / "spec.json").is_file():
            spec_file = json.loads((path.parent / "spec.json").read_text())
            spec_file["method_config"] = obj["spec"]["method_config"]
            atomic_write_json(path.parent / "spec.json", spec_file)
        if "row" in facts and not renamed:
            continue
        if "row" not in facts:
            spec = RunSpec(**obj["spec"])
            facts["row"] = row_facts(spec, _full_config(spec, facts.get("config")))
        atomic_write_json(path, obj)
        changed += 1
    log(f"{changed} result file(s) under {runs} given their row facts or current setting names")
    return changed


def supersede(result: Path, by: str, note: str) -> None:
    """Keep a committed row as history: it leaves the paper tables (``row.paper_tables`` emptied) and names the
    run that replaces it there (``row.superseded_by``, ``row.superseded_note``; its run page says so). No number
    changes; ``reasonrec upgrade`` leaves it so (the row facts are present)."""
    path = Path(result) / "result.json" if Path(result).is_dir() else Path(result)
    obj = json.loads(path.read_text())
    row = obj.setdefault("method_facts", {}).get("row")
    if row is None:
        raise ValueError(f"{path}: no row facts yet; run `reasonrec upgrade` on its folder first")
    row.update({"paper_tables": [], "superseded_by": by, "superseded_note": note})
    atomic_write_json(path, obj)
