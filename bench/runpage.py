"""A run page's facts from its result file: provenance, settings, the command that reproduces it, training
curves and bootstrap intervals of its metrics (rendered by :mod:`bench.leaderboard`)."""
from __future__ import annotations

from bench.results import RunResult
from bench.overrides import flatten
from bench.summary import _gains


def run_ci(r: RunResult, metrics=("NDCG@10", "HR@10"), resamples: int = 1000, seed: int = 0) -> dict:
    """Bootstrap 95% intervals of a run's metrics over its test users (from ``per_user.json``)."""
    import numpy as np

    out = {}
    rng = np.random.default_rng(seed)
    for m in metrics:
        g, _ = _gains(r, m)
        if g is None or not len(g):
            continue
        idx = rng.integers(0, len(g), (resamples, len(g)))
        boots = g[idx].mean(1)
        out[m] = {"mean": float(g.mean()), "lo": float(np.quantile(boots, 0.025)), "hi": float(np.quantile(boots, 0.975))}
    return out


def training_curves(r: RunResult) -> list[dict]:
    """Validation curves of every training phase a result records (any ``history`` list of epochs with a
    validation score, at any depth of ``training``): [{phase, svg}]."""
    from bench.svg import line_svg

    out = []

    def score(h: dict):
        for k in ("valid_score", "valid_NDCG@10", "NDCG@10"):
            if isinstance(h.get(k), (int, float)):
                return float(h[k])
        return None

    def walk(node, path):
        if isinstance(node, dict):
            hist = node.get("history")
            if isinstance(hist, list) and hist and all(isinstance(h, dict) for h in hist):
                pts = [(float(h.get("epoch", i)), score(h)) for i, h in enumerate(hist)]
                pts = [(x, y) for x, y in pts if y is not None]
                if len(pts) > 1:  # a single epoch is no curve (its score is in the facts)
                    phase = ".".join(path) or "training"
                    out.append({"phase": phase, "svg": line_svg({phase: pts}, "epoch", "validation score",
                                                                f"{r.display_name}: {phase} validation")})
            for k, v in node.items():
                if k != "history":
                    walk(v, path + [k])

    walk(r.training.model_dump(mode="json"), [])
    return out


def reproduce_command(r: RunResult) -> str:
    """The ``reasonrec run`` command that makes this row, as recorded when it ran (``method_facts.row``,
    :func:`bench.rowfacts.reproduce_command`)."""
    return (r.method_facts.get("row") or {}).get("command") or (
        "(this result predates recorded commands: `reasonrec upgrade <runs folder>` adds it)")


def run_page_facts(r: RunResult) -> dict:
    """What a run page shows beyond the raw JSON: method card, reproduce command, config / protocol /
    provenance as rows."""
    info = r.method_info
    needs = [n for n, flag in (("item text", info.get("needs_text")), ("teacher CoT", info.get("needs_cot")),
                               ("semantic IDs", info.get("uses_sids"))) if flag]
    env = r.environment
    hw = env.get("hardware", {})
    provenance = {"git commit": env.get("git_commit"), "data": r.data.get("name"),
                  "data fingerprint": r.data.get("fingerprint"), "created": r.created,
                  "hardware": hw.get("cuda") or f"CPU ({hw.get('cpu_model') or hw.get('processor', '?')}), "
                                                f"{hw.get('cpu_count', '?')} cores, {hw.get('torch_threads', '?')} torch thread(s)",
                  "CPU kernels": ", ".join(([hw["cpu_capability"]] if hw.get("cpu_capability") else [])
                                           + [f"{k}={v}" for k, v in (hw.get("kernel_variables") or {}).items()]) or None,
                  "python": hw.get("python"),
                  **{f"version: {k}": v for k, v in sorted((env.get("versions") or {}).items())}}
    protocol = {k: v for k, v in flatten({k: v for k, v in r.evaluation.items() if k != "by_stat"}).items()}
    from bench.report import human_seconds, training_seconds

    total = training_seconds(r)
    return {"training": {"own": human_seconds(r.training.seconds), "all": human_seconds(total),
                         "reused": human_seconds(total - r.training.seconds) if total > r.training.seconds else None,
                         "waited": r.training.model_dump().get("stage_wait_seconds")},
            "card": {"description": info.get("description", ""), "paper": info.get("paper", ""),
                     "family": info.get("family", ""), "needs": ", ".join(needs) or "interactions only"},
            "command": reproduce_command(r), "config": flatten(r.spec.method_config),
            "superseded": {k: row[k] for k in ("superseded_by", "superseded_note") if k in row}
            if (row := r.method_facts.get("row") or {}).get("superseded_by") else None,
            "protocol": protocol, "provenance": {k: v for k, v in provenance.items() if v not in (None, "")}}
