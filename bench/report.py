"""Plain-text results tables for the terminal: ``run``, ``suite``, ``evaluate`` and ``demo`` end with one."""
from __future__ import annotations

from bench.metrics import order_metrics, primary_metric
from bench.results import RunResult


def training_seconds(r: RunResult) -> float:
    """Every phase: this run's training plus every stage it reused from the stage cache (the SFT of an
    SFT+RL row, LASAR's Stage 2 of a Force-N row, GREAM's CoT-SFT of its reasoning row): each reused
    phase's facts carry ``reused: true`` and the seconds it took when it was trained (older results: read so by
    :func:`bench.results.upgrade`)."""
    extra = r.training.model_extra or {}
    return float(r.training.seconds) + sum(float(v.get("seconds") or 0.0) for v in extra.values()
                                           if isinstance(v, dict) and v.get("reused"))


def column_seconds(values: list[float]) -> list[str]:
    """Durations for one table column, all in one unit (the one :func:`human_seconds` picks for the longest),
    so a column never mixes ``113.6s`` and ``2.7min``."""
    top = max(values, default=0.0)
    if top < 120:
        return [f"{s:.1f}s" for s in values]
    if top < 7200:
        return [f"{s / 60:.1f}min" for s in values]
    return [f"{s / 3600:.2f}h" for s in values]


def human_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.1f}s"
    if s < 7200:
        return f"{s / 60:.1f}min"
    return f"{s / 3600:.2f}h"


def results_table(results: list[RunResult], metrics: list[str] | None = None) -> str:
    """One line per run, grouped by dataset and sorted by the primary metric: label, dataset, seed, the
    metrics (default: every @10 metric the runs report), ms per user, training time, run id."""
    if not results:
        return "(no results)"
    have = order_metrics({m for r in results for m in r.metrics})
    metrics = metrics or [m for m in have if m.endswith("@10")] or have
    key = primary_metric(metrics)
    rows = sorted(results, key=lambda r: (r.spec.dataset, -(r.metrics.get(key, -1.0) if key else 0.0)))
    head = ["method", "dataset", "seed", *metrics, "ms/user", "training", "run"]
    trained = column_seconds([training_seconds(r) for r in rows])
    body = [[r.display_name, r.spec.dataset, str(r.spec.seed),
             *[f"{r.metrics[m]:.4f}" if m in r.metrics else "-" for m in metrics],
             f"{r.latency.seconds_per_sample * 1000:.2f}", t, r.run_id] for r, t in zip(rows, trained)]
    return text_table(head, body, right={h for h in head if h in metrics or h in ("seed", "ms/user", "training")})


def text_table(head: list[str], body: list[list[str]], right: set[str] = frozenset()) -> str:
    """Aligned columns under a header and a rule of dashes; the columns named in ``right`` right-aligned."""
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    flush = [h in right for h in head]

    def line(cells):
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, flush)).rstrip()

    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, body)])
