"""Result files -> the leaderboard's typed summary: Table 1 rows (mean +- std over seeds, ranks, paired
marks), Table 4, the protocol stated from the files, the paper's rows, ablation and per-value tables, run-page
facts and intervals, tuning studies. No rendering here (:mod:`bench.leaderboard` turns this into HTML and
SVG) and no torch."""
from __future__ import annotations

import hashlib
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from bench.metrics import order_metrics, primary_metric
from bench.overrides import flatten
from bench.report import human_seconds, training_seconds
from bench.results import RunResult


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
    """dataset -> display name -> runs (seeds of the same configuration). Configurations that share a
    display name (two unlabelled budgets of one method, a re-evaluation beside its source) are not merged:
    each gets its own row, named ``<name> · <digest of its configuration>`` (label them to name them)."""
    out: dict[str, dict[str, list[RunResult]]] = {}
    for r in results:
        out.setdefault(r.spec.dataset, {}).setdefault(r.display_name, []).append(r)
    for ds, rows in out.items():
        for name, runs in list(rows.items()):
            by_config: dict[str, list[RunResult]] = {}
            for r in runs:
                by_config.setdefault(json.dumps(r.configuration(), sort_keys=True), []).append(r)
            if len(by_config) > 1:
                del rows[name]
                for config, group in by_config.items():
                    rows[f"{name} · {hashlib.sha256(config.encode()).hexdigest()[:8]}"] = group
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


def other_references() -> dict[str, list[dict]]:
    """Table-1 reference rows from outside the LASAR paper (``bench/published_other.json``: TIGER's paper and
    reruns), per dataset: ``[{name, cells}]``, cells as printed (a range stays a range)."""
    return json.loads(Path(__file__).with_name("published_other.json").read_text())["table1"]


def paper_rows(dataset: str, columns: list[str]) -> tuple[list[dict], list[dict]]:
    """The paper's published Table 1 and Table 4 rows for a dataset (empty where it has none), then the
    reference rows from other sources (:func:`other_references`)."""
    from bench.published import published

    p = published()
    t1 = [{"name": name, "kind": "paper", "cells": {c: (f"{m[c]:.4f}" if c in m else "") for c in columns}}
          for name, m in p.table1_main.get(dataset, {}).items()]
    t1 += [{"name": row["name"], "kind": "reference", "cells": {c: row["cells"].get(c, "") for c in columns}}
           for row in other_references().get(dataset, [])]
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


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone), in the input order."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def significance_vs_best(rows: list[Row], metrics=("NDCG@10", "HR@10"), alpha: float = 0.05) -> Row | None:
    """Every row against the table's best row (the highest mean of ``metrics[0]``): the paired t-test
    (bench.significance, the same test as ``reasonrec paired``) on each metric's per-user values over the same
    test users, pooled over the seeds both rows have (each user's difference averaged over them), Holm-corrected
    over the rows compared (per metric). Sets ``row.cells['sig']`` = {best: bool, marks: [{metric, word, diff, p,
    p_holm, seeds}]}; word "higher" / "lower" (significant after Holm at ``alpha``) or "n.s.". Returns the best row."""
    from bench.significance import paired_ttest_p, pooled_differences

    key = metrics[0]
    cache: dict[str, dict | None] = {}

    def per_seed(row):
        if row.name not in cache:
            pus = {r.spec.seed: _per_user(r) for r in row.runs}
            cache[row.name] = None if any(v is None for v in pus.values()) else pus
        return cache[row.name]

    for row in rows:
        row.cells["sig"] = {"mean": 0, "std": None, "text": "", "marks": [], "best": False}
    scored = [r for r in rows if r.cells.get(key, {}).get("mean") is not None and per_seed(r) is not None]
    if not scored:
        return None
    best = max(scored, key=lambda r: r.cells[key]["mean"])
    best.cells["sig"]["best"] = True
    tests: dict[str, list] = {m: [] for m in metrics}
    for row in scored:
        if row is best:
            continue
        for metric in metrics:
            try:
                d, seeds = pooled_differences(per_seed(row), per_seed(best), metric)
            except ValueError:  # not evaluated on the same users: no comparison
                break
            if seeds:
                tests[metric].append((row, float(d.mean()), paired_ttest_p(d), seeds))
    for metric, items in tests.items():
        for (row, diff, p, seeds), q in zip(items, holm([p for _, _, p, _ in items])):
            word = "n.s." if q >= alpha else ("higher" if diff > 0 else "lower")
            row.cells["sig"]["marks"].append({"metric": metric, "word": word, "diff": diff, "p": p, "p_holm": q,
                                              "seeds": seeds})
    return best


def ablation_tables(results: list[RunResult], published: dict | None = None) -> list[dict]:
    """The paper tables the results fill (each result's ``method_facts.row.paper_tables``, written when it ran
    from the methods' ``Method.paper_tables``: no method imported here): [{key, title, dataset, rows: [{paper:
    bool, name, metrics, mean_n, run_id}]}], in declaration order, each paper row followed by our rows that
    match it. ``mean_n``: the mean of the run's per-user statistic (LASAR's latent steps), if it records one."""
    from bench.published import published as shipped

    published = shipped().model_dump() if published is None else published
    tables: dict[str, dict] = {}
    for r in results:
        for t in ((r.method_facts.get("row") or {}).get("paper_tables") or []):
            if r.spec.dataset != t["dataset"]:
                continue
            entry = tables.setdefault(t["table"], {**t, "ours": {}})
            if len(t["paper_rows"]) > len(entry["paper_rows"]):  # a table's rows are only appended: the longest
                entry.update({k: v for k, v in t.items() if k != "ours"})  # list (a newer result's) holds them all
            for i in t["matched"]:
                entry["ours"].setdefault(i, []).append(r)
    out = []
    for key, t in sorted(tables.items(), key=lambda kv: kv[1]["order"]):
        ref = published.get(key) or {}
        ref = ref.get(t["dataset"], ref)
        rows = []
        for i, paper_name in enumerate(t["paper_rows"]):
            got = ref.get(paper_name) if paper_name else None
            if isinstance(got, dict):
                rows.append({"paper": True, "name": paper_name, "metrics": {k: v for k, v in got.items()
                                                                              if k != "mean_N" and v is not None},
                             "mean_n": got.get("mean_N"), "run_id": None})
            elif isinstance(got, (int, float)):  # a figure's single value: its metric is in the key
                rows.append({"paper": True, "name": paper_name, "metrics": {"HR@10": got}, "mean_n": None,
                             "run_id": None})
            for r in t["ours"].get(i, []):
                stat = next(iter((r.evaluation.get("by_stat") or {}).values()), {})
                rows.append({"paper": False, "name": r.display_name, "metrics": dict(r.metrics),
                             "mean_n": stat.get("mean"), "run_id": r.run_id,
                             "counterpart": paper_name if got is not None else None})
        out.append({"key": key, "title": t["title"], "dataset": t["dataset"], "rows": rows})
    return out


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


def tuning_tables(trials: list[RunResult]) -> dict[str, list[dict]]:
    """``reasonrec tune`` trials (results scored on the validation split), per dataset and study (the
    label's part before " #"), best first: [{study, method, rows: [{name, run_id, metrics, settings}]}].
    ``settings``: the method settings that differ from the method's defaults (``method_facts.row.settings``,
    recorded when the trial ran), and the max history."""
    out: dict[str, dict[str, dict]] = {}
    for r in trials:
        study = r.display_name.split(" #")[0]
        row = r.method_facts.get("row") or {}
        settings = dict(row["settings"]) if "settings" in row else flatten(r.spec.method_config)
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
