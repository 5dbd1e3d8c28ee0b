"""Multi-process launches (``torchrun``, ``accelerate launch --multi_gpu``): one process per device.

Every process prepares the data (the main one first, the others then read its cache), builds the
method and trains (the shared training loop is DDP through accelerate); the main process alone
holds the run lock, writes the run directory and evaluates, while the others wait for its
``result.json``. A single process (the default) takes none of these paths.
"""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


@contextlib.contextmanager
def main_process_first():
    """The main process runs the block first (e.g. builds a cache); the others run it after."""
    if world_size() == 1:
        yield
        return
    with state().main_process_first():
        yield


def state():
    """accelerate's process state; on a machine without CUDA it must be created with ``cpu=True``
    (else a torchrun launch is taken for one process), and every later Accelerator reuses it. The device is
    :func:`bench.device.torch_device`'s (``REASONREC_DEVICE``), as for the model and the training loop."""
    from accelerate import PartialState

    from bench.device import torch_device

    return PartialState(cpu=torch_device().type == "cpu")


def wait_for_result(run_dir: Path, since: float, poll_seconds: float = 2.0) -> Path:
    """Non-main processes: wait (without a collective, so no timeout) for the main process to
    finish the run: its ``result.json``, or an ``error.txt`` written after ``since``."""
    result, error = run_dir / "result.json", run_dir / "error.txt"
    while True:
        if result.is_file():
            return result
        if error.is_file() and error.stat().st_mtime >= since:
            raise RuntimeError(f"the main process failed: {error.read_text().strip()}")
        time.sleep(poll_seconds)
