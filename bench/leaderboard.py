"""Static leaderboard: result files -> Jinja2 templates -> a self-contained folder.

Reads result files only and never imports torch. Tables follow the LASAR paper: Table 1
(per dataset, methods as rows, N@5/10/20 and HR@5/10/20, best bold, second underlined) and
Table 4 (time per sample, total time). One page per run shows its provenance.
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
            configs = {json.dumps(r.spec.model_dump(mode="json", exclude={"seed", "threads"}), sort_keys=True)
                       for r in runs}
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
                                      + (" (incl. reused SFT)" if any(training_seconds(r) > r.training.seconds
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
    _rank_cells(rows, ("seconds_per_sample",), higher_is_better=False)
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
    results = sorted(seen.values(), key=lambda r: (r.spec.dataset, r.display_name, r.spec.seed))
    grouped = _group(results)
    datasets = []
    for ds, rows in sorted(grouped.items()):
        columns = metric_columns([r for runs in rows.values() for r in runs])
        datasets.append({"name": ds, "table1": table1(rows, columns), "table4": table4(rows), "columns": columns,
                         "short": {c: short_name(c) for c in columns},
                         "stats": next(iter(rows.values()))[0].data.get("stats", {})})
    env = _env()
    with atomic_dir(out) as tmp:  # the old site stays in place until the new one is complete
        (tmp / "runs").mkdir()
        shutil.copy(TEMPLATES / "style.css", tmp / "style.css")
        (tmp / "index.html").write_text(env.get_template("index.html").render(
            title=title, datasets=datasets, n_runs=len(results), root=""))
        page = env.get_template("run.html")
        for r in results:
            (tmp / "runs" / f"{r.run_id}.html").write_text(page.render(title=title, r=r, root="../"))
        (tmp / "results.json").write_text(json.dumps([r.model_dump(mode="json") for r in results], indent=1))
    return out / "index.html"
