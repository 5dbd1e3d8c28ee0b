"""Where the packaged assets are: dataset cards, leaderboard templates and the toy dataset.

They live in the checkout as ``datasets/`` (cards, and the toy data in ``datasets/toy/``) and
``leaderboard/templates/``. A wheel (``pip install .``) carries them inside the ``bench`` package:
``pyproject.toml`` maps ``datasets/`` to ``bench/_assets/datasets/`` and ``leaderboard/templates/`` to
``bench/_assets/templates/`` at build time (``datasets/`` itself never becomes an importable package,
so it cannot shadow the HF ``datasets`` package). An editable install and a plain checkout have no
``bench/_assets/``: there the checkout's folders are used.
"""
from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
INSTALLED_DIR = PACKAGE_DIR / "_assets"      # in a wheel / non-editable install
CHECKOUT_DIR = PACKAGE_DIR.parent            # the repository root, in an editable install or checkout


def _locate(installed: Path, checkout: Path) -> Path:
    """The installed copy if there is one, else the checkout's folder. The fallback is taken only in a
    checkout (``pyproject.toml`` beside ``bench/``): in site-packages the folder beside ``bench/`` named
    ``datasets`` is the HF package, not our cards. Neither found: the installed path (callers report it)."""
    if installed.is_dir():
        return installed
    if checkout.is_dir() and (CHECKOUT_DIR / "pyproject.toml").is_file():
        return checkout
    return installed


CARDS_DIR = _locate(INSTALLED_DIR / "datasets", CHECKOUT_DIR / "datasets")
TEMPLATES_DIR = _locate(INSTALLED_DIR / "templates", CHECKOUT_DIR / "leaderboard" / "templates")
TOY_CARD = CARDS_DIR / "toy.yaml"
TOY_DIR = CARDS_DIR / "toy"                 # Toy.inter.json, Toy.item.json (the card's ``path: toy``)


def describe() -> dict[str, str]:
    """Where each asset was found (for ``reasonrec ls`` style diagnostics and tests)."""
    return {"cards": str(CARDS_DIR), "templates": str(TEMPLATES_DIR), "toy": str(TOY_DIR),
            "mode": "installed" if CARDS_DIR.is_relative_to(INSTALLED_DIR) else "checkout"}
