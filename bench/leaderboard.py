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

from bench.results import RunResult, load_results

TEMPLATES = Path(__file__).resolve().parent.parent / "leaderboard" / "templates"
TABLE1_COLUMNS = ("NDCG@5", "NDCG@10", "NDCG@20", "HR@5", "HR@10", "HR@20")
SHORT = {"NDCG@5": "N@5", "NDCG@10": "N@10", "NDCG@20": "N@20", "HR@5": "HR@5", "HR@10": "HR@10", "HR@20": "HR@20"}


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
        vals = sorted({round(r.cells[col]["mean"], 12) for r in rows if col in r.cells}, reverse=higher_is_better)
        for r in rows:
            if col in r.cells:
                v = round(r.cells[col]["mean"], 12)
                r.cells[col]["rank"] = vals.index(v) + 1 if len(rows) > 1 else 0


def _stats(values: list[float]) -> tuple[float, float | None]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def table1(runs_by_name: dict[str, list[RunResult]]) -> list[Row]:
    rows = []
    for name, runs in runs_by_name.items():
        row = Row(name, runs[0].spec.method, runs[0].method_info.get("family", ""), sorted(runs, key=lambda r: r.spec.seed))
        for col in TABLE1_COLUMNS:
            mean, std = _stats([r.metrics[col] for r in runs])
            row.cells[col] = {"mean": mean, "std": std, "text": _fmt(mean, std)}
        style = runs[0].method_facts.get("prompt_style")
        row.cells["style"] = {"mean": 0, "std": None, "text": style or "-"}
        n = runs[0].latency.n_samples
        full = runs[0].data.get("stats", {}).get("users")
        row.cells["users"] = {"mean": n, "std": None,
                              "text": f"{n:,}" + ("" if full in (None, n) else f" of {full:,}")}
        rows.append(row)
    rows.sort(key=lambda r: -r.cells["NDCG@10"]["mean"])
    _rank_cells(rows, TABLE1_COLUMNS)
    return rows


def _human_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.1f}s"
    if s < 7200:
        return f"{s / 60:.1f}min"
    return f"{s / 3600:.2f}h"


def table4(runs_by_name: dict[str, list[RunResult]]) -> list[Row]:
    rows = []
    for name, runs in runs_by_name.items():
        row = Row(name, runs[0].spec.method, runs[0].method_info.get("family", ""), runs)
        sps, sps_std = _stats([r.latency.seconds_per_sample for r in runs])
        tot, _ = _stats([r.latency.total_seconds for r in runs])
        # a stage reused from the stage cache (e.g. the SFT of an SFT+RL row) counts: training covers every phase
        reused = [float((r.training.model_extra or {}).get("reused_seconds", 0.0)) for r in runs]
        train, _ = _stats([r.training.seconds + x for r, x in zip(runs, reused)])
        row.cells["seconds_per_sample"] = {"mean": sps, "std": sps_std, "text": _fmt(sps * 1000, None if sps_std is None else sps_std * 1000, 3)}
        row.cells["total_seconds"] = {"mean": tot, "std": None, "text": _human_seconds(tot)}
        row.cells["train_seconds"] = {"mean": train, "std": None, "text": _human_seconds(train)
                                      + (" (incl. reused SFT)" if any(reused) else "")}
        r0 = runs[0]
        row.cells["n"] = {"mean": r0.latency.n_samples, "std": None, "text": f"{r0.latency.n_samples:,}"}
        facts = r0.method_facts
        params = facts.get("parameters")
        row.cells["params"] = {"mean": 0, "std": None, "text": f"{params / 1e6:.2f}M" if params else "-"}
        row.cells["beam"] = {"mean": 0, "std": None, "text": str(facts["beam_width"]) if facts.get("beam_width") else "-"}
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
    datasets = [{"name": ds, "table1": table1(rows), "table4": table4(rows),
                 "stats": next(iter(rows.values()))[0].data.get("stats", {})}
                for ds, rows in sorted(grouped.items())]
    env = _env()
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "runs").mkdir(parents=True)
    shutil.copy(TEMPLATES / "style.css", tmp / "style.css")
    (tmp / "index.html").write_text(env.get_template("index.html").render(
        title=title, datasets=datasets, columns=TABLE1_COLUMNS, short=SHORT, n_runs=len(results), root=""))
    page = env.get_template("run.html")
    for r in results:
        (tmp / "runs" / f"{r.run_id}.html").write_text(page.render(title=title, r=r, root="../"))
    (tmp / "results.json").write_text(json.dumps([r.model_dump(mode="json") for r in results], indent=1))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out / "index.html"
