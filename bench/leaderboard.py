"""Static leaderboard: result files -> Jinja2 templates -> a self-contained folder.

Reads result files only and never imports torch. Tables follow the LASAR paper: Table 1
(per dataset, methods as rows, N@5/10/20 and HR@5/10/20, best bold, second underlined) and
Table 4 (time per sample, total time), each with the paper's published rows as marked reference
rows (:mod:`bench.published`) and the protocol stated above it; paired significance marks against
the best row of each family; the ablation tables the methods declare (``Method.paper_tables``) and
per-value tables of any statistic a result records per user (e.g. LASAR's per-N table). One page
per run shows its provenance and confidence intervals.
"""
from __future__ import annotations

import json
import shutil
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from bench import assets
from bench.atomic import atomic_dir
from bench.metrics import order_metrics, primary_metric, short_name
from bench.report import human_seconds, training_seconds
from bench.results import RunResult, load_results

TEMPLATES = assets.TEMPLATES_DIR  # leaderboard/templates/ in a checkout, bench/_assets/templates/ when installed


def metric_columns(runs: list[RunResult]) -> list[str]:
    """Table 1's columns for a set of runs: every metric any of them reports, in the schema's order
    (bench.metrics); a run without one shows '-'."""
    return order_metrics({m for r in runs for m in r.metrics})


@dataclass
class Row:
    name: str
    method: str
    family: str
    runs: list[RunResult]
    cells: dict[str, dict] = field(default_factory=dict)  # column -> {mean, std, text, rank}

    @property
    def seeds(self) -> list[int]:
        return sorted(r.spec.seed for r in self.runs)


def _fmt(mean: float, std: float | None, digits: int = 4) -> str:
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def _group(results: list[RunResult]) -> dict[str, dict[str, list[RunResult]]]:
    """dataset -> display name -> runs (seeds of the same configuration)."""
    out: dict[str, dict[str, list[RunResult]]] = {}
    for r in results:
        out.setdefault(r.spec.dataset, {}).setdefault(r.display_name, []).append(r)
    for ds, rows in out.items():
        for name, runs in rows.items():
            configs = {json.dumps(r.configuration(), sort_keys=True) for r in runs}
            if len(configs) > 1:
                raise ValueError(f"dataset {ds}: several configurations share the display name '{name}' "
                                 f"(runs {', '.join(r.run_id for r in runs)}); give them distinct labels")
    return out


def _rank_cells(rows: list[Row], columns, higher_is_better: bool = True) -> None:
    for col in columns:
        have = [r for r in rows if r.cells.get(col, {}).get("mean") is not None]
        vals = sorted({round(r.cells[col]["mean"], 12) for r in have}, reverse=higher_is_better)
        for r in have:
            r.cells[col]["rank"] = vals.index(round(r.cells[col]["mean"], 12)) + 1 if len(rows) > 1 else 0


def _stats(values: list[float]) -> tuple[float, float | None]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def table1(runs_by_name: dict[str, list[RunResult]], columns: list[str] | None = None) -> list[Row]:
    """One row per display name; cells are mean ± std over seeds. Sorted by the primary metric
    (NDCG@10 when every row reports it; bench.metrics.primary_metric)."""
    columns = columns or metric_columns([r for runs in runs_by_name.values() for r in runs])
    rows = []
    for name, runs in runs_by_name.items():
        row = Row(name, runs[0].spec.method, runs[0].method_info.get("family", ""), sorted(runs, key=lambda r: r.spec.seed))
        for col in columns:
            if all(col in r.metrics for r in runs):
                mean, std = _stats([r.metrics[col] for r in runs])
                row.cells[col] = {"mean": mean, "std": std, "text": _fmt(mean, std)}
            else:
                row.cells[col] = {"mean": None, "std": None, "text": "-", "rank": 0}
        hist = runs[0].evaluation.get("max_history")
        row.cells["history"] = {"mean": hist or 0, "std": None, "text": str(hist) if hist else "-"}
        style = runs[0].method_facts.get("prompt_style")
        row.cells["style"] = {"mean": 0, "std": None, "text": style or "-"}
        n = runs[0].latency.n_samples
        full = runs[0].data.get("stats", {}).get("users")
        row.cells["users"] = {"mean": n, "std": None,
                              "text": f"{n:,}" + ("" if full in (None, n) else f" of {full:,}")}
        rows.append(row)
    key = primary_metric([c for c in columns if all(r.cells[c]["mean"] is not None for r in rows)]) \
        or primary_metric(columns)
    if key is not None:
        rows.sort(key=lambda r: -(r.cells[key]["mean"] if r.cells[key]["mean"] is not None else -1.0))
    _rank_cells(rows, columns)
    return rows


#: families whose "inference" is a lookup (popularity, random): never marked fastest
NO_INFERENCE_FAMILIES = {"baseline"}


def protocol(runs: list[RunResult]) -> list[str]:
    """The evaluation protocol of a dataset's rows, stated from their result files (differences named)."""
    def values(get):
        return sorted({str(v) for v in (get(r) for r in runs) if v is not None})

    hist = values(lambda r: r.evaluation.get("max_history"))
    excl = values(lambda r: r.evaluation.get("exclude_history"))
    beams = values(lambda r: r.evaluation.get("inference", {}).get("beam_width"))
    users = values(lambda r: r.latency.n_samples)
    ks = values(lambda r: ",".join(map(str, r.evaluation.get("ks", []))) or None)
    lines = ["Split: leave-one-out by time (each user's last interaction is the test target, the one before it "
             "validation); models are selected on validation only."]
    if hist:
        lines.append(f"History: the last {' / '.join(hist)} interactions before the target.")
    lines.append("Ranking: over the full item catalogue (no sampled negatives)" + (
        "; items already in the history are excluded." if excl == ["True"] else
        "; items already in the history are not excluded." if excl == ["False"] else
        f"; history exclusion differs between rows ({', '.join(excl)})." if excl else "."))
    if beams:
        lines.append(f"Generative methods decode with the trie-constrained beam search, beam width {' / '.join(beams)}; "
                     "their ranking is the beam's order.")
    lines.append(f"Test users per row: {' / '.join(f'{int(u):,}' for u in users)}"
                 + (f"; cut-offs K = {' / '.join(ks)}." if ks else "."))
    lines.append("HR@K: the share of test users whose target is in the top K. NDCG@K: the mean of 1 / log2(rank + 1) "
                 "when the target's rank is at most K, else 0 (one relevant item per user).")
    return lines


def paper_rows(dataset: str, columns: list[str]) -> tuple[list[dict], list[dict]]:
    """The paper's published Table 1 and Table 4 rows for a dataset (empty where it has none)."""
    from bench.published import published

    p = published()
    t1 = [{"name": name, "cells": {c: (f"{m[c]:.4f}" if c in m else "") for c in columns}}
          for name, m in p.table1_main.get(dataset, {}).items()]
    t4 = [{"name": name, "ms": f"{row.seconds_per_sample * 1000:.0f}", "total": row.total}
          for name, row in p.table4_latency.get(dataset, {}).items()]
    return t1, t4


def _per_user(r: RunResult) -> dict | None:
    """A run's ``per_user.json`` (None when it has none)."""
    path = r.folder / "per_user.json" if r.folder else None
    return json.loads(path.read_text()) if path is not None and path.is_file() else None


def _gains(r: RunResult, metric: str):
    """Per-user NDCG/HR of a run from its ``per_user.json`` (None when it has none)."""
    import numpy as np

    from bench.metrics import per_user_gains

    pu = _per_user(r)
    if pu is None:
        return None, None
    return per_user_gains(np.array(pu["ranks"]), metric), (tuple(pu["users"]), tuple(pu["targets"]))


def significance_marks(rows: list[Row], metrics=("NDCG@10", "HR@10"), alpha: float = 0.05) -> None:
    """Each row against the best row (by the first metric) of every family: the paired t-test
    (bench.significance, the same test as ``reasonrec paired``) on each metric's per-user values over the
    same test users, pooled over the seeds both rows have (each user's difference averaged over them).
    Sets ``row.cells['sig']['marks']`` = [{vs, family, seeds, marks: [{metric, mark, p, diff}]}]; mark '+'
    (significantly better), '−' (worse) or '≈' (p >= alpha). No mark without a shared seed."""
    from bench.significance import paired_ttest_p, pooled_differences

    key = metrics[0]
    best: dict[str, Row] = {}
    for row in rows:
        v = row.cells.get(key, {}).get("mean")
        if v is not None and (row.family not in best or v > best[row.family].cells[key]["mean"]):
            best[row.family] = row
    cache: dict[str, dict | None] = {}

    def per_seed(row):
        if row.name not in cache:
            pus = {r.spec.seed: _per_user(r) for r in row.runs}
            cache[row.name] = None if any(v is None for v in pus.values()) else pus
        return cache[row.name]

    for row in rows:
        row.cells["sig"] = {"mean": 0, "std": None, "text": "", "marks": []}
        for fam, ref in sorted(best.items()):
            a, b = per_seed(row), per_seed(ref)
            if ref is row or a is None or b is None:
                continue
            marks = []
            try:
                for metric in metrics:
                    d, seeds = pooled_differences(a, b, metric)
                    if not seeds:
                        break
                    p = paired_ttest_p(d)
                    marks.append({"metric": metric, "mark": "≈" if p >= alpha else ("+" if d.mean() > 0 else "−"),
                                  "p": p, "diff": float(d.mean())})
            except ValueError:  # not evaluated on the same users: no comparison
                continue
            if len(marks) == len(metrics):
                row.cells["sig"]["marks"].append({"vs": ref.name, "family": fam, "seeds": seeds, "marks": marks})


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


def _contains(cfg, sub) -> bool:
    if isinstance(sub, dict):
        return isinstance(cfg, dict) and all(k in cfg and _contains(cfg[k], v) for k, v in sub.items())
    return cfg == sub


def _resolved_config(r: RunResult) -> dict:
    """A result's method config with the defaults filled in (older results stored only the overrides)."""
    from bench.registry import REGISTRY

    try:
        return REGISTRY.get(r.spec.method).Config(**r.spec.method_config).model_dump()
    except Exception:  # noqa: BLE001 - a result from an older config schema, or an unknown method
        return r.spec.method_config


def ablation_tables(results: list[RunResult], published: dict | None = None) -> list[dict]:
    """The paper tables the registered methods declare (``Method.paper_tables``), filled with every
    result whose resolved config contains a row's subset: [{key, title, dataset, rows: [{paper: bool,
    name, metrics, mean_n, run_id}]}], only tables with at least one of our rows."""
    from bench.published import published as shipped
    from bench.registry import REGISTRY

    published = shipped().model_dump() if published is None else published
    configs: dict[str, dict] = {}
    tables = []
    for name in REGISTRY.names():
        for key, (title, dataset, specs) in REGISTRY.get(name).paper_tables.items():
            ref = published.get(key) or {}
            ref = ref.get(dataset, ref)
            rows, ours = [], 0
            for paper_name, method, sub in specs:
                got = ref.get(paper_name) if paper_name else None
                if isinstance(got, dict):
                    rows.append({"paper": True, "name": paper_name, "metrics": {k: v for k, v in got.items()
                                                                                  if k != "mean_N" and v is not None},
                                 "mean_n": got.get("mean_N"), "run_id": None})
                elif isinstance(got, (int, float)):  # a figure's single value: its metric is in the key
                    rows.append({"paper": True, "name": paper_name, "metrics": {"HR@10": got}, "mean_n": None,
                                 "run_id": None})
                for r in results:
                    if r.spec.dataset != dataset or r.spec.method != method:
                        continue
                    if r.run_id not in configs:
                        configs[r.run_id] = _resolved_config(r)
                    if _contains(configs[r.run_id], sub):
                        steps = (r.evaluation.get("by_stat") or {}).get("latent_steps", {})
                        rows.append({"paper": False, "name": r.display_name, "metrics": dict(r.metrics),
                                     "mean_n": steps.get("mean"), "run_id": r.run_id,
                                     "counterpart": paper_name if got is not None else None})
                        ours += 1
            if ours:
                tables.append({"key": key, "title": title, "dataset": dataset, "rows": rows,
                               "chart": _steps_chart(title, rows)})
    return tables


def _steps_chart(title: str, rows: list[dict], metrics=("HR@10", "NDCG@10")) -> str:
    """For a table whose rows differ in their mean reasoning depth (e.g. forced N, Fig. 4a): each metric
    against mean N (our rows, by N); empty when fewer than two depths."""
    from bench.svg import line_svg

    by_n: dict[float, list[dict]] = {}
    for r in rows:
        if not r["paper"] and isinstance(r.get("mean_n"), (int, float)):
            by_n.setdefault(float(r["mean_n"]), []).append(r["metrics"])
    if len(by_n) < 2:
        return ""
    # rows at the same depth (e.g. seeds) are averaged
    return line_svg({m: [(n, sum(x[m] for x in ms) / len(ms)) for n, ms in sorted(by_n.items())
                         if all(m in x for x in ms)] for m in metrics},
                    "mean N (latent steps)", "test metric", f"{title}: metric by depth")


def stat_tables(runs: list[RunResult], metrics=("NDCG@10", "HR@10")) -> list[dict]:
    """Per-value tables of every per-user statistic the runs record (``evaluation.by_stat``, e.g. LASAR's
    ``latent_steps``: the paper's per-N Fig. 5b): [{stat, levels, rows: [{name, run_id, mean, cells}]}]."""
    by: dict[str, list] = {}
    for r in runs:
        for stat, facts in (r.evaluation.get("by_stat") or {}).items():
            if facts.get("by_value"):
                by.setdefault(stat, []).append((r, facts))
    out = []
    for stat, items in sorted(by.items()):
        values = sorted({v for _, f in items for v in f["by_value"]}, key=lambda v: float(v))
        rows = []
        for r, f in items:
            cells = {}
            for v in values:
                b = f["by_value"].get(v)
                cells[v] = "" if b is None else (f"{100 * b['share']:.1f}% / " + " / ".join(
                    f"{b[m]:.4f}" for m in metrics if m in b))
            rows.append({"name": r.display_name, "run_id": r.run_id, "mean": f.get("mean"), "cells": cells})
        out.append({"stat": stat, "levels": values, "rows": rows, "metrics": list(metrics)})
    return out


def pareto_chart(t1: list[Row], t4: list[Row], metric: str, dataset: str) -> str:
    """Latency per sample (log) vs ``metric``, every row that does inference; the Pareto front joined."""
    from bench.svg import pareto_svg

    ms = {r.name: r.cells["seconds_per_sample"]["mean"] * 1000 for r in t4 if r.family not in NO_INFERENCE_FAMILIES}
    pts = [(r.name, ms[r.name], r.cells[metric]["mean"]) for r in t1
           if r.name in ms and r.cells.get(metric, {}).get("mean") is not None]
    return pareto_svg(pts, "ms per test user (log scale)", metric, f"{dataset}: latency vs {metric}")


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


def stat_charts(t: dict, runs: list[RunResult], metric: str = "HR@10") -> list[str]:
    """For a per-value table: the share of users at each value (the paper's Fig. 4b, SFT vs RL) and
    ``metric`` at each value (Fig. 5b), one series per run."""
    from bench.svg import line_svg

    by_id = {r.run_id: r for r in runs}
    share, quality = {}, {}
    for row in t["rows"]:
        bv = by_id[row["run_id"]].evaluation["by_stat"][t["stat"]]["by_value"]
        if len(bv) < 2:
            continue
        share[row["name"]] = [(float(v), bv[v]["share"]) for v in t["levels"] if v in bv]
        quality[row["name"]] = [(float(v), bv[v][metric]) for v in t["levels"] if v in bv and metric in bv[v]]
    return [c for c in (line_svg(share, t["stat"], "share of test users", f"{t['stat']}: distribution"),
                        line_svg(quality, t["stat"], metric, f"{metric} by {t['stat']}")) if c]


def _flatten(d, prefix="") -> dict:
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _set_value(v) -> str:
    # --set values are read back as YAML: JSON (strings quoted) is YAML, so '#', ': ', 'yes', '2024' stay strings
    return json.dumps(v)


def reproduce_command(r: RunResult) -> str:
    """The ``reasonrec run`` command that makes this row: every method setting that differs from the
    method's defaults as ``--set``, the label, the seed and evaluation settings that differ."""
    import shlex

    from bench.registry import REGISTRY
    from bench.specs import RunSpec

    parts = ["reasonrec", "run", "--method", r.spec.method, "--dataset", r.spec.dataset]
    if r.spec.seed:
        parts += ["--seed", str(r.spec.seed)]
    try:
        defaults = _flatten(REGISTRY.get(r.spec.method).Config().model_dump(mode="json"))
    except Exception:  # noqa: BLE001 - an unknown method: every stored setting
        defaults = {}
    for k, v in sorted(_flatten(r.spec.method_config).items()):
        if k not in defaults or defaults[k] != v:
            parts += ["--set", f"method_config.{k}={_set_value(v)}"]
    mine = r.spec.model_dump(mode="json")
    try:  # the card's data settings and the default eval / selection (no dataset files needed)
        from bench.config import resolve_spec

        base = resolve_spec({"method": r.spec.method, "dataset": r.spec.dataset_card or r.spec.dataset},
                            check_files=False).model_dump(mode="json")
    except Exception:  # noqa: BLE001 - an unknown dataset card: every stored data setting
        base = RunSpec(method=r.spec.method, dataset=r.spec.dataset).model_dump(mode="json")
    for section in ("data", "eval", "selection"):
        ref = _flatten(base.get(section) or {})
        for k, v in sorted(_flatten(mine.get(section) or {}).items()):
            if ref.get(k, object()) != v:
                parts += ["--set", f"{section}.{k}={_set_value(v)}"]
    if r.spec.label:
        parts += ["--set", f"label={_set_value(r.spec.label)}"]
    return " ".join(shlex.quote(p) for p in parts)


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
                  "hardware": hw.get("cuda") or f"CPU ({hw.get('processor', '?')}), {hw.get('cpu_count', '?')} cores, "
                                                f"{hw.get('torch_threads', '?')} torch thread(s)",
                  "python": hw.get("python"),
                  **{f"version: {k}": v for k, v in sorted((env.get("versions") or {}).items())}}
    protocol = {k: v for k, v in _flatten({k: v for k, v in r.evaluation.items() if k != "by_stat"}).items()}
    from bench.report import human_seconds, training_seconds

    total = training_seconds(r)
    return {"training": {"own": human_seconds(r.training.seconds), "all": human_seconds(total),
                         "reused": human_seconds(total - r.training.seconds) if total > r.training.seconds else None,
                         "waited": r.training.model_dump().get("stage_wait_seconds")},
            "card": {"description": info.get("description", ""), "paper": info.get("paper", ""),
                     "family": info.get("family", ""), "needs": ", ".join(needs) or "interactions only"},
            "command": reproduce_command(r), "config": _flatten(r.spec.method_config),
            "protocol": protocol, "provenance": {k: v for k, v in provenance.items() if v not in (None, "")}}


def registry_page() -> dict:
    """The "add your method" page: the Method interface (from its docstrings) and every registered
    method with its card and its config fields (type, default, description)."""
    import inspect

    from bench.method import Method
    from bench.registry import REGISTRY

    interface = []
    for name in ("fit", "recommend", "save", "load", "describe"):
        fn = getattr(Method, name, None)
        if fn is not None:
            interface.append({"name": name, "signature": f"{name}{inspect.signature(fn)}",
                              "doc": inspect.getdoc(fn) or ""})
    methods = []
    for name in REGISTRY.names():
        cls = REGISTRY.get(name)
        fields = []
        for fname, f in cls.Config.model_fields.items():
            ann = getattr(f.annotation, "__name__", None) or str(f.annotation).replace("typing.", "")
            default = f.default if not callable(getattr(f, "default_factory", None)) else f.default_factory()
            if hasattr(default, "model_dump"):
                default = default.model_dump(mode="json")
            fields.append({"name": fname, "type": ann, "default": json.dumps(default, default=str),
                           "doc": f.description or ""})
        info = cls.info
        methods.append({"name": name, "family": info.family, "paper": info.paper, "description": info.description,
                        "module": f"{cls.__module__}:{cls.__qualname__}", "fields": fields,
                        "demo_rows": list(cls.demo_rows) or [name], "paper_tables": list(cls.paper_tables)})
    return {"interface": interface, "methods": methods}


def tuning_tables(trials: list[RunResult]) -> dict[str, list[dict]]:
    """``reasonrec tune`` trials (results scored on the validation split), per dataset and study (the
    label's part before " #"), best first: [{study, method, rows: [{name, run_id, metrics, settings}]}].
    ``settings``: the method settings that differ from the method's defaults, and the max history."""
    from bench.registry import REGISTRY

    out: dict[str, dict[str, dict]] = {}
    for r in trials:
        study = r.display_name.split(" #")[0]
        try:
            defaults = _flatten(REGISTRY.get(r.spec.method).Config().model_dump(mode="json"))
        except Exception:  # noqa: BLE001 - an unknown method: show every setting
            defaults = {}
        settings = {k: v for k, v in _flatten(r.spec.method_config).items() if defaults.get(k, object()) != v}
        settings["max_history"] = r.evaluation.get("max_history")
        entry = out.setdefault(r.spec.dataset, {}).setdefault(study, {"study": study, "method": r.spec.method,
                                                                        "rows": []})
        entry["rows"].append({"name": r.display_name, "run_id": r.run_id, "metrics": dict(r.metrics),
                              "settings": ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                                    for k, v in sorted(settings.items()))})
    for ds in out.values():
        for entry in ds.values():
            entry["rows"].sort(key=lambda row: -row["metrics"].get("NDCG@10", -1.0))
    return {ds: list(v.values()) for ds, v in out.items()}


def table4(runs_by_name: dict[str, list[RunResult]]) -> list[Row]:
    rows = []
    for name, runs in runs_by_name.items():
        row = Row(name, runs[0].spec.method, runs[0].method_info.get("family", ""), runs)
        sps, sps_std = _stats([r.latency.seconds_per_sample for r in runs])
        tot, _ = _stats([r.latency.total_seconds for r in runs])
        # a stage reused from the stage cache (e.g. the SFT of an SFT+RL row) counts: training covers every phase
        train, _ = _stats([training_seconds(r) for r in runs])
        row.cells["seconds_per_sample"] = {"mean": sps, "std": sps_std, "text": _fmt(sps * 1000, None if sps_std is None else sps_std * 1000, 3)}
        row.cells["total_seconds"] = {"mean": tot, "std": None, "text": human_seconds(tot)}
        row.cells["train_seconds"] = {"mean": train, "std": None, "text": human_seconds(train)
                                      + (" (incl. reused stages)" if any(training_seconds(r) > r.training.seconds
                                                                     for r in runs) else "")}
        r0 = runs[0]
        row.cells["n"] = {"mean": r0.latency.n_samples, "std": None, "text": f"{r0.latency.n_samples:,}"}
        facts = r0.method_facts
        params = facts.get("parameters")
        row.cells["params"] = {"mean": 0, "std": None, "text": f"{params / 1e6:.2f}M" if params else "-"}
        beam = r0.evaluation.get("inference", {}).get("beam_width", facts.get("beam_width"))  # older results: facts
        row.cells["beam"] = {"mean": 0, "std": None, "text": str(beam) if beam else "-"}
        hw = r0.environment.get("hardware", {})
        row.cells["hardware"] = {"mean": 0, "std": None,
                                 "text": hw.get("cuda") or f"CPU, {hw.get('torch_threads', '?')} thread(s)"}
        rows.append(row)
    rows.sort(key=lambda r: r.cells["seconds_per_sample"]["mean"])
    timed = [r for r in rows if r.family not in NO_INFERENCE_FAMILIES]
    _rank_cells(timed, ("seconds_per_sample",), higher_is_better=False)
    for r in rows:
        if r.family in NO_INFERENCE_FAMILIES:
            r.cells["seconds_per_sample"]["rank"] = 0
            r.cells["seconds_per_sample"]["text"] += " (lookup)"
    return rows


def _env():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str)
    return env


def build_site(runs_dirs: list[Path], out: Path, title: str = "ReasonRec Bench leaderboard") -> Path:
    results = []
    for d in runs_dirs:
        if not Path(d).is_dir():
            raise FileNotFoundError(f"runs folder not found: {d}")
        results.extend(load_results(d))
    seen: dict[str, RunResult] = {}
    for r in results:  # the same run found twice (e.g. two folders): keep one
        seen.setdefault(r.run_id, r)
    # tuning trials rank the validation split: not leaderboard rows (a table of their own per dataset)
    trials = [r for r in seen.values() if r.evaluation.get("split", "test") != "test"]
    results = sorted((r for r in seen.values() if r.evaluation.get("split", "test") == "test"),
                     key=lambda r: (r.spec.dataset, r.display_name, r.spec.seed))
    grouped = _group(results)
    studies = tuning_tables(trials)
    for ds in studies:
        grouped.setdefault(ds, {})
    datasets = []
    ablations = ablation_tables(results)
    for ds, rows in sorted(grouped.items()):
        runs = [r for rs in rows.values() for r in rs]
        if not runs:  # only tuning trials on this dataset
            datasets.append({"name": ds, "only_trials": True, "studies": studies.get(ds, []), "stats": {}})
            continue
        columns = metric_columns(runs)
        t1 = table1(rows, columns)
        sig_metric = "NDCG@10" if "NDCG@10" in columns else primary_metric(columns)
        sig_metrics = [m for m in (sig_metric, "HR@10") if m and m in columns]
        if sig_metrics:
            significance_marks(t1, tuple(dict.fromkeys(sig_metrics)))
        paper1, paper4 = paper_rows(ds, columns)
        ab_cols = [c for c in ("NDCG@5", "NDCG@10", "HR@5", "HR@10") if c in columns]
        t4 = table4(rows)
        stats_t = stat_tables(runs)
        for t in stats_t:
            t["charts"] = stat_charts(t, runs)
        datasets.append({"name": ds, "table1": t1, "table4": t4, "columns": columns,
                         "pareto": pareto_chart(t1, t4, sig_metric, ds) if sig_metric else "",
                         "short": {c: short_name(c) for c in columns}, "sig_metric": sig_metric,
                         "sig_metrics": [short_name(m) for m in dict.fromkeys(sig_metrics)],
                         "paper1": paper1, "paper4": paper4, "protocol": protocol(runs),
                         # a protocol variant (e.g. a tuned row at max history 50) is shown per row
                         "history_varies": len({r.evaluation.get("max_history") for r in runs}) > 1,
                         "ablations": [t for t in ablations if t["dataset"] == ds], "ab_columns": ab_cols,
                         "stat_tables": stats_t, "studies": studies.get(ds, []), "only_trials": False,
                         "stats": next(iter(rows.values()))[0].data.get("stats", {})})
    env = _env()
    with atomic_dir(out) as tmp:  # the old site stays in place until the new one is complete
        (tmp / "runs").mkdir()
        shutil.copy(TEMPLATES / "style.css", tmp / "style.css")
        (tmp / "index.html").write_text(env.get_template("index.html").render(
            title=title, datasets=datasets, n_runs=len(results), root="",
            cpu_rows=sum(not r.environment.get("hardware", {}).get("cuda") for r in results)))
        (tmp / "add-your-method.html").write_text(env.get_template("add-your-method.html").render(
            title=title, root="", **registry_page()))
        page = env.get_template("run.html")
        for r in results + trials:
            (tmp / "runs" / f"{r.run_id}.json").write_text(json.dumps(r.model_dump(mode="json"), indent=1))
            (tmp / "runs" / f"{r.run_id}.html").write_text(page.render(facts=run_page_facts(r), title=title, r=r, root="../", ci=run_ci(r),
                                                                                curves=training_curves(r)))
        (tmp / "results.json").write_text(json.dumps([r.model_dump(mode="json") for r in results], indent=1))
    return out / "index.html"
