"""The one registry of methods.

Built-in methods live in ``methods/`` and register with ``@register``; the registry imports
the module that provides a name only when that name is asked for. Outside plugins are found
through the entry-point group ``reasonrec.methods`` (value ``"pkg.module:Class"``).
Plugin modules keep heavy imports (torch, recbole) inside functions, so listing is cheap.
"""
from __future__ import annotations

import difflib
import importlib
from importlib import metadata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.method import Method

ENTRY_POINT_GROUP = "reasonrec.methods"

# name -> module that registers it (imported lazily)
BUILTIN: dict[str, str] = {
    "pop": "methods.simple",
    "random": "methods.simple",
    "sasrec": "methods.recbole_models",
    "gru4rec": "methods.recbole_models",
    "minionerec": "methods.minionerec",
    "lcrec": "methods.lcrec",
    "lasar": "methods.lasar",
    "rearec": "methods.rearec",
    "gream": "methods.gream",
    "tgh": "methods.tgh",
    "tiger": "methods.tiger",
}


class RegistryError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class Registry:
    def __init__(self, builtin: dict[str, str], group: str):
        self._classes: dict[str, type[Method]] = {}
        self._lazy: dict[str, str] = dict(builtin)
        self._group = group
        self._entry_points_loaded = False

    def register(self, name: str | None = None):
        """Class decorator: ``@register()`` uses ``cls.info.name``."""

        def deco(cls):
            key = name or cls.info.name
            if key != cls.info.name:
                raise RegistryError(f"method registered as '{key}' but its info.name is '{cls.info.name}'")
            have = self._classes.get(key)
            if have is not None and have is not cls and f"{have.__module__}.{have.__qualname__}" != \
                    f"{cls.__module__}.{cls.__qualname__}":
                raise RegistryError(
                    f"duplicate method name '{key}': already registered by "
                    f"{have.__module__}.{have.__qualname__}, again by {cls.__module__}.{cls.__qualname__}")
            self._classes[key] = cls
            return cls

        return deco

    def unregister(self, name: str) -> None:
        """Remove a registered class (tests and notebooks re-registering a method)."""
        self._classes.pop(name, None)

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in metadata.entry_points(group=self._group):
            if ep.name in self._lazy or ep.name in self._classes:
                raise RegistryError(
                    f"duplicate method name '{ep.name}': entry point {ep.value} clashes with a registered method")
            self._lazy[ep.name] = ep.value

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(set(self._lazy) | set(self._classes))

    def get(self, name: str) -> type[Method]:
        if name in self._classes:
            return self._classes[name]
        self._load_entry_points()
        target = self._lazy.get(name)
        if target is None:
            close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise RegistryError(f"unknown method '{name}'{hint} (known: {', '.join(self.names())})")
        module, _, attr = target.partition(":")
        mod = importlib.import_module(module)
        if attr:  # entry point: "module:Class"; register it if its module did not
            cls = getattr(mod, attr)
            if name not in self._classes:
                self.register(name)(cls)
        if name not in self._classes:
            raise RegistryError(f"module {module} did not register a method named '{name}'")
        return self._classes[name]

    def all(self) -> dict[str, type[Method]]:
        return {n: self.get(n) for n in self.names()}


REGISTRY = Registry(BUILTIN, ENTRY_POINT_GROUP)
register = REGISTRY.register
get_method = REGISTRY.get
