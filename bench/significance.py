"""Paired significance of two runs on the same test users: ``reasonrec paired RUN_A RUN_B``.

Each run's ``per_user.json`` gives the 1-based rank of every user's target (0 = not ranked); the
per-user metric (NDCG@k or HR@k) of both runs is compared user by user: mean difference, a paired
bootstrap 95% interval, the paired t-test and the Wilcoxon signed-rank test (two-sided)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench.metrics import parse_metric


def per_user_gains(ranks: np.ndarray, metric: str) -> np.ndarray:
    family, k = parse_metric(metric)
    ranks = np.asarray(ranks)
    hit = (ranks >= 1) & (ranks <= k)
    if family == "HR":
        return hit.astype(float)
    return np.where(hit, 1.0 / np.log2(np.maximum(ranks, 1) + 1), 0.0)


def _load(run: Path) -> dict:
    path = Path(run) / "per_user.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no per-user ranks (a complete run folder is expected)")
    return json.loads(path.read_text())


def paired_test(run_a: Path, run_b: Path, metric: str = "NDCG@10", bootstrap: int = 10000, seed: int = 0) -> dict:
    from scipy import stats

    a, b = _load(run_a), _load(run_b)
    if a["users"] != b["users"] or a["targets"] != b["targets"]:
        raise ValueError(f"{run_a} and {run_b} were not evaluated on the same users and targets in the same order")
    ga, gb = per_user_gains(np.array(a["ranks"]), metric), per_user_gains(np.array(b["ranks"]), metric)
    d = ga - gb
    rng = np.random.default_rng(seed)
    boots = np.array([d[rng.integers(0, len(d), len(d))].mean() for _ in range(bootstrap)])
    t = stats.ttest_rel(ga, gb)
    w = stats.wilcoxon(ga, gb) if np.any(d != 0) else None
    return {"metric": metric, "users": len(d), "a": float(ga.mean()), "b": float(gb.mean()),
            "mean_difference": float(d.mean()), "ci95": [float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))],
            "t_pvalue": float(t.pvalue), "wilcoxon_pvalue": float(w.pvalue) if w is not None else 1.0,
            "a_better_users": int((d > 0).sum()), "b_better_users": int((d < 0).sum())}
