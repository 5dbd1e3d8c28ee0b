"""Dataset cards: where they are found (``datasets/``, ``$REASONREC_CARDS``, a path), how one is read and
validated, and the data folder it names (``${REASONREC_DATA}``-style variables, a path relative to the card)."""
from __future__ import annotations

import os
import re
from pathlib import Path

from bench import assets
from bench.overrides import load_yaml
from bench.specs import DatasetCard, SpecError, format_validation_error

REPO_ROOT = Path(__file__).resolve().parent.parent  # the checkout (site-packages when installed)
CARDS_DIR = assets.CARDS_DIR  # datasets/ in a checkout, bench/_assets/datasets/ when installed


class DataError(ValueError):
    """Bad input data; the message names the file, field or value."""


def card_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("REASONREC_CARDS", "").split(os.pathsep) if p]
    return extra + [CARDS_DIR]


def known_datasets() -> list[str]:
    names = set()
    for d in card_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def load_card(name_or_path: str) -> DatasetCard:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        path = p
    elif p.suffix in (".yaml", ".yml") or "/" in name_or_path:  # a path, not a card name
        raise SpecError(f"dataset card file not found: {name_or_path}")
    else:
        path = next((d / f"{name_or_path}.yaml" for d in card_dirs() if (d / f"{name_or_path}.yaml").is_file()), None)
        if path is None:
            import difflib

            close = difflib.get_close_matches(name_or_path, known_datasets(), n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise SpecError(f"unknown dataset '{name_or_path}'{hint} (known: {', '.join(known_datasets())}; "
                            f"or pass a card file path)")
    from pydantic import ValidationError

    try:
        card = DatasetCard(**load_yaml(path))
    except ValidationError as e:
        raise SpecError(format_validation_error(e, f"dataset card {path}", DatasetCard)) from None
    return card.model_copy(update={"path": _anchor(card.path, path.resolve().parent)})


def _anchor(raw: str, card_dir: Path) -> str:
    """A card's relative ``path`` (no ``${VAR}``, not absolute, not ``~``) is relative to the card
    file's folder (the shipped toy card: ``path: toy``); anything else is kept for :func:`resolve_path`."""
    if "$" in raw or Path(raw).expanduser().is_absolute():
        return raw
    return str(card_dir / raw)


def resolve_path(card: DatasetCard, override: str | None = None) -> Path:
    """The dataset folder: ``override`` (``--dataset-path``) or the card's ``path`` with ``${VAR}``
    expanded (``${RECBOLE_EXAMPLES}``: the recbole wheel's examples). A relative card path was made
    relative to the card's folder by :func:`load_card`; a relative ``override`` is relative to the cwd."""
    raw = override or card.path
    env = dict(os.environ)
    if "${RECBOLE_EXAMPLES}" in raw:
        import recbole

        env["RECBOLE_EXAMPLES"] = str(Path(recbole.__file__).parent / "dataset_example")
    missing = [v for v in re.findall(r"\$\{(\w+)\}", raw) if v not in env]
    if missing:
        raise DataError(f"dataset '{card.name}': path {raw!r} needs the environment variable {missing[0]} "
                        f"(e.g. export {missing[0]}=/path/to/shared/data) or --dataset-path")
    path = Path(re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], raw)).expanduser()
    if not path.is_dir():
        raise DataError(f"dataset '{card.name}': folder not found: {path}")
    return path


