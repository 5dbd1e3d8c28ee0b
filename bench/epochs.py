"""The bookkeeping every epoch loop shares (the generative loop, ``bench.generative.training.train``, and
the RecBole route, ``bench.recbole_route``): the best validation score and its epoch, patience, the stop
reason (early stopping, step cap, time budget), the per-epoch history, and a state that resumes exactly,
with one set of keys. The loops own what differs (how an epoch trains, what a checkpoint holds)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

#: why training ended; "epochs" = every epoch ran
STOP_REASONS = ("epochs", "early_stopping", "max_steps", "time_budget")


@dataclass
class EpochBook:
    epochs: int
    patience: int
    max_minutes: float | None = None
    max_steps: int | None = None
    epoch: int = -1                  # the last finished epoch
    step: int = 0                    # optimizer steps so far (loops that count them)
    best: float = -math.inf
    best_epoch: int | None = None
    bad: int = 0                     # epochs since the best
    history: list = field(default_factory=list)
    stopped: str = "epochs"
    started: float = field(default_factory=time.time)  # this attempt's start
    spent_before: float = 0.0        # seconds earlier attempts trained, up to their last finished epoch
    spent: float = 0.0               # seconds trained up to the last finished epoch, every attempt counted

    def elapsed(self) -> float:
        """Seconds of training so far, every attempt counted (the time budget's clock: a resumed run stops
        where an uninterrupted one would, give or take the epoch a stop interrupted, which is redone)."""
        return self.spent_before + time.time() - self.started

    def remaining(self) -> range:
        """The epochs still to run (none once training has ended)."""
        return range(self.epoch + 1, self.epochs) if self.stopped == "epochs" else range(0)

    def end_epoch(self, epoch: int, score: float, record: dict) -> bool:
        """Record a finished epoch (``record`` goes into the history as is) and decide whether training
        stops; returns whether ``score`` is a new best (the caller saves the best weights then)."""
        self.history.append(record)
        self.spent = self.elapsed()
        improved = score > self.best
        if improved:
            self.best, self.best_epoch, self.bad = score, epoch, 0
        else:
            self.bad += 1
        if self.bad >= self.patience:
            self.stopped = "early_stopping"
        elif self.max_steps and self.step >= self.max_steps:
            self.stopped = "max_steps"
        elif self.max_minutes and self.spent / 60 > self.max_minutes:
            self.stopped = "time_budget"
        self.epoch = epoch
        return improved

    @property
    def done(self) -> bool:
        return self.stopped != "epochs"

    def state(self) -> dict:
        """What a checkpoint keeps to resume exactly."""
        return {"epoch": self.epoch, "step": self.step, "best": self.best, "best_epoch": self.best_epoch,
                "bad": self.bad, "history": self.history, "stopped": self.stopped,
                "seconds_spent": round(self.spent, 1)}

    def restore(self, state: dict) -> None:
        """Resume from :meth:`state` (the time budget goes on from the seconds it records); also reads the
        two loops' earlier keys (the generative loop's ``done``, the RecBole route's ``stopped``; a missing
        best epoch comes from the history)."""
        self.epoch, self.step = state["epoch"], state.get("step", 0)
        self.best, self.bad, self.history = state["best"], state["bad"], state["history"]
        self.stopped = state.get("stopped") or state.get("done") or "epochs"
        self.best_epoch = state.get("best_epoch")
        self.spent_before = self.spent = float(state.get("seconds_spent", 0.0))  # older states: 0 (per attempt)
        if self.best_epoch is None and self.history:
            self.best_epoch = max(self.history, key=lambda r: r["valid_score"])["epoch"]

    def facts(self) -> dict:
        """The training facts every loop reports."""
        return {"epochs_run": len(self.history), "best_epoch": self.best_epoch, "best_valid": self.best,
                "stopped_by": self.stopped, "history": self.history}
