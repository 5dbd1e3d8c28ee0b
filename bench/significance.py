"""Paired significance, the one test the harness uses: ``reasonrec paired RUN_A RUN_B`` and the leaderboard's
marks.

Each run's ``per_user.json`` gives the 1-based rank of every user's target (0 = not ranked); the per-user
metric (NDCG@k or HR@k, :func:`bench.metrics.per_user_gains`) of two rows is compared user by user with the
**paired t-test** (two-sided), beside the mean difference and a paired bootstrap 95% interval. Rows with
several seeds are compared over the seeds both have: each user's difference is averaged over those seeds
first (so seed noise shrinks, and users, not user x seed pairs, are the samples)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench.metrics import per_user_gains  # noqa: F401  (re-exported: the one per-user gains function)


def load_per_user(run: Path) -> dict:
    path = Path(run) / "per_user.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no per-user ranks (a complete run folder is expected)")
    return json.loads(path.read_text())


def paired_ttest_p(d: np.ndarray) -> float:
    """Two-sided p of the paired t-test on per-user differences ``d`` (1.0 when every difference is 0)."""
    from scipy import stats

    d = np.asarray(d, dtype=np.float64)
    if len(d) < 2 or not np.any(d != d[0]):
        return 1.0 if not np.any(d) else 0.0
    return float(stats.ttest_1samp(d, 0.0).pvalue)


def pooled_differences(a: dict[int, dict], b: dict[int, dict], metric: str) -> tuple[np.ndarray, list[int]]:
    """Per-user differences A - B of ``metric``, averaged over the seeds both rows have. ``a`` and ``b`` map
    seed -> that run's ``per_user.json``. Raises when a shared seed's runs were not evaluated on the same
    users and targets in the same order; returns (differences, shared seeds), empty when none is shared."""
    seeds = sorted(set(a) & set(b))
    diffs = []
    for s in seeds:
        if a[s]["users"] != b[s]["users"] or a[s]["targets"] != b[s]["targets"]:
            raise ValueError(f"seed {s}: the two runs were not evaluated on the same users and targets in the same order")
        diffs.append(per_user_gains(np.array(a[s]["ranks"]), metric) - per_user_gains(np.array(b[s]["ranks"]), metric))
    return (np.mean(diffs, axis=0) if diffs else np.zeros(0)), seeds


def _seed(run: Path) -> int:
    return int(json.loads((Path(run) / "result.json").read_text())["spec"]["seed"])


def paired_test(run_a: Path | list[Path], run_b: Path | list[Path], metric: str = "NDCG@10", bootstrap: int = 10000,
                seed: int = 0) -> dict:
    """Two rows, each one run or the runs of its seeds: the per-user difference A - B (averaged over the seeds
    both sides have, :func:`pooled_differences`; two single runs are paired whatever their seeds), its mean,
    a paired bootstrap 95% interval over users and the paired t-test."""
    runs_a = [Path(run_a)] if isinstance(run_a, (str, Path)) else [Path(r) for r in run_a]
    runs_b = [Path(run_b)] if isinstance(run_b, (str, Path)) else [Path(r) for r in run_b]
    if len(runs_a) == len(runs_b) == 1:
        a, b = {0: load_per_user(runs_a[0])}, {0: load_per_user(runs_b[0])}
    else:
        a, b = ({_seed(r): load_per_user(r) for r in runs} for runs in (runs_a, runs_b))
    try:
        d, seeds = pooled_differences(a, b, metric)
    except ValueError:
        raise ValueError(f"{', '.join(map(str, runs_a))} and {', '.join(map(str, runs_b))} were not evaluated on the "
                         f"same users and targets in the same order") from None
    if not seeds:
        raise ValueError(f"the two rows share no seed (A: {sorted(a)}, B: {sorted(b)})")
    mean = lambda side: float(np.mean([per_user_gains(np.array(side[s]["ranks"]), metric).mean() for s in seeds]))  # noqa: E731
    rng = np.random.default_rng(seed)
    boots = np.array([d[rng.integers(0, len(d), len(d))].mean() for _ in range(bootstrap)])
    return {"metric": metric, "users": len(d), "seeds": seeds if len(runs_a) + len(runs_b) > 2 else None,
            "a": mean(a), "b": mean(b), "mean_difference": float(d.mean()),
            "ci95": [float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))],
            "t_pvalue": paired_ttest_p(d), "a_better_users": int((d > 0).sum()), "b_better_users": int((d < 0).sum())}
