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
