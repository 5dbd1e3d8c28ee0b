"""A run folder: what it holds and how a run claims it. ``spec.json`` (the resolved spec, written first),
``run.log`` (:func:`logger`), ``attempts.json`` (training time of every attempt, :class:`AttemptClock`),
``data.json`` (the data fingerprint it trains on, :func:`claim_for_data`), ``checkpoints/``, ``model/`` and
``trained.json`` (:func:`finished_training`), ``decode/`` (the ranked batches of an unfinished test decode,
:class:`DecodeLog`), ``.lock`` (:func:`lock`) and, last, ``result.json`` (:func:`is_complete`). Used by
:mod:`bench.runner` and :mod:`bench.reevaluate`."""
from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import shutil
import time
import zipfile
from pathlib import Path
from typing import Callable

from bench import locks
from bench.atomic import atomic_write_bytes, atomic_write_json
from bench.data import SIDData
from bench.results import RunResult
from bench.specs import RunSpec, SpecError


def logger(path: Path, echo: bool) -> Callable[[str], None]:
    """A run's log: timestamped lines appended to ``run.log`` (and printed when ``echo``)."""
    def log(msg: str) -> None:
        line = f"[{_dt.datetime.now().strftime('%H:%M:%S')}] {msg}"
        with open(path, "a") as f:
            f.write(line + "\n")
        if echo:
            print(line, flush=True)

    return log


def is_complete(run_dir: Path) -> bool:
    return (run_dir / "result.json").is_file()


class RunInProgress(RuntimeError):
    """Another process holds this run's lock."""


def lock(run_dir: Path):
    """An exclusive, non-blocking lock on ``run_dir/.lock`` (released when the process exits)."""
    try:
        return locks.hold(run_dir / ".lock")
    except locks.Busy as e:
        raise RunInProgress(f"run {run_dir.name} is in progress in another process (pid {e.holder}); "
                            f"wait for it or stop it") from None


def check_same_data(done: RunResult, spec: RunSpec, dataset_path: str | None, data: SIDData | None) -> None:
    """A complete run is returned only for the data it was made on: the run id hashes the spec, not the
    files, so a changed file or another copy (``--dataset-path``) must not get the old result back."""
    from bench.data import data_fingerprint

    made_on = done.data.get("fingerprint")
    if made_on is None:
        return
    now = data.fingerprint if data is not None else data_fingerprint(spec.dataset_card or spec.dataset, spec.data,
                                                                       path=dataset_path)
    if now != made_on:
        raise SpecError(f"run {done.run_id} ({done.folder}) was made on data {made_on}; dataset '{spec.dataset}' "
                        f"{'at ' + dataset_path + ' ' if dataset_path else ''}now gives {now} (its files, or the "
                        f"data code, changed): its result does not apply. Use another --out, or remove that run "
                        f"folder to run it again")


def relabel(run_dir: Path, done: RunResult, label: str, echo: bool) -> None:
    """Give a finished run another display name (``--set label=...``): the label is not part of the run id and
    changes no number, so ``result.json`` and ``spec.json`` take it as they are."""
    for name in ("result.json", "spec.json"):
        path = run_dir / name
        if path.is_file():
            obj = json.loads(path.read_text())
            (obj["spec"] if name == "result.json" else obj)["label"] = label
            row = (obj.get("method_facts") or {}).get("row") if name == "result.json" else None
            if row is not None:  # its reproduce command names the label
                from bench.rowfacts import reproduce_command

                row["command"] = reproduce_command(RunSpec(**obj["spec"]), obj["method_facts"].get("config") or {})
            atomic_write_json(path, obj)
    if echo:
        print(f"{done.run_id}: label {done.spec.label!r} -> {label!r} (finished run; nothing recomputed)", flush=True)


class AttemptClock:
    """Training time over every attempt of a run (a killed attempt included): ``attempts.json`` in the
    run folder is rewritten every ``every`` seconds while ``fit`` runs, so a resumed run reports the
    total training time and the number of attempts."""

    def __init__(self, run_dir: Path, every: float = 10.0):
        import threading

        self.path, self.every = run_dir / "attempts.json", every
        self.history: list[dict] = []
        if self.path.is_file():
            try:
                self.history = json.loads(self.path.read_text())
            except (ValueError, OSError):
                self.history = []
        self.current = {"started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                        "fit_seconds": 0.0, "finished": False}
        self.history.append(self.current)
        self._t0 = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _write(self) -> None:
        self.current["fit_seconds"] = round(time.perf_counter() - self._t0, 1)
        atomic_write_json(self.path, self.history)

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            self._write()

    def __enter__(self):
        self._write()
        self._thread.start()
        return self

    def __exit__(self, exc_type, *_):
        self._stop.set()
        self._thread.join()
        self.current["finished"] = exc_type is None
        self._write()

    @property
    def previous_seconds(self) -> float:
        return float(sum(a.get("fit_seconds", 0.0) for a in self.history[:-1]))

    @property
    def attempts(self) -> int:
        return len(self.history)


TRAINED_FILE = "trained.json"


DATA_FILE = "data.json"


def claim_for_data(run_dir: Path, data: SIDData, log) -> None:
    """A run folder records the data fingerprint it trains on (``data.json``); an unfinished run found with
    another one (its files changed, or another ``--dataset-path``) starts over: its checkpoints were made on
    other data and are removed, never resumed."""
    path = run_dir / DATA_FILE
    if path.is_file():
        try:
            was = json.loads(path.read_text()).get("fingerprint")
        except ValueError:
            was = None
        if was == data.fingerprint:
            return
        stale = [p for p in (run_dir / "checkpoints", run_dir / "model", run_dir / TRAINED_FILE) if p.exists()]
        if stale:
            log(f"this run folder was started on data {was}; the prepared data is {data.fingerprint}: removing "
                f"{', '.join(p.name for p in stale)} (made on the other data) and training from the start")
        for p in stale:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    atomic_write_json(path, {"fingerprint": data.fingerprint, "dataset": data.name})


def finished_training(run_dir: Path, data: SIDData, log) -> dict | None:
    """The saved training facts of a run whose training finished and whose model was saved, or None
    (train). A record written for other data is ignored (with a log line): the run trains again."""
    path = run_dir / TRAINED_FILE
    if not (path.is_file() and (run_dir / "model").is_dir()):
        return None
    try:
        trained = json.loads(path.read_text())
        facts, seconds = dict(trained["facts"]), float(trained["seconds"])
    except (ValueError, KeyError, TypeError) as e:
        log(f"ignoring {path} ({type(e).__name__}: {e}): training again")
        return None
    if trained.get("data_fingerprint") != data.fingerprint:
        log(f"{path} was written for data {trained.get('data_fingerprint')}, the prepared data is {data.fingerprint}:"
            " training again")
        return None
    return {"facts": facts, "seconds": seconds}


DECODE_DIR = "decode"


class DecodeLog:
    """The ranked batches of a test decode, one file per batch in ``decode/``, so a run stopped while ranking
    (35,598 Sports users take 14 to 53 minutes on the CPU) resumes at its first unranked batch instead of ranking
    every user again. ``key`` names what the batches were ranked with (the run, its saved model, the users, the
    batch size, k, the inference options): a folder written under another key is emptied first, so a batch is
    only reused for the same model and users. The runner removes the folder once ``result.json`` is written."""

    def __init__(self, folder: Path, key: dict):
        self.folder = Path(folder)
        self.token = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
        key_file = self.folder / "key.json"
        if self.folder.is_dir():
            try:
                was = json.loads(key_file.read_text()).get("token")
            except (OSError, ValueError, AttributeError):
                was = None
            if was != self.token:
                shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        if not key_file.is_file():
            atomic_write_json(key_file, {"token": self.token, "key": key})

    def _path(self, i: int) -> Path:
        return self.folder / f"batch-{i:06d}.npz"

    def load(self, n_batches: int) -> list[dict]:
        """The batches ranked so far, in order, up to the first missing or unreadable one; each a dict of
        ``items`` (rows x k), ``stats`` (per-user arrays by name) and ``seconds`` (its timed ranking)."""
        import numpy as np

        done = []
        for i in range(n_batches):
            path = self._path(i)
            if not path.is_file():
                break
            try:
                with np.load(path) as z:
                    done.append({"items": z["items"], "seconds": float(z["seconds"]),
                                 "stats": {k[len("stat_"):]: z[k] for k in z.files if k.startswith("stat_")}})
            except (OSError, ValueError, KeyError, zipfile.BadZipFile):
                break
        return done

    def save(self, i: int, items, stats: dict, seconds: float) -> None:
        import numpy as np

        buf = io.BytesIO()
        np.savez(buf, items=np.asarray(items), seconds=np.float64(seconds),
                 **{f"stat_{k}": np.asarray(v) for k, v in stats.items()})
        atomic_write_bytes(self._path(i), buf.getvalue())

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
