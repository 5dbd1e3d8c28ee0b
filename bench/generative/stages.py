"""A trained stage (an SFT phase several leaderboard rows share) is trained once and reused.

The cache key is every input that determines the stage's weights: the data fingerprint, the
backbone, the prompt style, the stage's config (a method passes only the fields its SFT reads),
the recipe that builds its examples, and the seed. A hit never depends on a run id or on a name
given by hand: MiniOneRec SFT-only and SFT+RL (and later LASAR's Stage 1, if its inputs are the
same) find the same entry; any difference in those inputs misses and trains.

Layout: ``$REASONREC_CACHE/stages/<stage>-<hash>/`` holding the method's saved model, ``key.json``
(the inputs, readable) and ``facts.json`` (the training facts of the run that trained it, and
that run's id). Entries are published atomically (written to a temporary folder, then renamed),
so a crash never leaves half a checkpoint; a lock file serialises two processes that would train
the same entry (the second waits, then reuses).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from bench import locks
from bench.atomic import atomic_dir, atomic_write_text

STAGE_FORMAT = 1


def stage_root() -> Path:
    from bench.data import cache_root

    return cache_root() / "stages"


_WAITED = [0.0]  # seconds this process spent waiting for another process's stage (not training time)


def waited_seconds(reset: bool = False) -> float:
    """Seconds spent waiting on stage locks since the last reset (the runner leaves them out of a run's
    training time: the waiting row reuses the stage, whose own training seconds it counts)."""
    value = _WAITED[0]
    if reset:
        _WAITED[0] = 0.0
    return value


class StageCache:
    def __init__(self, stage: str, key: dict[str, Any], root: Path | None = None):
        self.key = {"stage": stage, "format": STAGE_FORMAT, **key}
        digest = hashlib.sha256(json.dumps(self.key, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.id = f"{stage}-{digest}"
        self.root = Path(root) if root is not None else stage_root()
        self.dir = self.root / self.id

    def exists(self) -> bool:
        return (self.dir / "facts.json").is_file()

    def facts(self) -> dict:
        return json.loads((self.dir / "facts.json").read_text())

    @contextlib.contextmanager
    def lock(self, log: Callable[[str], None] = print):
        """Exclusive while one process trains this entry; a second process waits here."""
        try:
            held = locks.hold(self.root / f"{self.id}.lock")
        except locks.Busy:
            log(f"stage {self.id}: another process is training it; waiting to reuse it")
            held = locks.hold(self.root / f"{self.id}.lock", wait=True)
            _WAITED[0] += held.waited
        with held:
            yield

    def publish(self, write: Callable[[Path], None], facts: dict) -> Path:
        """``write(folder)`` saves the model; then key and facts; then one atomic rename."""
        with atomic_dir(self.dir) as tmp:
            write(tmp)
            atomic_write_text(tmp / "key.json", json.dumps(self.key, indent=1, sort_keys=True, default=str))
            atomic_write_text(tmp / "facts.json", json.dumps(facts, indent=1, default=str))
        return self.dir


# ---------------------------------------------------------------- the one stage driver

def launch_token() -> str:
    """What every process of one multi-process launch shares and another launch does not (torchrun's run
    id, else the rendezvous address)."""
    import os

    return os.environ.get("TORCHELASTIC_RUN_ID") or f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"


def run_stage(stage: StageCache, facts_key: str, *, train: Callable[[], dict], load: Callable[[Path], None],
              save: Callable[[Path], None], run_id: str, log: Callable[[str], None] = print,
              poll_seconds: float = 0.5) -> tuple[dict, bool]:
    """Train ``stage`` once and reuse it everywhere: the one place a phase is cached. Returns the phase's
    facts (the trained run's, for a reused entry) and whether it was reused.

    One process: under the stage's lock (a second process training the same entry makes this one wait,
    then reuse it), load the entry if it exists, else ``train()`` and publish it (``save`` writes the
    model into the entry's folder). A multi-process launch (``torchrun``): the main process alone takes
    the lock, decides and publishes; when it trains it first writes a marker naming this launch, and
    the other processes, which wait on the file system (no collective, so no timeout while the main
    process waits for another run's entry), then train beside it (the training loop's collectives need
    every process) or load the entry once it exists."""
    from bench import distributed

    if distributed.world_size() == 1 or distributed.is_main():
        with stage.lock(log):
            if stage.exists():
                done = stage.facts()
                load(stage.dir)
                log(f"stage {stage.id} reused (trained by run {done.get('run_id')}, "
                    f"{(done[facts_key].get('seconds') or 0) / 60:.1f} min)")
                return done[facts_key], True
            marker = stage.root / f"{stage.id}.training"
            if distributed.world_size() > 1:
                atomic_write_text(marker, launch_token())
            try:
                facts = train()
                stage.publish(save, {"run_id": run_id, facts_key: facts})
            finally:
                marker.unlink(missing_ok=True)
            log(f"stage {stage.id} published")
            return facts, False
    import time

    marker, token = stage.root / f"{stage.id}.training", launch_token()
    while True:
        if stage.exists():
            done = stage.facts()
            load(stage.dir)
            return done[facts_key], True
        try:
            if marker.read_text() == token:
                return train(), False
        except FileNotFoundError:
            pass
        time.sleep(poll_seconds)
