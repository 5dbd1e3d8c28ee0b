"""Our results beside a published table: ``python -m bench.compare --runs leaderboard/results
--paper ../shared/paper/published.json`` prints a Markdown table per dataset (Table 1 columns,
the paper's rows in italics). The paper file is read by path; nothing of it is copied."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.leaderboard import TABLE1_COLUMNS, SHORT
from bench.results import load_results

# our method names -> the paper's row names
PAPER_NAMES = {"sasrec": "SASRec", "gru4rec": "GRU4Rec", "minionerec": "MiniOneRec", "lcrec": "LC-Rec",
               "rearec": "ReaRec", "gream": "Explicit CoT (GREAM)", "lasar": "LASAR"}


def compare(runs: Path, paper: Path | None) -> str:
    results = load_results(runs)
    published = json.loads(paper.read_text())["table1_main"] if paper else {}
    lines = []
    for ds in sorted({r.spec.dataset for r in results}):
        lines += [f"### {ds}", "", "| method | users | " + " | ".join(SHORT[c] for c in TABLE1_COLUMNS) + " | train | ms/sample |",
                  "|---|---|" + "---|" * len(TABLE1_COLUMNS) + "---|---|"]
        for r in sorted((r for r in results if r.spec.dataset == ds), key=lambda r: -r.metrics["NDCG@10"]):
            cells = " | ".join(f"{r.metrics[c]:.4f}" for c in TABLE1_COLUMNS)
            lines.append(f"| {r.display_name} (seed {r.spec.seed}) | {r.latency.n_samples:,} | {cells} | "
                         f"{r.training.seconds / 60:.1f} min | {r.latency.seconds_per_sample * 1000:.2f} |")
            ref = published.get(ds, {}).get(PAPER_NAMES.get(r.spec.method, ""))
            if ref:
                lines.append(f"| *paper: {PAPER_NAMES[r.spec.method]}* | | "
                             + " | ".join(f"*{ref[c]:.4f}*" for c in TABLE1_COLUMNS) + " | | |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", default="leaderboard/results")
    p.add_argument("--paper", help="published.json with a table1_main section")
    a = p.parse_args(argv)
    print(compare(Path(a.runs), Path(a.paper) if a.paper else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
