"""Provenance: the lock file's hash and drift, and the commit of a tree copied without .git."""
import hashlib
from importlib import metadata

from bench import provenance


def test_lock_records_hash_and_versions_that_differ(tmp_path):
    have = metadata.version("pydantic")
    text = f"pydantic=={have}\n# a comment\njinja2==0.0.1\nnot-installed-pkg==1.0\n"
    (tmp_path / "constraints.txt").write_text(text)
    out = provenance.lock(tmp_path)
    assert out["sha256"] == hashlib.sha256(text.encode()).hexdigest()[:16]
    assert out["differs"] == [f"jinja2: {metadata.version('jinja2')} != 0.0.1", "not-installed-pkg: None != 1.0"]


def test_no_lock_file_is_none(tmp_path):
    assert provenance.lock(tmp_path) is None


def test_the_repo_lock_matches_this_install():
    """CI installs with ``-c constraints.txt``: every locked package is at its locked version."""
    out = provenance.lock()
    assert out is not None and out["differs"] == []


def test_commit_of_a_copied_tree(tmp_path, monkeypatch):
    """The device tool's copy carried a stale .git (the session's first commit, dirty): the sender's
    REASONREC_GIT_COMMIT names the clean commit the tree was copied from."""
    assert provenance.git_commit(tmp_path) is None  # no git repository there
    monkeypatch.setenv("REASONREC_GIT_COMMIT", "abc123")
    assert provenance.git_commit(tmp_path) == "abc123"
    assert provenance.git_commit() == "abc123"  # also over a real checkout


def test_the_lock_holds_only_pinned_names():
    """pip refuses an unnamed constraint (`pip freeze` writes `-e <checkout>` for an editable install): one
    such line makes the README's install and CI fail before any test runs."""
    import re

    lines = [ln.strip() for ln in (provenance.ROOT / provenance.LOCK_FILE).read_text().splitlines()]
    bad = [ln for ln in lines if ln and not ln.startswith("#") and not re.fullmatch(r"[A-Za-z0-9_.\-]+==\S+", ln)]
    assert bad == []


def test_hardware_records_the_cpu_kernels_that_change_a_runs_numbers(monkeypatch):
    """Same commit, lock and thread count on another CPU (or with ``ATEN_CPU_CAPABILITY``) rounds differently and a
    training run drifts: the result names the kernel set torch dispatches to and any variable that forces one."""
    import torch

    for k in provenance.KERNEL_VARIABLES:
        monkeypatch.delenv(k, raising=False)
    hw = provenance.hardware()
    assert hw["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert "kernel_variables" not in hw
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    assert provenance.hardware()["kernel_variables"] == {"MKL_CBWR": "COMPATIBLE"}


def test_a_run_page_names_the_cpu_kernels_and_the_variables_that_forced_them():
    from bench.results import RunResult
    from bench.runpage import run_page_facts

    root = provenance.ROOT / "leaderboard" / "results" / "ml-100k"
    r = RunResult.from_disk(next(root.glob("sasrec-*/result.json")))
    assert "CPU kernels" not in run_page_facts(r)["provenance"]  # older results do not record them
    r.environment["hardware"].update(cpu_capability="AVX512", cpu_model="AMD EPYC",
                                     kernel_variables={"MKL_CBWR": "COMPATIBLE"})
    facts = run_page_facts(r)["provenance"]
    assert facts["CPU kernels"] == "AVX512, MKL_CBWR=COMPATIBLE"
    assert facts["hardware"].startswith("CPU (AMD EPYC), ")
