"""The committed suite files (``leaderboard/suites/**.yaml``) are typed specs like any other: a typo in one
(an unknown setting, a wrong type, two entries that are the same run) fails here, not hours into a run or at
the start of a lent GPU's ten minutes. Real-data suites are checked without their data files."""
from pathlib import Path

import pytest

from bench.config import load_suite, suite_specs
from bench.specs import SpecError

SUITES = sorted((Path(__file__).resolve().parents[1] / "leaderboard" / "suites").rglob("*.yaml"))


def test_the_suites_folder_is_found():
    assert len(SUITES) >= 10 and any(p.parent.name == "h200" for p in SUITES)


@pytest.mark.parametrize("path", SUITES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_committed_suite_resolves(path):
    specs = suite_specs(load_suite(path), check_files=False)
    assert specs and all(s.method and s.dataset for s in specs)


def test_a_suite_with_a_mistyped_setting_fails_with_its_name(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("methods:\n  - method: tiger\n    method_config: {decode_batch_sizes: 256}\n"
                   "datasets: [beauty]\n")
    with pytest.raises(SpecError, match="decode_batch_sizes"):
        suite_specs(load_suite(bad), check_files=False)


def test_a_gpu_suite_row_has_the_run_id_of_the_table1_row_it_stands_for():
    """The h200 suites train Table-1 rows on a lent GPU "with the same run ids": a setting changed in
    ``table1-<dataset>.yaml`` and not in its GPU twin (or the reverse) would make the GPU run a row Table 1
    never shows. Rows with a label of their own (``TIGER (paper size)``, ablations) are not Table-1 rows."""
    table1 = {}
    for path in SUITES:
        if path.parent.name == "suites" and path.stem.startswith("table1-"):
            for s in suite_specs(load_suite(path), check_files=False):
                table1[(s.dataset, s.label, s.seed)] = s.run_id()
    shared = 0
    for path in SUITES:
        if path.parent.name != "h200":
            continue
        for s in suite_specs(load_suite(path), check_files=False):
            key = (s.dataset, s.label, s.seed)
            if key in table1:
                shared += 1
                assert s.run_id() == table1[key], f"{path.name}: {key} is {s.run_id()}, Table 1's is {table1[key]}"
    assert shared >= 20  # Beauty, Sports and Instruments' MiniOneRec and LASAR rows
