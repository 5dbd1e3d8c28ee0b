"""``reasonrec demo``: every registered method with its small demo budget on the embedded
default dataset (MovieLens-100k from the recbole wheel), then the leaderboard."""
from __future__ import annotations

from pathlib import Path

from bench.leaderboard import build_site
from bench.registry import REGISTRY
from bench.runner import run_suite
from bench.specs import SuiteSpec

DEFAULT_DATASET = "ml-100k"


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def demo_suite(methods: list[str] | None = None, dataset: str = DEFAULT_DATASET) -> SuiteSpec:
    names = methods or REGISTRY.names()
    # longest first, so that parallel workers finish together; a method that reuses another's stage
    # (GREAM: LASAR's Stage 1) declares a lower priority and starts once that stage is likely done; a row can
    # override its method's priority (``demo_row_priority``)
    ranked = []
    for n in names:
        cls = REGISTRY.get(n)
        rows = cls.demo_rows or {None: {}}
        ranked += [(cls.demo_row_priority.get(label, cls.demo_priority),
                    SuiteSpec.Entry(method=n, label=label, method_config=_merge(cls.demo_config, over)))
                   for label, over in rows.items()]
    entries = [e for _, e in sorted(ranked, key=lambda pe: -pe[0])]  # stable: registry order within a priority
    return SuiteSpec(methods=entries, datasets=[dataset], seeds=[0])


def demo(out: Path, methods: list[str] | None = None, progress: bool = True, jobs: int = 2) -> Path:
    suite = demo_suite(methods)
    run_suite(suite, out / "runs", progress=progress, jobs=jobs)
    return build_site([out / "runs"], out / "site", title="ReasonRec Bench demo (ml-100k, small budgets)")
