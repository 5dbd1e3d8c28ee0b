"""Static leaderboard: result files -> Jinja2 templates -> a self-contained folder.

Reads result files only and never imports torch. Tables follow the LASAR paper: Table 1
(per dataset, methods as rows, N@5/10/20 and HR@5/10/20, best bold, second underlined) and
Table 4 (time per sample, total time), each with the paper's published rows as marked reference
rows (:mod:`bench.published`) and the protocol stated above it; paired significance marks against
the best row of each family; the ablation tables the methods declare (``Method.paper_tables``) and
per-value tables of any statistic a result records per user (e.g. LASAR's per-N table). One page
per run shows its provenance and confidence intervals.

The numbers come from :mod:`bench.summary` (result files -> typed rows); this module only renders them.
"""
from __future__ import annotations

import json
from collections import Counter
import shutil
from pathlib import Path

from bench import assets
from bench.atomic import atomic_dir
from bench.metrics import primary_metric, short_name
from bench.results import RunResult, load_results
from bench.latency import latency_reports
from bench.runpage import reproduce_command, run_ci, run_page_facts, training_curves  # noqa: F401
from bench.summary import (NO_INFERENCE_FAMILIES, Row, _group, ablation_tables, metric_columns, paper_rows,
                           protocol, significance_vs_best, stat_tables, table1, table4, tuning_tables)

TEMPLATES = assets.TEMPLATES_DIR  # leaderboard/templates/ in a checkout, bench/_assets/templates/ when installed


def _steps_chart(title: str, rows: list[dict], metrics=("HR@10", "NDCG@10")) -> str:
    """For a table whose rows differ in their mean reasoning depth (e.g. forced N, Fig. 4a): each metric
    against mean N (our rows, by N), as points: the rows are different configurations, not a curve; empty when
    fewer than two depths."""
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
                    "mean N (latent steps per user)", "test metric (all test users)", f"{title}: metric by depth",
                    lines=False)


def pareto_chart(t1: list[Row], t4: list[Row], metric: str, dataset: str) -> str:
    """Latency per sample (log) vs ``metric``, every row that does inference; the Pareto front joined."""
    from bench.svg import pareto_svg

    ms = {r.name: r.cells["seconds_per_sample"]["mean"] * 1000 for r in t4 if r.family not in NO_INFERENCE_FAMILIES}
    pts = [(r.name, ms[r.name], r.cells[metric]["mean"]) for r in t1
           if r.name in ms and r.cells.get(metric, {}).get("mean") is not None]
    return pareto_svg(pts, "ms per test user (log scale)", metric, f"{dataset}: latency vs {metric}")


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


def header_facts(results: list[RunResult], datasets: list[dict]) -> dict:
    """What the index page's opening sentences say, derived from the results they describe (never a fixed
    claim): the CPU rows, their generative backbones' parameter range, how the traditional rows stopped, and
    whether any dataset has published reference rows."""
    def millions(n):
        return f"{n / 1e6:.2f}M" if n < 1e6 else f"{n / 1e6:.1f}M"

    cpu = [r for r in results if not r.environment.get("hardware", {}).get("cuda")]
    params = sorted(p for r in cpu if r.method_info.get("family") not in ("traditional", "baseline")
                    and isinstance(p := r.method_facts.get("parameters"), int))
    trad = [r for r in results if r.method_info.get("family") == "traditional"]
    stops = Counter(str((r.training.model_extra or {}).get("stopped_by", "unknown")).replace("_", " ") for r in trad)
    epochs = sorted(e for r in trad if isinstance(e := (r.training.model_extra or {}).get("epochs_run"), int))
    return {"cpu_rows": len(cpu), "gpu_rows": len(results) - len(cpu),
            "params": (f"{millions(params[0])} to {millions(params[-1])}" if params and params[0] != params[-1]
                       else millions(params[0]) if params else None),
            "trad_rows": len(trad), "trad_stops": ", ".join(f"{k} ({v})" for k, v in stops.most_common()),
            "trad_epochs": (f"{epochs[0]} to {epochs[-1]}" if epochs[0] != epochs[-1] else str(epochs[0])) if epochs
            else None,
            "paper_rows": any(ds.get("paper1") for ds in datasets)}


def _env():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str)
    return env


def main_rows(suite_files: list[Path]) -> set[tuple[str, str, str | None]]:
    """(dataset, method, label) of every entry of the given suite files (e.g. ``leaderboard/suites/table1-*.yaml``):
    the rows a dataset's Table 1 holds. Read as plain YAML: no method is imported."""
    import yaml

    out = set()
    for f in suite_files:
        doc = yaml.safe_load(Path(f).read_text()) or {}
        for entry in doc.get("methods") or []:
            method, label = (entry, None) if isinstance(entry, str) else (entry["method"], entry.get("label"))
            out.update((ds, method, label) for ds in doc.get("datasets") or [])
    return out


def build_site(runs_dirs: list[Path], out: Path, title: str = "ReasonRec Bench leaderboard",
               main: set[tuple[str, str, str | None]] | None = None, log=lambda *_: None) -> Path:
    """``main``: the rows each dataset's Table 1 holds (:func:`main_rows`); the dataset's other rows (ablations,
    variants, other budgets) go to a table of their own below it. None, or no entry for a dataset: every row is
    in its Table 1."""
    results = []
    for d in runs_dirs:
        if not Path(d).is_dir():
            raise FileNotFoundError(f"runs folder not found: {d}")
        results.extend(load_results(d))
        log(f"read {len(results)} result files so far (from {d})")
    seen: dict[str, RunResult] = {}
    for r in results:  # the same run found twice (e.g. two folders): keep one
        seen.setdefault(r.run_id, r)
    # tuning trials rank the validation split: not leaderboard rows (a table of their own per dataset)
    trials = [r for r in seen.values() if r.evaluation["split"] != "test"]
    results = sorted((r for r in seen.values() if r.evaluation["split"] == "test"),
                     key=lambda r: (r.spec.dataset, r.display_name, r.spec.seed))
    grouped = _group(results)
    side_by_side = latency_reports([Path(d) for d in runs_dirs], seen, log)
    studies = tuning_tables(trials)
    for ds in studies:
        grouped.setdefault(ds, {})
    datasets = []
    ablations = ablation_tables(results)
    for t in ablations:
        t["chart"] = _steps_chart(t["title"], t["rows"])
    log(f"summarising {len(grouped)} dataset(s): tables, paired tests against each best row, charts")
    for ds, rows in sorted(grouped.items()):
        runs = [r for rs in rows.values() for r in rs]
        if not runs:  # only tuning trials on this dataset
            datasets.append({"name": ds, "only_trials": True, "studies": studies.get(ds, []), "stats": {}})
            continue
        columns = metric_columns(runs)
        listed = {(m, lab) for d, m, lab in (main or ()) if d == ds}
        in_main = {name: rs for name, rs in rows.items() if not listed or (rs[0].spec.method, rs[0].spec.label) in listed}
        t1 = table1(in_main or rows, columns)
        others = table1({n: rs for n, rs in rows.items() if n not in in_main}, columns) if in_main else []
        sig_metric = "NDCG@10" if "NDCG@10" in columns else primary_metric(columns)
        sig_metrics = [m for m in (sig_metric, "HR@10") if m and m in columns]
        if sig_metrics:
            significance_vs_best(t1, tuple(dict.fromkeys(sig_metrics)))
        paper1, paper4 = paper_rows(ds, columns)
        ab_cols = [c for c in ("NDCG@5", "NDCG@10", "HR@5", "HR@10") if c in columns]
        t4 = table4(rows)
        stats_t = stat_tables(runs)
        for t in stats_t:
            t["charts"] = stat_charts(t, runs)
        datasets.append({"name": ds, "table1": t1, "others": others, "table4": t4, "columns": columns,
                         "latency_reports": side_by_side.get(ds, []),
                         "pareto": pareto_chart(t1, t4, sig_metric, ds) if sig_metric else "",
                         "short": {c: short_name(c) for c in columns}, "sig_metric": sig_metric,
                         "sig_metrics": [short_name(m) for m in dict.fromkeys(sig_metrics)],
                         "paper1": paper1, "paper4": paper4, "protocol": protocol(runs),
                         # a protocol variant (e.g. a tuned row at max history 50) is shown per row
                         "history_varies": len({r.evaluation.get("max_history") for r in runs}) > 1,
                         "ablations": [t for t in ablations if t["dataset"] == ds], "ab_columns": ab_cols,
                         "stat_tables": stats_t, "studies": studies.get(ds, []), "only_trials": False,
                         "stats": next(iter(rows.values()))[0].data.get("stats", {})})
    log(f"rendering the index and {len(results) + len(trials)} run pages")
    env = _env()
    header = header_facts(results, datasets)
    with atomic_dir(out) as tmp:  # the old site stays in place until the new one is complete
        (tmp / "runs").mkdir()
        shutil.copy(TEMPLATES / "style.css", tmp / "style.css")
        (tmp / "index.html").write_text(env.get_template("index.html").render(
            title=title, datasets=datasets, n_runs=len(results), root="", header=header))
        (tmp / "add-your-method.html").write_text(env.get_template("add-your-method.html").render(
            title=title, root="", **registry_page()))
        page = env.get_template("run.html")
        for r in results + trials:
            (tmp / "runs" / f"{r.run_id}.json").write_text(json.dumps(r.model_dump(mode="json"), indent=1))
            (tmp / "runs" / f"{r.run_id}.html").write_text(page.render(facts=run_page_facts(r), title=title, r=r, root="../", ci=run_ci(r),
                                                                                curves=training_curves(r)))
        (tmp / "results.json").write_text(json.dumps([r.model_dump(mode="json") for r in results], indent=1))
    return out / "index.html"
