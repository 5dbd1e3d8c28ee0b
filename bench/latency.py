"""``reasonrec bench latency``: ranking latency per sample of saved models (a run's ``model/`` or a stage
entry) in one process, on the same users, interleaved repeats, ratios to the first (the paper's Table 4);
the report's format, its upgrade, and how the site reads the reports (:func:`latency_reports`)."""
from __future__ import annotations
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING
import numpy as np

if TYPE_CHECKING:
    from bench.results import RunResult


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


def trained_as(folder: str | Path) -> str | None:
    """What a run's ``model/`` folder was trained as (:meth:`bench.results.RunResult.trained_as`), read from
    the ``result.json`` beside it; None for a stage entry, a run without a result or a folder not here."""
    from bench.results import RunResult

    result = Path(folder).parent / "result.json"
    if Path(folder).name != "model" or not result.is_file():
        return None
    return RunResult.from_disk(result).trained_as()


def report_row(spec: str, method) -> dict:
    """What the site shows of one timed model beside its numbers: which run (or stage entry) it is, what it
    was trained as (so a model re-made from a committed row's spec for timing is shown as that row) and the
    paper's Table-4 row it compares with (:meth:`bench.method.Method.paper_latency_row`)."""
    name, _, folder = spec.partition("=")
    row = {"label": f"{name}:{Path(folder)}", "method": name, "model": model_name(folder),
           "paper_row": method.paper_latency_row()}
    if (made := trained_as(folder)) is not None:
        row["trained_as"] = made
    return row


def upgrade_latency_reports(folder: str | Path, log=print) -> int:
    """Give every latency report in ``folder/bench/`` written before reports carried ``rows`` its rows (the
    timed runs' configs read from the result files under ``folder``; a stage entry: the method's defaults),
    and each row without ``trained_as`` whose timed run folder is still on this machine its ``trained_as``.
    No number changes; returns how many files changed."""
    from bench.atomic import atomic_write_json
    from bench.registry import get_method

    folder, changed = Path(folder), 0
    for path in sorted(folder.glob("bench/*.json")):
        obj = json.loads(path.read_text())
        if not is_latency_report(obj):
            continue
        if "rows" in obj:  # rows written before they said what a model was trained as: from its run folder
            added = 0
            for row, spec in zip(obj["rows"], obj["setup"]["models"]):
                if "trained_as" not in row and (made := trained_as(spec.partition("=")[2])):
                    row["trained_as"], added = made, added + 1
            if added:
                atomic_write_json(path, obj)
                changed += 1
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
    log(f"{changed} latency report(s) under {folder / 'bench'} given their rows or what a timed model was "
        "trained as")
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


def latency_reports(runs_dirs: list[Path], by_id: dict[str, RunResult],
                    log=lambda *_: None) -> dict[str, list[dict]]:
    """Table 4 measured side by side: the ``reasonrec bench latency`` reports in each folder's ``bench/`` (every
    model in one process, on the same users, interleaved repeats), per dataset. Each timed model: the row it
    is (a result under the folders, else its run id or stage entry), median and best ms per sample, ratios to
    the report's first model, and the paper's Table-4 row it compares with, the paper's ms and the paper's
    ratio between those rows (:mod:`bench.published`). A timed run that is not under the folders but was
    trained as one that is (``trained_as``: the row's spec re-made for timing) is shown as that row, with
    the timed run's id beside its name."""
    from bench.published import published
    from bench.results import by_trained_as

    paper_all, out = published().table4_latency, {}
    made_as: dict[str, RunResult] = {}  # built when a report needs it
    for d in runs_dirs:
        # the Table-4 reports (table4-<dataset>.json) first, then any other latency report
        for path in sorted(Path(d).glob("bench/*.json"), key=lambda f: (not f.name.startswith("table4-"), f.name)):
            obj = json.loads(path.read_text())
            if not is_latency_report(obj):
                continue
            if not obj.get("rows"):
                log(f"{path}: a latency report without rows, not shown (`reasonrec upgrade {d}` adds them)")
                continue
            setup, paper = obj["setup"], paper_all.get(obj["setup"]["dataset"], {})
            base = paper.get(obj["rows"][0]["paper_row"])
            rows = []
            for row in obj["rows"]:
                label, r, pp = row["label"], by_id.get(row["model"]), paper.get(row["paper_row"])
                remade = None
                if r is None and row.get("trained_as"):  # a committed row's spec, re-made for timing
                    made_as = made_as or by_trained_as(by_id.values())
                    r = made_as.get(row["trained_as"])
                    remade = row["model"] if r else None
                best = obj.get("min_seconds_per_sample", {}).get(label)
                name = r.display_name if r else f"{row['method']} ({row['model']})"
                if remade:
                    name = f"{name}, seed {r.spec.seed} (its spec re-made for timing: {remade})"
                rows.append({"name": name, "remade": remade,
                             "run_id": r.run_id if r else None, "method": row["method"],
                             "ms": obj["seconds_per_sample"][label] * 1000,
                             "ms_best": best * 1000 if best is not None else None,
                             "ratio": obj["ratio_to_first"][label],
                             "ratio_best": obj.get("ratio_to_first_min", {}).get(label),
                             "mean_steps": obj.get("stats", {}).get(label, {}).get("mean_latent_steps"),
                             "paper_row": row["paper_row"] if pp else "",
                             "paper_ms": pp.seconds_per_sample * 1000 if pp else None,
                             "paper_ratio": pp.seconds_per_sample / base.seconds_per_sample if pp and base else None})
            out.setdefault(setup["dataset"], []).append(
                {"file": f"{Path(d).name}/bench/{path.name}", "users": setup["users"], "repeats": setup["repeats"],
                 "batch_size": setup["batch_size"], "beam_width": setup["beam_width"],
                 "threads": setup.get("torch_threads"), "rows": rows})
    return out
