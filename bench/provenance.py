"""Where a number came from: versions, hardware, git commit."""
from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("reasonrec-bench", "torch", "transformers", "recbole", "accelerate", "numpy",
            "scikit-learn", "sentence-transformers", "pydantic")


ROOT = Path(__file__).resolve().parent.parent
LOCK_FILE = "constraints.txt"


def git_commit(root: Path | None = None) -> str | None:
    """HEAD of the checkout (``-dirty`` with uncommitted changes to tracked files). A copy of the tree
    sent elsewhere (a remote GPU machine) may carry no ``.git`` or a stale one: there the sender names the
    clean commit it copied in ``REASONREC_GIT_COMMIT``, which is recorded as given."""
    if os.environ.get("REASONREC_GIT_COMMIT"):
        return os.environ["REASONREC_GIT_COMMIT"]
    root = root or ROOT
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str | None]:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


#: Environment variables that change which CPU kernels torch, MKL and oneDNN run: with the same commit, lock and
#: thread count, a different kernel set (another CPU, or one of these) gives different float rounding, and a
#: training run then drifts (the results README, "Same run id, another machine").
KERNEL_VARIABLES = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA",
                    "DNNL_MAX_CPU_ISA")


def cpu_model() -> str | None:
    """The CPU's model name (``/proc/cpuinfo``; None where it is not readable)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def hardware() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "cpu_model": cpu_model()}
    kernels = {k: os.environ[k] for k in KERNEL_VARIABLES if os.environ.get(k)}
    if kernels:
        info["kernel_variables"] = kernels
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()  # the ATen kernel set: AVX2, AVX512, ...
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def _same_version(have: str | None, want: str) -> bool:
    if have is None:
        return False
    try:
        from packaging.version import Version

        return Version(have) == Version(want)  # 0.1.1-2209 == 0.1.1.post2209
    except Exception:  # noqa: BLE001 -- an unparsable version: compare the text
        return have == want


def lock(root: Path | None = None) -> dict | None:
    """The lock file the install used (``constraints.txt``, ``name==version`` lines): its sha256 and
    the locked packages whose installed version differs (``name: installed != locked``); None without one."""
    import hashlib

    path = (root or ROOT) / LOCK_FILE
    if not path.is_file():
        return None
    text = path.read_text()
    differ = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" not in line:
            continue
        name, want = (x.strip() for x in line.split("==", 1))
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = None
        if not _same_version(have, want):
            differ.append(f"{name}: {have} != {want}")
    return {"file": LOCK_FILE, "sha256": hashlib.sha256(text.encode()).hexdigest()[:16], "differs": differ}


def environment() -> dict:
    return {"versions": versions(), "hardware": hardware(), "git_commit": git_commit(), "lock": lock()}
