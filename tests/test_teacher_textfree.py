"""The metadata teacher on a catalog without item text (issue 27): chains of several steps from the history's
SID-prefix clusters that never write the target's SID, LASAR's warning when every CoT is one segment, and the
chains of catalogs with text unchanged."""
from __future__ import annotations

import copy
import hashlib
import json
import re
import types
from pathlib import Path

import numpy as np
import pytest

from bench.generative.teacher import ItemFacts, Teacher, TeacherConfig, metadata_cot
from bench.sids import sid_token
from methods.lasar.anchors import Anchors
from methods.lasar.config import LASARConfig
from methods.lasar.segment import Segmenter


@pytest.fixture(scope="module")
def textfree(toy_data):
    """The toy dataset with its item text blanked: only SIDs, like Instruments."""
    data = copy.copy(toy_data)
    data.item_text = [""] * toy_data.n_items
    return data


def _samples(data):
    tr = data.train_samples()
    return [(list(map(int, h)), int(t)) for h, t in zip(tr.histories, tr.targets)]


def _leaks(cot: str, codes) -> list[str]:
    """Every way the target's SID could appear: its tokens, the group string of its first code, and any code
    value as a number (the text-free chain writes counts in words, so no digit at all)."""
    found = [tok for tok in (sid_token(l, int(c)) for l, c in enumerate(codes)) if tok in cot]
    found += [f"group a{int(codes[0])}"] if f"group a{int(codes[0])}" in cot else []
    found += [m.group() for c in codes for m in re.finditer(rf"(?<!\d){int(c)}(?!\d)", cot)]
    return found + re.findall(r"\d+", cot)


def test_text_free_chains_have_several_segments_that_vary_with_the_evidence(textfree):
    cfg = LASARConfig()
    samples = _samples(textfree)
    facts = ItemFacts(textfree)
    assert not facts.has_text
    cots = [metadata_cot(facts, h, t) for h, t in samples]
    counts = np.array([len(s) for s in Segmenter(cfg.segmenter_model, cfg.segment_threshold).segments(cots)])
    assert (counts > 1).mean() >= 0.8, np.bincount(counts)
    assert len(set(counts.tolist())) > 2, np.bincount(counts)
    lengths = np.array([len(h) for h, _ in samples])
    assert counts[lengths >= 4].mean() > counts[lengths <= 2].mean()  # longer histories: deeper chains


def test_text_free_chains_never_write_the_targets_sid(textfree):
    facts = ItemFacts(textfree)
    for h, t in _samples(textfree):
        cot = metadata_cot(facts, h, t)
        assert not _leaks(cot, textfree.codes[t]), (textfree.codes[t].tolist(), cot)
        assert textfree.sid(t) not in cot
    # an Instruments-like catalog: four levels of 256 codes, histories of up to 20 items, repeats
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (500, 4))
    codes[:, 0] = rng.integers(0, 12, 500)
    data = types.SimpleNamespace(n_items=500, item_text=[""] * 500, codes=codes, sid=None)
    facts = ItemFacts(data)
    depths = set()
    for _ in range(300):
        seq = rng.integers(0, 500, int(rng.integers(2, 22))).tolist()
        if rng.random() < 0.3:
            seq.append(seq[0])  # a repurchase as the target
        h, t = seq[:-1], seq[-1]
        cot = metadata_cot(facts, h, t)
        assert not _leaks(cot, codes[t]), (codes[t].tolist(), cot)
        depths.add(cot.count(". ") + 1)
    assert len(depths) > 3


class _Stub(Anchors):
    """Just what :meth:`Anchors._segments` reads: the config, the CoT state and a cache folder."""

    def __init__(self, data, cots, folder: Path):
        self.config, self.folder = LASARConfig(), folder
        samples = data.train_samples().subset(np.arange(len(cots)))
        self.state = {"cots": cots, "samples": samples, "teacher": types.SimpleNamespace(facts=ItemFacts(data))}

    def cot_state(self, data):
        return self.state

    def cot_cache_dir(self):
        return self.folder


def test_a_warning_names_n_when_every_cot_is_one_segment(textfree, tmp_path):
    n = 30
    logged: list[str] = []
    st = _Stub(textfree, ["The user keeps buying things of one sort."] * n, tmp_path)._segments(textfree, logged.append)
    assert st["labels"].tolist() == [1] * n and st["report"] == [{**st["report"][0], "segments": 1, "share": 1.0}]
    warning = [line for line in logged if "warning" in line]
    assert len(warning) == 1 and "N = 1 for every user" in warning[0] and "segment_threshold" in warning[0]
    # the text-free teacher's chains: no warning
    facts = ItemFacts(textfree)
    cots = [metadata_cot(facts, h, t) for h, t in _samples(textfree)[:n]]
    logged.clear()
    st = _Stub(textfree, cots, tmp_path)._segments(textfree, logged.append)
    assert len(set(st["labels"].tolist())) > 1 and not [line for line in logged if "warning" in line]


def _catalog_with_text():
    items = [("Red Guitar", "Music, Guitars", "Fender"), ("Blue Drum Kit", "Music, Drums", "Yamaha"),
             ("Green Pick", "Music, Guitars", "Fender"), ("Steel Strings", "Music, Strings", "Ernie Ball"),
             ("Black Stand", "Music, Stands", "Hercules"), ("Gold Capo", "Music, Guitars", "Kyser")]
    return types.SimpleNamespace(n_items=len(items), sid=None, codes=np.array([[i % 3, i] for i in range(len(items))]),
                                 item_text=[f"title: {t}; categories: {c}; brand: {b}" for t, c, b in items])


def test_catalogs_with_text_keep_their_chains():
    facts = ItemFacts(_catalog_with_text())
    assert facts.has_text
    assert metadata_cot(facts, [0, 1, 2, 3, 0, 2, 1], 5) == (
        "The user most recently interacted with Blue Drum Kit, Green Pick and Red Guitar. Earlier in the history they "
        "chose Red Guitar and Blue Drum Kit, 7 interactions in total. Their strongest interest is Guitars, present in "
        "4 of 7 items. A secondary interest is Drums, and the history spans 3 different kinds of items. They show "
        "loyalty to the brand Fender, chosen 4 times. The recent pattern suggests the user intends to continue with "
        "Guitars. So the next item should be a Guitars product, possibly from a brand new to this user. Keeping only "
        "the relevant steps, the sequence reads Green Pick then Red Guitar then Green Pick.")
    assert metadata_cot(facts, [0, 2], 4) == (
        "The user most recently interacted with Green Pick and Red Guitar. Their strongest interest is Guitars, "
        "present in 2 of 2 items. They show loyalty to the brand Fender, chosen 2 times. The recent pattern suggests "
        "a new need beyond Guitars: the goal shifts towards Stands. So the next item should be a Stands product, "
        "possibly from a brand new to this user.")


def test_only_the_text_free_cache_file_moved(toy_data, textfree, tmp_path):
    """Text catalogs keep their cached CoTs; a text-free catalog does not reuse the old chain's."""
    cfg = TeacherConfig()
    ident = cfg.model_dump(exclude={"max_retries", "timeout_s", "requests_per_minute", "api_key_env"})
    digest = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:10]
    assert Teacher(cfg, toy_data, tmp_path).path.name.endswith(f"-metadata-{digest}.jsonl")
    assert not Teacher(cfg, textfree, tmp_path).path.name.endswith(f"-metadata-{digest}.jsonl")


def test_a_catalog_with_text_but_no_categories_gets_the_code_free_chain(toy_data):
    """Sports has keyword text and no categories: the text chain's category fell back to "group a{first code}"
    for every item, so its CoTs named the target's first SID code ("the goal shifts towards group a227"). Such a
    catalog now gets the cluster chain (no code), and so does its cache file and its stage keys."""
    data = copy.copy(toy_data)
    data.item_text = [f"keyword{i} thing{i % 3}" for i in range(toy_data.n_items)]  # one field: keywords only
    facts = ItemFacts(data)
    assert facts.has_text and not facts.has_categories and facts.chain == "clusters"
    for h, t in _samples(data):
        cot = metadata_cot(facts, h, t)
        assert f"group a{int(data.codes[t][0])}" not in cot and not _leaks(cot, data.codes[t]), cot
    teacher = Teacher(TeacherConfig(), data, Path("/nonexistent"))
    assert teacher.identity == {"cot_chain": "clusters-2"}
    assert Teacher(TeacherConfig(), toy_data, Path("/nonexistent")).identity == {}  # the text chain's keys stay


@pytest.mark.parametrize("method", ["lasar", "gream"])
def test_stage_keys_tell_the_code_free_chain_from_the_old_one(method, toy_data, textfree):
    """A Stage-2 (LASAR) or CoT-SFT (GREAM) entry trained on a text-free catalog's old CoTs (which named the
    target's code) is not reused for the new chain: the key carries the chain's identity; text catalogs' keys
    are as before (their entries stay valid)."""
    from bench.registry import REGISTRY

    cls = REGISTRY.get(method)
    ctx = types.SimpleNamespace(seed=0, selection_metric="NDCG@10", exclude_history=False)
    keys = {}
    for name, data in (("text", toy_data), ("free", textfree)):
        m = cls(cls.Config(**cls.smoke_config))
        m._cot_state = {"fp": data.fingerprint, "teacher": Teacher(m.config.teacher, data, Path("/nonexistent"))}
        keys[name] = m._stage2_key(data, ctx, "s1") if method == "lasar" else m._cot_sft_key(data, ctx, "s1")
    assert "cot_chain" not in keys["text"] and keys["free"]["cot_chain"] == "clusters-2"
