"""Shared fixtures: the packaged ``toy`` dataset (``datasets/toy.yaml`` + ``datasets/toy/``, shipped in the
wheel) with an isolated cache; ``write_toy`` writes the same kind of data for tests that need their own."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.cuda`` tests need a CUDA GPU: skipped (not failed) on a machine without one."""
    wanted = [item for item in items if item.get_closest_marker("cuda")]
    if not wanted:
        return
    import torch

    if not torch.cuda.is_available():
        for item in wanted:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


def write_toy(folder: Path, n_users: int = 40, n_items: int = 24, seed: int = 0) -> Path:
    """Sequences that walk item i -> i+1 (mod n) with some noise, so sequential models can learn.
    With the defaults this writes exactly the packaged toy data (``datasets/toy/``, checked by a test)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    inter = {}
    for u in range(n_users):
        length = int(rng.integers(6, 10))
        cur = int(rng.integers(n_items))
        seq = []
        for _ in range(length):
            seq.append(cur)
            cur = (cur + 1) % n_items if rng.random() < 0.8 else int(rng.integers(n_items))
        # no repeated item within a user
        seen, dedup = set(), []
        for i in seq:
            if i not in seen:
                dedup.append(i), seen.add(i)
        inter[str(u)] = dedup
    (folder / "Toy.inter.json").write_text(json.dumps(inter))
    items = {str(i): {"title": f"toy item {i}", "categories": ["even" if i % 2 == 0 else "odd"], "brand": "b"}
             for i in range(n_items)}
    (folder / "Toy.item.json").write_text(json.dumps(items))
    return folder


@pytest.fixture(scope="session")
def toy_env(tmp_path_factory):
    """The packaged toy dataset, an isolated cache (REASONREC_CACHE) and a card folder on REASONREC_CARDS
    for extra cards. ``cards/toy.yaml`` is the packaged card with its ``path`` made absolute (the packaged
    data folder), so a test can copy it anywhere and pass it by path; by name it is the same dataset."""
    from bench import assets

    root = tmp_path_factory.mktemp("toy")
    data = assets.TOY_DIR
    cards = root / "cards"
    cards.mkdir()
    text = assets.TOY_CARD.read_text()
    lines = [f"path: {data}" if line.startswith("path:") else line for line in text.splitlines()]
    assert lines != text.splitlines(), f"no 'path:' line in {assets.TOY_CARD}"
    (cards / "toy.yaml").write_text("\n".join(lines) + "\n")
    old = {k: os.environ.get(k) for k in ("REASONREC_CARDS", "REASONREC_CACHE")}
    os.environ["REASONREC_CARDS"] = str(cards)
    os.environ["REASONREC_CACHE"] = str(root / "cache")
    yield {"root": root, "data": data, "cards": cards}
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def toy_data(toy_env):
    from bench.data import prepare

    return prepare("toy", progress=False, log=lambda *_: None)


@pytest.fixture
def one_thread():
    """torch on one thread for the test (exact-resume comparisons, and faster on 2 busy cores)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
