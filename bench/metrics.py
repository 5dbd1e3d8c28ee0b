"""The one evaluator: HR@K and NDCG@K with a single ground truth per user.

rank is 1-based; NDCG@K = 1/log2(rank + 1) if rank <= K else 0; HR@K = 1 if rank <= K.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Evaluation:
    metrics: dict[str, float]
    ranks: np.ndarray          # [n] 1-based rank of the target, 0 when not in the list
    invalid: int               # ids outside the catalog (counted as misses)
    duplicates: int            # repeated ids in a ranked list (later copies dropped)


def clean_rankings(items: np.ndarray, n_items: int, histories: list[list[int]] | None = None,
                   keep: int | None = None) -> tuple[np.ndarray, int, int]:
    """Drop invalid ids, repeated ids and (optionally) history items; left-align; pad with -1."""
    items = np.asarray(items)
    n, width = items.shape
    keep = keep or width
    out = np.full((n, keep), -1, dtype=np.int64)
    invalid = dup = 0
    for r in range(n):
        seen: set[int] = set(histories[r]) if histories is not None else set()
        j = 0
        for it in items[r]:
            it = int(it)
            if it < 0:
                continue  # padding
            if it >= n_items:
                invalid += 1
                continue
            if it in seen:
                if histories is None or it not in histories[r]:
                    dup += 1
                continue
            seen.add(it)
            out[r, j] = it
            j += 1
            if j == keep:
                break
    return out, invalid, dup


def target_ranks(ranked: np.ndarray, targets: np.ndarray) -> np.ndarray:
    hit = ranked == np.asarray(targets)[:, None]
    return np.where(hit.any(1), hit.argmax(1) + 1, 0)


def metrics_from_ranks(ranks: np.ndarray, ks=(5, 10, 20)) -> dict[str, float]:
    ranks = np.asarray(ranks)
    out = {}
    for k in ks:
        hit = (ranks >= 1) & (ranks <= k)
        out[f"HR@{k}"] = float(hit.mean()) if len(ranks) else 0.0
    for k in ks:
        hit = (ranks >= 1) & (ranks <= k)
        gains = np.where(hit, 1.0 / np.log2(np.maximum(ranks, 1) + 1), 0.0)
        out[f"NDCG@{k}"] = float(gains.mean()) if len(ranks) else 0.0
    return out


def evaluate(items: np.ndarray, targets: np.ndarray, n_items: int, *, ks=(5, 10, 20),
             histories: list[list[int]] | None = None) -> Evaluation:
    ranked, invalid, dup = clean_rankings(items, n_items, histories, keep=max(ks))
    ranks = target_ranks(ranked, targets)
    return Evaluation(metrics_from_ranks(ranks, ks), ranks, invalid, dup)
