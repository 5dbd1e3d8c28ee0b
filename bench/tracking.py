"""Experiment trackers (TensorBoard, Weights & Biases, Trackio, MLflow, ...) through accelerate's tracker classes:
``--set tracking.log_with=tensorboard``. Every training phase's per-epoch record (train loss, its named loss
components, validation metrics, tokens/s, seconds) is logged under ``<phase>/<key>`` at the phase's epoch, from the
one place each loop records an epoch (:class:`bench.epochs.EpochBook` callers); the run's resolved spec is the
tracker's configuration. Tracking changes no number: it is not part of the run id."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.overrides import flatten


class Tracker:
    """One run's tracker: ``log_epoch(phase, record)`` per finished epoch of any phase, ``close()`` at the end.
    ``log_with``: an accelerate tracker name (``accelerate.tracking.LOGGER_TYPE_TO_CLASS``); the ones that write
    files (TensorBoard) write under ``folder/<run name>``."""

    def __init__(self, log_with: str, folder: Path, run_name: str, config: dict[str, Any]):
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS

        from bench import distributed

        distributed.state()  # accelerate's trackers act on the main process only: its process state must exist
        cls = LOGGER_TYPE_TO_CLASS[log_with]
        kwargs = {"logging_dir": str(folder)} if cls.requires_logging_directory else {}
        self.tracker = cls(run_name, **kwargs)
        self.tracker.start()
        # trackers take flat scalars and strings as configuration (TensorBoard's hparams)
        self.tracker.store_init_configuration({k: v if isinstance(v, (bool, int, float, str)) else str(v)
                                               for k, v in flatten(config, sep="/").items()})
        self.name, self.folder = log_with, Path(folder)

    def log_epoch(self, phase: str, record: dict) -> None:
        values = {f"{phase}/{k}": float(v) for k, v in flatten(record, sep="/").items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch"}
        if values:
            self.tracker.log(values, step=int(record.get("epoch", 0)))

    def close(self) -> None:
        self.tracker.finish()

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *_) -> None:
        self.close()
