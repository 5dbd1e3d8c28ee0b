"""The one file lock (bench.locks), used by run folders, tune studies and stage-cache entries."""
import os
import threading
import time

import pytest

from bench import locks


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
    first = locks.hold(tmp_path / "a" / ".lock")  # the folder is created
    with pytest.raises(locks.Busy) as err:
        locks.hold(tmp_path / "a" / ".lock")
    assert err.value.holder == str(os.getpid())
    first.release()
    with locks.hold(tmp_path / "a" / ".lock") as again:  # free once released
        assert again.waited < 1


def test_wait_blocks_until_released_and_reports_the_wait(tmp_path):
    first = locks.hold(tmp_path / ".lock")
    threading.Timer(0.3, first.release).start()
    t0 = time.perf_counter()
    with locks.hold(tmp_path / ".lock", wait=True) as second:
        assert time.perf_counter() - t0 >= 0.25 and second.waited >= 0.25


def test_the_run_tune_and_stage_locks_are_this_lock(tmp_path):
    from bench.generative.stages import StageCache
    from bench.rundir import RunInProgress
    from bench.rundir import lock as _lock
    from bench.specs import SpecError
    from bench.tune import _lock as tune_lock

    held = locks.hold(tmp_path / ".lock")
    with pytest.raises(RunInProgress, match=f"pid {os.getpid()}"):
        _lock(tmp_path)
    with pytest.raises(SpecError, match="another `reasonrec tune`"):
        tune_lock(tmp_path / ".lock")
    held.release()
    _lock(tmp_path).release()
    stage = StageCache("sft", {"a": 1}, root=tmp_path / "stages")
    held = locks.hold(stage.root / f"{stage.id}.lock")
    said = []
    threading.Timer(0.3, held.release).start()
    with stage.lock(said.append):  # waits for the holder, then holds it itself
        with pytest.raises(locks.Busy):
            locks.hold(stage.root / f"{stage.id}.lock")
    assert said and "waiting to reuse it" in said[0]
