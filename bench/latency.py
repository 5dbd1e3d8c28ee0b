"""``reasonrec bench latency``: ranking latency per sample of saved models (a run's ``model/`` or a stage
entry) in one process, on the same users, interleaved repeats, ratios to the first (the paper's Table 4)."""
from __future__ import annotations
import json
import time
from pathlib import Path
import numpy as np


def _saved_config(path: Path) -> dict:
    """The method config a saved model was trained with: the run's ``spec.json`` beside ``model/``, or
    a stage entry's ``key.json`` (its stage fields; the rest are defaults)."""
    for spec in (path.parent / "spec.json", path / "spec.json"):
        if spec.is_file():
            return json.loads(spec.read_text()).get("method_config", {})
    key = path / "key.json"
    if key.is_file():
        return json.loads(key.read_text()).get("config", {})
    raise FileNotFoundError(f"{path}: no spec.json beside it and no key.json in it (a run's model/ folder or a "
                            "stage entry is expected)")


def _lenient_config(cls, values: dict, log=print):
    """The method's config from saved values; fields an older version wrote that no longer validate
    (renamed options) fall back to their defaults, named in the log (inference reads few fields)."""
    from pydantic import ValidationError

    values = dict(values)
    while True:
        try:
            return cls.Config(**values)
        except ValidationError as e:
            bad = {str(err["loc"][0]) for err in e.errors() if err["loc"]} & set(values)
            if not bad:
                raise
            log(f"{cls.info.name}: saved config field(s) {sorted(bad)} do not validate now; using the defaults")
            for k in bad:
                values.pop(k)


def load_saved(spec: str, data, log=print):
    """A saved model, loaded: ``spec`` is ``METHOD=FOLDER`` (a run's ``model/`` or a stage entry)."""
    from bench.registry import get_method

    name, sep, folder = spec.partition("=")
    if not sep:
        raise ValueError(f"--model {spec!r}: expected METHOD=FOLDER")
    cls, path = get_method(name), Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"--model {spec!r}: folder not found: {path}")
    m = cls(_lenient_config(cls, _saved_config(path), log))
    m.load(path, data)
    return m


def model_name(folder: str | Path) -> str:
    """The run id of a run's ``model/`` folder, or a stage entry's name."""
    path = Path(folder)
    return path.parent.name if path.name == "model" else path.name


def is_latency_report(obj) -> bool:
    """A ``reasonrec bench latency`` JSON report (other ``bench`` reports have other keys)."""
    return (isinstance(obj, dict) and isinstance(obj.get("setup"), dict) and "models" in obj["setup"]
            and "dataset" in obj["setup"] and "ratio_to_first" in obj)


def report_row(spec: str, method) -> dict:
    """What the site shows of one timed model beside its numbers: which run (or stage entry) it is and the
    paper's Table-4 row it compares with (:meth:`bench.method.Method.paper_latency_row`)."""
    name, _, folder = spec.partition("=")
    return {"label": f"{name}:{Path(folder)}", "method": name, "model": model_name(folder),
            "paper_row": method.paper_latency_row()}


def upgrade_latency_reports(folder: str | Path, log=print) -> int:
    """Give every latency report in ``folder/bench/`` written before reports carried ``rows`` its rows (the
    timed runs' configs read from the result files under ``folder``; a stage entry: the method's defaults).
    No number changes; returns how many files changed."""
    from bench.atomic import atomic_write_json
    from bench.registry import get_method

    folder, changed = Path(folder), 0
    for path in sorted(folder.glob("bench/*.json")):
        obj = json.loads(path.read_text())
        if not is_latency_report(obj) or "rows" in obj:
            continue
        rows = []
        for spec in obj["setup"]["models"]:
            name, _, where = spec.partition("=")
            cls = get_method(name)
            result = next(iter(sorted(folder.glob(f"*/{model_name(where)}/result.json"))), None)
            saved = json.loads(result.read_text())["spec"].get("method_config") or {} if result else {}
            rows.append(report_row(spec, cls(_lenient_config(cls, saved, log))))
        obj["rows"] = rows
        atomic_write_json(path, obj)
        changed += 1
    log(f"{changed} latency report(s) under {folder / 'bench'} given their rows")
    return changed


def bench_latency(models: list[str], *, dataset: str, users: int = 1000, batch_size: int = 256,
                  beam_width: int = 50, k: int = 20, repeats: int = 3, threads: int | None = None,
                  out: str | None = None, log=print) -> dict:
    """Per-sample ranking latency of saved models (``METHOD=FOLDER``: a run's ``model/`` or a stage
    entry), in one process on the same test users, batches and beam width; repeats interleave the
    models (A B A B ...) and the median and the minimum (best of the repeats) are reported, with each
    model's ratios to the first."""
    import torch

    from bench.data import prepare
    from bench.metrics import fixed_subset

    if threads:
        torch.set_num_threads(threads)
    data = prepare(dataset, progress=False, log=lambda *_: None)
    test = data.split("test")
    idx = fixed_subset(len(test), users)
    hist = [test.histories[i] for i in idx]
    batches = [hist[s:s + batch_size] for s in range(0, len(hist), batch_size)]
    loaded, rows = [], []
    for spec in models:
        m = load_saved(spec, data, log)
        name, _, folder = spec.partition("=")
        cls, path = type(m), Path(folder)
        options = {"beam_width": beam_width} if "beam_width" in cls.inference_options else {}
        m.recommend(batches[0][:8], k=k, **options)  # warm-up
        loaded.append((f"{name}:{path}", m, options))
        rows.append(report_row(spec, m))
    times: dict[str, list[float]] = {label: [] for label, _, _ in loaded}
    stats: dict[str, dict] = {}
    for _ in range(repeats):
        for label, m, options in loaded:
            t0 = time.perf_counter()
            per_user: dict[str, list] = {}  # whatever the method reports per user (LASAR: latent_steps)
            for b in batches:
                rec = m.recommend(b, k=k, **options)
                for name, values in (rec.stats or {}).items():
                    per_user.setdefault(name, []).extend(np.asarray(values).tolist())
            times[label].append((time.perf_counter() - t0) / len(hist))
            if per_user:
                stats[label] = {f"mean_{name}": round(float(np.mean(v)), 4) for name, v in per_user.items() if v}
    per_sample = {label: float(np.median(v)) for label, v in times.items()}
    first = next(iter(per_sample.values()))
    res = {"setup": {"dataset": dataset, "users": len(hist), "batch_size": batch_size, "beam_width": beam_width,
                     "k": k, "repeats": repeats, "torch_threads": torch.get_num_threads(), "models": models},
           "seconds_per_sample": per_sample, "all_repeats": times,
           "ratio_to_first": {label: v / first for label, v in per_sample.items()},
           # best of the repeats: the least disturbed measurement on a shared machine (timeit's rule)
           "min_seconds_per_sample": {label: min(v) for label, v in times.items()},
           "ratio_to_first_min": {label: min(v) / min(next(iter(times.values()))) for label, v in times.items()},
           "stats": stats, "rows": rows}
    log(json.dumps(res, indent=2))
    if out:
        from bench.atomic import atomic_write_json

        atomic_write_json(Path(out), res)
    return res
