"""The one file lock (``fcntl.flock``): run folders, tune studies and stage-cache entries use it.

``hold(path)`` takes an exclusive lock on ``path`` (created if missing) and returns the open file (closing
it, or the process ending, releases the lock); the file holds the holder's pid so a refusal can name it.
``wait=False`` raises :class:`Busy` at once when another process holds it; ``wait=True`` blocks until it is
free and reports the seconds waited on the returned :class:`Held`."""
from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path


class Busy(RuntimeError):
    """Another process holds the lock; ``holder`` is its pid as it wrote it ('?' when unknown)."""

    def __init__(self, path: Path, holder: str):
        super().__init__(f"{path} is locked by another process (pid {holder})")
        self.path, self.holder = path, holder


class Held:
    """An acquired lock: ``release()`` (or ``with``) frees it; ``waited`` is the seconds spent waiting."""

    def __init__(self, f, waited: float):
        self.f, self.waited = f, waited

    def release(self) -> None:
        if not self.f.closed:
            fcntl.flock(self.f, fcntl.LOCK_UN)
            self.f.close()

    close = release

    def __enter__(self) -> "Held":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def hold(path: str | Path, *, wait: bool = False) -> Held:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")
    t0 = time.perf_counter()
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        if not wait:
            f.seek(0)
            holder = f.read().strip() or "?"
            f.close()
            raise Busy(path, holder) from None
        fcntl.flock(f, fcntl.LOCK_EX)
    waited = time.perf_counter() - t0
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return Held(f, waited)
