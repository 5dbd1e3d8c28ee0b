"""Semantic segmentation of teacher CoT: split where adjacent sentences' embedding similarity drops.

Sentences are embedded with a sentence-transformers model (the bundled all-MiniLM-L6-v2 by default,
any model name works, e.g. ``BAAI/bge-small-en-v1.5`` as in the paper); a segment boundary falls
between two sentences whose cosine similarity is below ``threshold``. The segment count, clipped to
1..N_max, is the policy head's label. Embeddings of unique sentences are cached on disk per model.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SPLIT.split(text.strip()) if s.strip()]


def boundaries(emb: np.ndarray, threshold: float) -> list[int]:
    """Indices i where a segment ends after sentence i (cosine of i and i+1 below ``threshold``);
    ``emb`` rows are unit vectors."""
    if len(emb) < 2:
        return []
    sim = (emb[:-1] * emb[1:]).sum(-1)
    return [i for i, v in enumerate(sim) if v < threshold]


def segment_texts(sents: list[str], cuts: list[int]) -> list[str]:
    out, start = [], 0
    for c in [*cuts, len(sents) - 1]:
        out.append(" ".join(sents[start:c + 1]))
        start = c + 1
    return [s for s in out if s]


class Segmenter:
    def __init__(self, model: str, threshold: float, cache_dir: Path | None = None):
        self.model, self.threshold = model, threshold
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._emb: dict[str, np.ndarray] = {}

    def _cache_file(self) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"sentences-{hashlib.sha1(self.model.encode()).hexdigest()[:10]}.npz"

    def _embed(self, sents: list[str], progress: bool) -> None:
        from bench.atomic import atomic_write_bytes
        from bench.sids import text_embeddings

        path = self._cache_file()
        if path is not None and path.is_file() and not self._emb:
            z = np.load(path, allow_pickle=False)
            self._emb = dict(zip(z["text"].tolist(), z["emb"]))
        todo = sorted({s for s in sents if s not in self._emb})
        if not todo:
            return
        emb = text_embeddings(todo, self.model, progress=progress)
        self._emb.update(zip(todo, emb))
        if path is not None:
            import io

            buf = io.BytesIO()
            keys = list(self._emb)
            np.savez(buf, text=np.array(keys), emb=np.stack([self._emb[k] for k in keys]).astype(np.float32))
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, buf.getvalue())

    def segments(self, cots: list[str], progress: bool = False) -> list[list[str]]:
        split = [sentences(c) or [c] for c in cots]
        self._embed([s for ss in split for s in ss], progress)
        out = []
        for ss in split:
            emb = np.stack([self._emb[s] for s in ss])
            out.append(segment_texts(ss, boundaries(emb, self.threshold)))
        return out


def label_report(labels: np.ndarray, histories: list, categories: list[str]) -> list[dict]:
    """The paper's Table 8: per segment count, its share, mean history length and category diversity
    (distinct categories in the history)."""
    labels = np.asarray(labels)
    rows = []
    for v in np.unique(labels):
        idx = np.flatnonzero(labels == v)
        rows.append({"segments": int(v), "share": round(float(len(idx) / len(labels)), 4),
                     "hist_len": round(float(np.mean([len(histories[i]) for i in idx])), 2),
                     "cat_div": round(float(np.mean([len({categories[j] for j in histories[i]}) for i in idx])), 2)})
    return rows
