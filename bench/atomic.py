"""The one way to write files: nothing half-written is ever visible under the final name.

- :func:`atomic_write_text` / :func:`atomic_write_json`: a temporary file in the same folder,
  fsync'd, then ``os.replace`` (atomic on POSIX).
- :func:`atomic_torch_save`: the same for ``torch.save``.
- :func:`atomic_dir`: build a whole folder under a temporary name, then swap it in; an existing
  folder is replaced only once the new one is complete (renamed aside, then deleted), so a crash
  at any point leaves either the old folder or the new one under the final name.

Files and folders get the modes ``open``/``mkdir`` would give them under the process's umask (usually
0644 / 0755), not the private 0600 / 0700 of ``mkstemp``/``mkdtemp``: a published site or a result
folder is readable by a web server running as another user.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once, at import (os.umask can only be read by setting it: not thread-safe)


def _atomic_file(path: Path, write: Callable[[Path], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_UMASK)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return _atomic_file(path, lambda tmp: tmp.write_text(text))


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    return _atomic_file(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_json(path: Path, obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent))


def atomic_torch_save(obj: Any, path: Path) -> Path:
    import torch

    return _atomic_file(path, lambda tmp: torch.save(obj, tmp))


@contextlib.contextmanager
def atomic_dir(path: Path, *, replace: bool = True) -> Iterator[Path]:
    """``with atomic_dir(out) as tmp:`` fill ``tmp``; on success it becomes ``out``. On an error the
    temporary folder is removed and ``out`` is left as it was. ``replace=False`` keeps an existing
    ``out`` (another process finished first) and discards the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    swap_in(tmp, path, replace=replace)


def swap_in(tmp: Path, path: Path, *, replace: bool = True) -> None:
    """Move the complete folder ``tmp`` to ``path``; the old ``path`` is renamed aside first and
    removed after the swap."""
    old = None
    if path.exists():
        if not replace:
            shutil.rmtree(tmp, ignore_errors=True)
            return
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        if old is not None and not path.exists():
            os.replace(old, path)  # put the old one back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
