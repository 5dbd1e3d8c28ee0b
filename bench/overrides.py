"""Settings in layers: ``--set key=value`` items parsed into nested dicts (values are YAML scalars), YAML config
files read, and the layers merged, later ones winning (:func:`merge_overrides`: defaults < config file < command
line, the one place they are merged, for :mod:`bench.config`). The merged dict is validated by the typed specs
(:mod:`bench.specs`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.specs import SpecError


def parse_value(text: str) -> Any:
    """`--set` values are YAML scalars: 3, 0.1, true, [5, 10], null, or plain strings."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_sets(sets, tree: dict | None = None, *, allowed=None) -> dict:
    """``--set key=value`` items into a nested dict (``tree``, or a new one). ``allowed(key)`` may
    return an error message for a key that this command does not accept."""
    tree = {} if tree is None else tree
    for item in sets or ():
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise SpecError(f"--set expects key=value, got {item!r}")
        problem = allowed(key) if allowed else None
        if problem:
            raise SpecError(problem)
        set_dotted(tree, key, parse_value(value))
    return tree


def set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise SpecError(f"--set {dotted}: '{p}' is not a section")
        node = nxt
    node[parts[-1]] = value


def flatten(d: dict | None, prefix: str = "", sep: str = ".") -> dict:
    """A nested dict as ``{"a.b.c": value}`` (``sep`` between the levels; an empty dict is a value): the one
    flattener of configs, specs and records (run pages, tuning tables, reproduce commands, trackers)."""
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + sep, sep))
        else:
            out[key] = v
    return out


def deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def merge_overrides(*layers: dict) -> dict:
    """defaults < config file < command line: later layers win, nested dicts merge."""
    out: dict = {}
    for layer in layers:
        out = deep_merge(out, layer or {})
    return out


def load_yaml(path: str | Path) -> dict:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise SpecError(f"config file not found: {p}")
    try:
        obj = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise SpecError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(obj, dict):
        raise SpecError(f"{p}: expected a mapping at the top level, got {type(obj).__name__}")
    return obj
