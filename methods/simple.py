"""Trivial baselines: popularity and random. They double as fixtures for the harness tests."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydantic import Field

from bench.method import Method, MethodConfig, MethodInfo, Recommendations
from bench.registry import register


@register()
class Popularity(Method):
    info = MethodInfo(name="pop", family="baseline", paper="-",
                      description="Items ranked by training-interaction count, same list for everyone")

    class Config(MethodConfig):
        pass

    def fit(self, data, *, valid, ctx):
        counts = data.item_popularity()
        self.ranking = np.argsort(-counts, kind="stable")
        return {"items_seen": int((counts > 0).sum())}

    def recommend(self, histories, *, k):
        row = self.ranking[:k]
        return Recommendations(np.tile(row, (len(histories), 1)))

    def save(self, path: Path) -> None:
        (Path(path) / "ranking.json").write_text(json.dumps(self.ranking.tolist()))

    def load(self, path: Path, data) -> None:
        self.ranking = np.array(json.loads((Path(path) / "ranking.json").read_text()), dtype=np.int64)


@register()
class RandomRanker(Method):
    info = MethodInfo(name="random", family="baseline", paper="-",
                      description="A uniformly random permutation of the catalog per user (seeded)")

    class Config(MethodConfig):
        seed_offset: int = Field(0, description="added to the run seed")

    def fit(self, data, *, valid, ctx):
        self.n_items, self.seed = data.n_items, ctx.seed + self.config.seed_offset
        self.rng = np.random.default_rng(self.seed)
        return {}

    def save(self, path: Path) -> None:  # the seed, not the generator's position: a loaded ranker restarts
        (Path(path) / "random.json").write_text(json.dumps({"n_items": self.n_items, "seed": self.seed}))

    def load(self, path: Path, data) -> None:
        state = json.loads((Path(path) / "random.json").read_text())
        self.n_items, self.seed = state["n_items"], state["seed"]
        self.rng = np.random.default_rng(self.seed)

    def recommend(self, histories, *, k):
        k = min(k, self.n_items)
        # argpartition of uniform noise = k distinct uniformly random items, in random order
        noise = self.rng.random((len(histories), self.n_items))
        top = np.argpartition(-noise, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(noise, top, 1), axis=1)
        return Recommendations(np.take_along_axis(top, order, 1))
