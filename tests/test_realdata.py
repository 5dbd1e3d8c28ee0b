"""Real benchmark data (LASAR Table 6). Needs REASONREC_DATA (the folder holding beauty/ etc.).

    REASONREC_DATA=../shared/data python -m pytest -q -m realdata
"""
import os

import numpy as np
import pytest

from bench.data import prepare

pytestmark = pytest.mark.realdata

TABLE6 = {"beauty": (22363, 12101, 198502), "instruments": (24772, 9922, 206153), "sports": (35598, 18357, 296337)}


@pytest.fixture(autouse=True)
def _need_data():
    if not os.environ.get("REASONREC_DATA"):
        pytest.fail("set REASONREC_DATA to the folder holding beauty/, sports/, instruments/")


@pytest.mark.parametrize("name", ["beauty", "instruments", "sports"])
def test_prepared_counts_match_table6(name):
    d = prepare(name, progress=False, log=lambda *_: None)
    assert (d.stats["users"], d.stats["items"], d.stats["interactions"]) == TABLE6[name]
    assert d.stats["unique_sids"] == d.n_items  # collisions resolved
    assert all(d.trie.lookup(d.codes[i].tolist()) == i for i in range(0, d.n_items, 97))
    test = d.split("test")
    # the protocol note: no test target occurs in its user's history in these datasets
    assert not any(t in h for h, t in zip(test.histories, test.targets))


def test_instruments_precomputed_collisions_are_reported():
    d = prepare("instruments", progress=False, log=lambda *_: None)
    assert d.stats["sid_source"] == "precomputed" and d.stats["sid_collision_items"] == 48
    assert d.stats["codebook_usage"][0] == 150


def test_beauty_precomputed_index_option():
    d = prepare("beauty", {"sids": {"source": "precomputed"}}, progress=False, log=lambda *_: None)
    assert d.stats["sid_collision_items"] == 24 and len(np.unique(d.codes, axis=0)) == 12101
