"""Our results beside the paper's: ``python -m bench.compare --runs leaderboard/results`` prints a
Markdown table per dataset (Table 1 columns, the paper's rows in italics); ``--tables`` prints the
ablation tables the methods declare (``Method.paper_tables``). The paper's figures come from the
shipped typed table (:mod:`bench.published`); ``--paper FILE`` reads another file of that shape."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.leaderboard import ablation_tables, metric_columns
from bench.metrics import primary_metric, short_name
from bench.results import load_results

from bench.published import PAPER_NAMES, published as shipped


def _paper(paper: Path | None) -> dict:
    return json.loads(Path(paper).read_text()) if paper else shipped().model_dump()


def compare(runs: Path, paper: Path | None) -> str:
    results = [r for r in load_results(runs) if r.evaluation["split"] == "test"]  # no tuning trials
    published = _paper(paper).get("table1_main", {})
    lines = []
    for ds in sorted({r.spec.dataset for r in results}):
        runs = [r for r in results if r.spec.dataset == ds]
        cols = metric_columns(runs)  # the metric schema: any eval.ks works
        key = primary_metric([c for c in cols if all(c in r.metrics for r in runs)]) or primary_metric(cols)
        lines += [f"### {ds}", "", "| method | users | " + " | ".join(short_name(c) for c in cols) + " | train | ms/sample |",
                  "|---|---|" + "---|" * len(cols) + "---|---|"]
        for r in sorted(runs, key=lambda r: -r.metrics.get(key, -1.0)):
            cells = " | ".join(f"{r.metrics[c]:.4f}" if c in r.metrics else "-" for c in cols)
            lines.append(f"| {r.display_name} (seed {r.spec.seed}) | {r.latency.n_samples:,} | {cells} | "
                         f"{r.training.seconds / 60:.1f} min | {r.latency.seconds_per_sample * 1000:.2f} |")
            ref = published.get(ds, {}).get(PAPER_NAMES.get(r.spec.method, ""))
            if ref:
                lines.append(f"| *paper: {PAPER_NAMES[r.spec.method]}* | | "
                             + " | ".join(f"*{ref[c]:.4f}*" if c in ref else "-" for c in cols) + " | | |")
        lines.append("")
    return "\n".join(lines)


def paper_tables(runs: Path, paper: Path | None, cols=("NDCG@5", "NDCG@10", "HR@5", "HR@10")) -> str:
    """The paper's ablation tables (``Method.paper_tables``, :func:`bench.leaderboard.ablation_tables`)
    filled with the matching results, each paper row (italics) above ours; rows with no paper
    counterpart are ours only."""
    lines = []
    for t in ablation_tables([r for r in load_results(runs) if r.evaluation["split"] == "test"],
                             _paper(paper)):
        lines += [f"### {t['title']}", "", "| row | run | " + " | ".join(short_name(c) for c in cols)
                  + " | mean N |", "|---|---|" + "---|" * len(cols) + "---|"]
        for row in t["rows"]:
            m = row["metrics"]
            if row["paper"]:
                lines.append(f"| *paper: {row['name']}* | | " + " | ".join(
                    f"*{m[c]:.4f}*" if c in m else "" for c in cols) + f" | {row['mean_n'] or ''} |")
            else:
                alone = "" if row["counterpart"] else " (no paper row)"
                lines.append(f"| {row['name']}{alone} | {row['run_id']} | " + " | ".join(
                    f"{m[c]:.4f}" if c in m else "-" for c in cols) + f" | {row['mean_n'] or '-'} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", default="leaderboard/results")
    p.add_argument("--paper", help="another published-figures file (default: the shipped bench/published_lasar.json)")
    p.add_argument("--tables", action="store_true",
                   help="the paper's ablation tables (each method's paper_tables) instead of Table 1")
    a = p.parse_args(argv)
    fn = paper_tables if a.tables else compare
    print(fn(Path(a.runs), Path(a.paper) if a.paper else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
