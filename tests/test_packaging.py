"""Packaged assets: dataset cards, leaderboard templates and the toy dataset ship with the package
(``bench/assets.py`` finds them in a checkout and in a non-editable install)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from bench import assets

ROOT = Path(__file__).resolve().parent.parent
QUIET = {"progress": False, "log": lambda *_: None}


def test_assets_resolve():
    cards = {p.stem for p in assets.CARDS_DIR.glob("*.yaml")}
    assert {"beauty", "ml-100k", "toy"} <= cards
    assert (assets.TEMPLATES_DIR / "index.html").is_file() and (assets.TEMPLATES_DIR / "style.css").is_file()
    assert sorted(p.name for p in assets.TOY_DIR.iterdir()) == ["Toy.inter.json", "Toy.item.json"]
    assert not (assets.CARDS_DIR / "__init__.py").exists()  # never shadows the HF `datasets` package

    from bench.leaderboard import TEMPLATES
    from bench.loaders import CARDS_DIR

    assert CARDS_DIR == assets.CARDS_DIR and TEMPLATES == assets.TEMPLATES_DIR


def test_packaged_toy_card_loads_and_prepares(tmp_path, monkeypatch):
    """By name, from the packaged card alone (no REASONREC_CARDS), into a fresh cache."""
    from bench.data import prepare
    from bench.loaders import known_datasets, load_card, resolve_path

    monkeypatch.delenv("REASONREC_CARDS", raising=False)
    monkeypatch.setenv("REASONREC_CACHE", str(tmp_path / "cache"))
    assert "toy" in known_datasets()
    card = load_card("toy")
    assert (card.format, card.prefix, card.text_fields) == ("lcrec", "Toy", ["title", "categories"])
    assert (card.data.kcore, card.data.max_history) == (3, 5)
    sids = card.data.sids
    assert (sids.source, sids.levels, sids.codebook_size, sids.embedding) == ("rqkmeans", 3, 4, "collaborative")
    assert resolve_path(card) == assets.TOY_DIR  # `path: toy` is relative to the card's folder
    data = prepare("toy", **QUIET)
    assert data.name == "toy" and data.n_items > 0 and len(data.split("test").targets) > 0
    assert any((tmp_path / "cache").iterdir())


def test_relative_card_path_is_relative_to_the_card_and_variables_still_work(tmp_path, monkeypatch):
    from bench.loaders import DataError, load_card, resolve_path

    monkeypatch.chdir(tmp_path)  # not the card's folder
    (tmp_path / "cards" / "mine").mkdir(parents=True)
    card = tmp_path / "cards" / "mine.yaml"
    card.write_text("name: mine\nformat: lcrec\nprefix: Toy\npath: mine\n")
    assert resolve_path(load_card(str(card))) == tmp_path / "cards" / "mine"
    card.write_text("name: mine\nformat: lcrec\nprefix: Toy\npath: ${MY_DATA}/mine\n")
    monkeypatch.setenv("MY_DATA", str(tmp_path / "cards"))
    assert resolve_path(load_card(str(card))) == tmp_path / "cards" / "mine"
    monkeypatch.delenv("MY_DATA")
    with pytest.raises(DataError, match="MY_DATA"):
        resolve_path(load_card(str(card)))
    assert resolve_path(load_card("ml-100k")).name == "ml-100k"  # ${RECBOLE_EXAMPLES}


def test_packaged_toy_data_is_write_toy_with_its_defaults(tmp_path):
    from tests.conftest import write_toy

    fresh = write_toy(tmp_path / "toy")
    for name in ("Toy.inter.json", "Toy.item.json"):
        assert json.loads((fresh / name).read_text()) == json.loads((assets.TOY_DIR / name).read_text())


def test_every_python_package_is_in_pyproject():
    """The wheel ships only the listed packages: a new subpackage must be added to pyproject.toml."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for top in ("bench", "methods")
             for p in (ROOT / top).rglob("__init__.py")}
    assert found <= listed, f"missing from [tool.setuptools] packages: {sorted(found - listed)}"


@pytest.mark.slow
def test_wheel_ships_the_assets(tmp_path):
    # built from a copy of the sources: an in-tree build would leave build/ in the checkout
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for item in ("bench", "methods", "datasets", "leaderboard/templates"):
        shutil.copytree(ROOT / item, src / item, ignore=ignore)
    for item in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / item, src / item)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"),
                          str(src)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("reasonrec_bench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    share = "bench/_assets/"
    for card in ("beauty", "sports", "instruments", "ml-100k", "toy"):
        assert f"{share}datasets/{card}.yaml" in names
    assert {f"{share}datasets/toy/Toy.inter.json", f"{share}datasets/toy/Toy.item.json"} <= names
    assert {f"{share}templates/{t}" for t in ("base.html", "index.html", "run.html", "style.css")} <= names
    assert "bench/generative/decoding.py" in names and "methods/minionerec.py" in names and "bench/assets.py" in names
    assert not any(n.endswith("datasets/__init__.py") for n in names)
    assert not any(n.split("/")[0] in ("datasets", "leaderboard", "tests") for n in names)  # no top-level folders
