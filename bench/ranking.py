"""Timed test ranking: every history ranked in batches (warm-up batches untimed), each ranked batch saved to the
run's decode log so a run stopped while ranking resumes at its first unranked batch (``bench.rundir.DecodeLog``)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from bench import rundir
from bench.method import Method
from bench.results import Latency, RunResult
from bench.specs import EvalSettings, RunSpec


def decode_log_for(spec: RunSpec, run_dir: Path, test, max_history: int, options: dict,
                source: tuple[Path, RunResult] | None) -> rundir.DecodeLog | None:
    """The ranked-batch log of this run's test decode, keyed by its saved model (``trained.json``, written once
    when training finished; a re-evaluation: the source run and weights), or None when no model was saved (a
    stopped run trains again, so nothing ranked before may be reused)."""
    if source is not None:
        model = f"{source[1].run_id}:{spec.eval.weights}"
    elif (run_dir / rundir.TRAINED_FILE).is_file() and (run_dir / "model").is_dir():
        model = (run_dir / rundir.TRAINED_FILE).read_text()
    else:
        return None
    import hashlib
    import json

    users = hashlib.sha256(json.dumps([list(map(int, h)) for h in test.histories]).encode()).hexdigest()
    key = {"run_id": spec.run_id(), "model": hashlib.sha256(model.encode()).hexdigest(), "histories": users,
           "n_users": len(test), "batch_size": spec.eval.batch_size,
           "k": max(spec.eval.ks) + (max_history if spec.eval.exclude_history else 0), "options": options}
    return rundir.DecodeLog(run_dir / rundir.DECODE_DIR, key)


def timed_recommend(method: Method, histories: list[list[int]], ev: EvalSettings, max_history: int,
                    progress: bool = True, *, decode_log: rundir.DecodeLog | None = None, **options):
    """Rank every history in batches of ``ev.batch_size`` (warm-up batches untimed). ``options`` are the
    method's declared inference options (e.g. ``beam_width``), passed to each ``recommend`` call.

    With a ``decode_log`` every ranked batch is saved as it finishes and the batches an earlier attempt ranked
    are reused, not ranked again (the latency is the sum of every batch's timed seconds, over the attempts).
    Returns the items (users x k), the latency, the per-user stats and, for a resumed decode, ``{"batches":
    reused, "of": total}`` (else None)."""
    k = max(ev.ks) + (max_history if ev.exclude_history else 0)
    bs = ev.batch_size
    batches = [histories[i:i + bs] for i in range(0, len(histories), bs)]
    done = decode_log.load(len(batches)) if decode_log is not None else []
    if len(done) < len(batches):
        for b in batches[: ev.warmup_batches]:  # warm-up: lazy init, allocator, caches; not timed
            method.recommend(b, k=k, **options)
    from tqdm.auto import tqdm

    outs, stats = [d["items"] for d in done], {}
    for d in done:
        for name, v in d["stats"].items():
            stats.setdefault(name, []).append(v)
    total = sum(d["seconds"] for d in done)
    for i in tqdm(range(len(done), len(batches)), desc="recommend", disable=not progress, leave=False,
                  initial=len(done), total=len(batches)):
        b = batches[i]
        t0 = time.perf_counter()
        rec = method.recommend(b, k=k, **options)
        items = np.asarray(rec.items)
        if items.shape[0] != len(b):
            raise RuntimeError(f"{method.info.name}.recommend returned {items.shape[0]} rows for {len(b)} histories")
        if items.shape[1] < k:
            items = np.pad(items, ((0, 0), (0, k - items.shape[1])), constant_values=-1)
        batch_stats = {name: np.asarray(v) for name, v in rec.stats.items()}
        seconds = time.perf_counter() - t0
        total += seconds
        outs.append(items[:, :k])
        for name, v in batch_stats.items():
            stats.setdefault(name, []).append(v)
        if decode_log is not None:
            decode_log.save(i, items[:, :k], batch_stats, seconds)
    n = len(histories)
    latency = Latency(seconds_per_sample=total / max(n, 1), total_seconds=round(total, 4), n_samples=n,
                      batch_size=bs, warmup_batches=min(ev.warmup_batches, len(batches)))
    items = np.concatenate(outs) if outs else np.zeros((0, k), dtype=np.int64)
    resumed = {"batches": len(done), "of": len(batches)} if done else None
    return items, latency, {name: np.concatenate(v) for name, v in stats.items()}, resumed
