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
