"""The one evaluator: HR@K and NDCG@K with a single ground truth per user.

rank is 1-based; NDCG@K = 1/log2(rank + 1) if rank <= K else 0; HR@K = 1 if rank <= K.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

# ---------------------------------------------------------------- the metric schema
# Every column list (result files, leaderboard, compare, validation) derives from these.

FAMILIES = ("NDCG", "HR")          # table order: NDCG@k for every k, then HR@k
SHORT_FAMILY = {"NDCG": "N", "HR": "HR"}
PRIMARY = "NDCG@10"                # the leaderboard's sort key when every row has it
_METRIC_RE = re.compile(r"^(NDCG|HR)@([1-9][0-9]*)$")


def parse_metric(name: str) -> tuple[str, int]:
    """``"NDCG@10"`` -> ("NDCG", 10); a ValueError names the accepted forms."""
    m = _METRIC_RE.match(str(name))
    if not m:
        raise ValueError(f"unknown metric {name!r}: expected NDCG@k or HR@k with a positive integer k")
    return m.group(1), int(m.group(2))


def metric_names(ks: Iterable[int]) -> list[str]:
    ks = sorted(set(int(k) for k in ks))
    return [f"{fam}@{k}" for fam in FAMILIES for k in ks]


def order_metrics(names: Iterable[str]) -> list[str]:
    """Known metric names in table order (family, then k); unknown names are dropped."""
    parsed = []
    for n in set(names):
        try:
            parsed.append(parse_metric(n))
        except ValueError:
            continue
    return [f"{f}@{k}" for f, k in sorted(parsed, key=lambda p: (FAMILIES.index(p[0]), p[1]))]


def short_name(name: str) -> str:
    fam, k = parse_metric(name)
    return f"{SHORT_FAMILY[fam]}@{k}"


def primary_metric(columns: Iterable[str]) -> str | None:
    """The sort key of a table: NDCG@10 when present, else the NDCG closest to k=10, else the first column."""
    cols = order_metrics(columns)
    if PRIMARY in cols:
        return PRIMARY
    ndcg = [c for c in cols if c.startswith("NDCG@")]
    if ndcg:
        return min(ndcg, key=lambda c: (abs(parse_metric(c)[1] - 10), parse_metric(c)[1]))
    return cols[0] if cols else None


@dataclass
class Evaluation:
    metrics: dict[str, float]
    ranks: np.ndarray          # [n] 1-based rank of the target, 0 when not in the list
    invalid: int               # ids outside the catalog (counted as misses)
    duplicates: int            # repeated ids in a ranked list (later copies dropped)
    #: the same metrics at SID level (items that shared a SID before resolution count as one answer), when
    #: the data has such items; else None (they equal ``metrics``)
    sid_level: dict[str, float] | None = None


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


def group_ranks(ranked: np.ndarray, targets: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """SID-level ranks: each ranked item replaced by its group (``groups[item]``: items that share a SID
    share a group), repeats of a group dropped, then the 1-based rank of the target's group (0 = absent).
    A list that names two items of the target's SID counts once, at the first."""
    groups = np.asarray(groups)
    out = np.zeros(len(ranked), dtype=np.int64)
    for r, (row, t) in enumerate(zip(np.asarray(ranked), np.asarray(targets))):
        want, seen = groups[t], set()
        for it in row:
            if it < 0:
                break
            g = int(groups[it])
            if g in seen:
                continue
            seen.add(g)
            if g == want:
                out[r] = len(seen)
                break
    return out


def per_user_gains(ranks: np.ndarray, metric: str) -> np.ndarray:
    """Each user's HR@k (0/1) or NDCG@k (1 / log2(rank + 1) when 1 <= rank <= k, else 0) from the 1-based
    rank of the target (0 = not ranked). The one place per-user values are computed: the metrics are their
    means, and significance tests compare them user by user."""
    family, k = parse_metric(metric)
    ranks = np.asarray(ranks)
    hit = (ranks >= 1) & (ranks <= k)
    if family == "HR":
        return hit.astype(float)
    return np.where(hit, 1.0 / np.log2(np.maximum(ranks, 1) + 1), 0.0)


def metrics_from_ranks(ranks: np.ndarray, ks=(5, 10, 20)) -> dict[str, float]:
    ranks = np.asarray(ranks)
    return {name: float(per_user_gains(ranks, name).mean()) if len(ranks) else 0.0 for name in metric_names(ks)}


def evaluate(items: np.ndarray, targets: np.ndarray, n_items: int, *, ks=(5, 10, 20),
             histories: list[list[int]] | None = None, sid_groups: np.ndarray | None = None) -> Evaluation:
    """Item-level metrics (the tables'); with ``sid_groups`` where some items share a group, SID-level ones too
    (from the same cleaned lists, so the two differ only where a shared SID is ranked)."""
    ranked, invalid, dup = clean_rankings(items, n_items, histories, keep=max(ks))
    ranks = target_ranks(ranked, targets)
    sid_level = None
    if sid_groups is not None and len(np.unique(sid_groups)) < len(sid_groups):
        sid_level = metrics_from_ranks(group_ranks(ranked, targets, sid_groups), ks)
    return Evaluation(metrics_from_ranks(ranks, ks), ranks, invalid, dup, sid_level)


# ---------------------------------------------------------------- the validation protocol

VALID_SUBSET_SEED = 2024  # the same validation users for every method, seed and epoch


def fixed_subset(n: int, max_users: int | None, seed: int = VALID_SUBSET_SEED) -> np.ndarray:
    """Indices of a fixed random subset of ``n`` users (sorted); subsets of different sizes nest."""
    if max_users is None or max_users >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:max_users])


def validate(recommend: Callable[[list[list[int]], int], np.ndarray], histories: list[list[int]],
             targets: np.ndarray, n_items: int, *, metric: str = PRIMARY, exclude_history: bool = False,
             max_users: int | None = None, batch_size: int = 256) -> dict:
    """Score a model on the validation split with the test's evaluator: ``recommend(histories, k)``
    returns ranked item ids [n, >=k]. Returns every metric at k in {10, metric's k}, the number of
    users, and ``score`` = the selection ``metric``."""
    _, k_sel = parse_metric(metric)
    idx = fixed_subset(len(targets), max_users)
    hist, tgt = [histories[i] for i in idx], np.asarray(targets)[idx]
    max_h = max((len(h) for h in hist), default=0)
    k = max(k_sel, 10) + (max_h if exclude_history else 0)
    rows = []
    for s in range(0, len(hist), batch_size):
        items = np.asarray(recommend(hist[s:s + batch_size], k))
        if items.shape[1] < k:
            items = np.pad(items, ((0, 0), (0, k - items.shape[1])), constant_values=-1)
        rows.append(items[:, :k])
    items = np.concatenate(rows) if rows else np.zeros((0, k), dtype=np.int64)
    ev = evaluate(items, tgt, n_items, ks=sorted({10, k_sel}), histories=hist if exclude_history else None)
    return {**ev.metrics, "users": len(tgt), "score": ev.metrics[metric]}


def grouped_metrics(ranks: np.ndarray, groups: np.ndarray, ks=(10,), max_groups: int = 32) -> dict | None:
    """Metrics per value of an integer per-user statistic (e.g. LASAR's latent step count: the paper's
    Fig. 5b): ``{value: {"users": n, "share": f, "HR@10": .., "NDCG@10": ..}}``. None when the statistic
    is not integer-valued or has more than ``max_groups`` distinct values."""
    groups = np.asarray(groups)
    if groups.ndim != 1 or len(groups) != len(ranks) or not len(groups):
        return None
    if not np.issubdtype(groups.dtype, np.integer):
        if not np.all(np.isfinite(groups)) or not np.all(groups == np.round(groups)):
            return None
        groups = groups.astype(np.int64)
    values = np.unique(groups)
    if len(values) > max_groups:
        return None
    out = {}
    for v in values:
        sel = groups == v
        out[str(int(v))] = {"users": int(sel.sum()), "share": round(float(sel.mean()), 5),
                            **{m: round(x, 6) for m, x in metrics_from_ranks(np.asarray(ranks)[sel], ks).items()}}
    return out
