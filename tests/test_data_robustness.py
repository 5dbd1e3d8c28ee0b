"""Bad or unusual input data: a clean DataError naming the file and the item/field/value, or it works.

Each fixture is a tiny synthetic LC-Rec folder written into ``tmp_path`` with its own card file
and an isolated cache (``REASONREC_CACHE``)."""
from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from bench import sids as sidlib
from bench.data import prepare, settings_for
from bench.loaders import DataError, load_card, load_raw
from bench.specs import DataSettings, DatasetCard

QUIET = {"progress": False, "log": lambda *_: None}


def _write(folder: Path, name: str, obj) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def _card_file(tmp_path: Path, data: Path, sids: dict, monkeypatch, extra: str = "") -> str:
    """A card for the lcrec folder ``data`` (prefix T, no k-core); the cache goes to tmp_path/cache."""
    monkeypatch.setenv("REASONREC_CACHE", str(tmp_path / "cache"))
    card = tmp_path / "t.yaml"
    card.write_text(f"name: t\nformat: lcrec\nprefix: T\npath: {data}\n{extra}"
                    f"data:\n  kcore: 0\n  max_history: 5\n  sids: {json.dumps(sids)}\n")
    return str(card)


def _assert_collision_free(d) -> None:
    assert len(np.unique(d.codes, axis=0)) == d.n_items
    assert int(d.codes.max()) < d.codebook_size and d.stats["codebook_size"] == d.codebook_size
    assert d.stats["sid_levels"] == d.sid_levels and d.stats["unique_sids"] == d.n_items
    for item in range(d.n_items):
        assert d.trie.lookup(d.codes[item].tolist()) == item
        assert sidlib.parse_sid(d.sid(item)) == d.codes[item].tolist()
    assert len(d.sid_vocabulary()) == d.sid_levels * d.codebook_size


# ---------------------------------------------------------------- case 1: SID collisions

def _cold_catalog(folder: Path, n_users: int = 150, n_warm: int = 20, seed: int = 0) -> Path:
    """Each user: 3 warm items, then 2 items seen nowhere else (validation and test targets), so
    2 * n_users items have no training interaction and get the same (zero) collaborative vector."""
    rng = np.random.default_rng(seed)
    inter, cold = {}, n_warm
    for u in range(n_users):
        inter[str(u)] = [int(i) for i in rng.choice(n_warm, 3, replace=False)] + [cold, cold + 1]
        cold += 2
    _write(folder, "T.inter.json", inter)
    return folder


def test_collaborative_cold_items_get_collision_free_sids(tmp_path, monkeypatch):
    data = _cold_catalog(tmp_path / "d")
    card = _card_file(tmp_path, data, {"levels": 3, "codebook_size": 4, "embedding": "collaborative"}, monkeypatch)
    d = prepare(card, **QUIET)
    assert d.n_items == 320
    _assert_collision_free(d)
    assert d.codebook_size == 4  # the extra levels are written in base K: no new code
    assert d.stats["sid_collisions_resolved_by"] == "reassign->extra_level"
    assert d.stats["sid_extra_levels"] == d.sid_levels - 3 >= 1
    assert d.stats["sid_collision_items"] >= 300 and d.stats["sid_fallback_items"] >= 299
    # the first three levels are k-means' codes: the 300 cold items still share one prefix there
    cold = [d.item_ids.index(str(i)) for i in range(20, 320)]
    assert len({tuple(d.codes[i, :3]) for i in cold}) == 1


def _toy_card(tmp_path, monkeypatch, sids: dict) -> str:
    from tests.conftest import write_toy

    data = write_toy(tmp_path / "toy")
    for p in data.iterdir():
        p.rename(data / p.name.replace("Toy.", "T."))
    return _card_file(tmp_path, data, sids, monkeypatch)


def test_reassign_result_is_kept_where_it_succeeds(tmp_path, monkeypatch):
    card = _toy_card(tmp_path, monkeypatch, {"levels": 3, "codebook_size": 4, "embedding": "collaborative",
                                             "collisions": "reassign"})
    d = prepare(card, **QUIET)
    assert d.stats["sid_collisions_resolved_by"] == "reassign" and d.sid_levels == 3
    assert "sid_extra_levels" not in d.stats
    _assert_collision_free(d)
    # same codes as rq_kmeans + resolve_collisions(reassign) on the same embeddings
    x = sidlib.collaborative_embeddings([s[:-2].tolist() for s in d.sequences], d.n_items, seed=0)
    rq = sidlib.rq_kmeans(x, 3, 4, seed=0, max_iter=100)
    ref = sidlib.resolve_collisions(rq.codes, 4, "reassign", rq.centroids[-1], rq.residual_last)
    assert np.array_equal(d.codes, ref)


def _fake_text_embeddings(texts, model_name, batch_size=128, progress=True):
    """Deterministic stand-in for the sentence transformer: equal texts -> equal vectors."""
    out = np.stack([np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)).normal(size=16)
                    for t in texts])
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def _text_catalog(folder: Path, n_items: int = 200, empty_every: int = 0) -> Path:
    inter = {str(u): [(u + j) % n_items for j in range(5)] for u in range(n_items)}
    items = {str(i): {"title": "" if empty_every and i % empty_every == 0 else f"product number {i}"}
             for i in range(n_items)}
    _write(folder, "T.inter.json", inter)
    _write(folder, "T.item.json", items)
    return folder


def test_text_sids_with_empty_titles(tmp_path, monkeypatch):
    monkeypatch.setattr(sidlib, "text_embeddings", _fake_text_embeddings)
    sids = {"levels": 3, "codebook_size": 8, "embedding": "text"}
    # without empty titles reassign suffices on this catalog ...
    full = prepare(_card_file(tmp_path, _text_catalog(tmp_path / "full"), sids, monkeypatch), **QUIET)
    assert full.stats["sid_collisions_resolved_by"] == "reassign" and full.sid_levels == 3
    # ... with 5% empty titles (one shared placeholder embedding) it needs the fallback
    (tmp_path / "cache").rename(tmp_path / "cache-full")
    d = prepare(_card_file(tmp_path, _text_catalog(tmp_path / "gaps", empty_every=20), sids, monkeypatch), **QUIET)
    assert sum(1 for t in d.item_text if not t) == 10
    _assert_collision_free(d)
    assert d.stats["sid_collisions_resolved_by"] == "reassign->extra_level"
    assert d.sid_levels == 3 + d.stats["sid_extra_levels"] and d.codebook_size == 8
    # the 10 empty-title items share the k-means levels and differ in the appended ones
    empty = [i for i, t in enumerate(d.item_text) if not t]
    assert len({tuple(d.codes[i, :3]) for i in empty}) == 1 and len({tuple(d.codes[i]) for i in empty}) == 10


def test_extra_levels_unit():
    from bench.sids import extra_levels

    codes = np.array([[0, 1], [0, 1], [1, 1], [0, 1]])
    out, k = extra_levels(codes, 4)
    # one digit is enough (a group of 3, K=4): the same codes as extra_code
    assert k == 4 and np.array_equal(out, sidlib.resolve_collisions(codes, 4, "extra_code"))
    out, k = extra_levels(codes, 2)  # K=2: the group number 2 takes two binary digits
    assert k == 2 and out[:, 2:].tolist() == [[0, 0], [0, 1], [0, 0], [1, 0]]
    big = np.zeros((9, 2), dtype=np.int64)  # 9 identical SIDs, K=2: 4 binary digits
    out, k = extra_levels(big, 2)
    assert k == 2 and out.shape == (9, 6) and len(np.unique(out, axis=0)) == 9 and out.max() < 2
    out, k = extra_levels(big, 2, max_levels=3)  # one level of room: the codebook grows instead
    assert out.shape == (9, 3) and k == 9 and len(np.unique(out, axis=0)) == 9
    with pytest.raises(ValueError, match="no room"):
        extra_levels(big, 2, max_levels=2)


def test_collision_without_room_is_a_data_error(tmp_path, monkeypatch):
    data = _cold_catalog(tmp_path / "d", n_users=40)
    card = _card_file(tmp_path, data, {"levels": 8, "codebook_size": 2, "embedding": "collaborative"}, monkeypatch)
    with pytest.raises(DataError, match=r"sids\.codebook_size.*sids\.levels|sids\.levels.*sids\.codebook_size"):
        prepare(card, **QUIET)


def test_extra_code_beyond_eight_levels_is_a_data_error(tmp_path, monkeypatch):
    data = _cold_catalog(tmp_path / "d", n_users=40)
    card = _card_file(tmp_path, data, {"levels": 8, "codebook_size": 2, "embedding": "collaborative",
                                       "collisions": "extra_code"}, monkeypatch)
    with pytest.raises(DataError, match=r"sids\.levels"):
        prepare(card, **QUIET)


# ---------------------------------------------------------------- case 2: index vs inter.json

def _index_catalog(folder: Path, n_items: int = 30, extra: int = 0, drop: int = 0, levels: int = 3) -> Path:
    inter = {str(u): [(u + j) % n_items for j in range(4)] for u in range(n_items)}
    _write(folder, "T.inter.json", inter)
    index = {str(i): [sidlib.sid_token(l, (i // 4 ** l) % 4) for l in range(levels)]
             for i in range(drop, n_items + extra)}
    _write(folder, "T.index.json", index)
    return folder


def test_index_extra_items_are_ignored_and_counted(tmp_path, monkeypatch):
    data = _index_catalog(tmp_path / "d", extra=5)
    raw = load_raw(load_card(_card_file(tmp_path, data, {"embedding": "collaborative"}, monkeypatch)))
    assert raw.sequences  # no refusal at load time
    for source in ("rqkmeans", "precomputed"):
        d = prepare(str(tmp_path / "t.yaml"), {"sids": {"source": source, "levels": 3, "codebook_size": 4}}, **QUIET)
        assert d.n_items == 30 and d.stats["sid_source"] == source
        _assert_collision_free(d)
    # the index is read (and its extra entries counted) where it is the SID source
    assert d.stats["index_extra_items"] == 5
    assert d.codes[d.item_ids.index("7")].tolist() == [3, 1, 0]


def test_index_extra_items_with_text_source(tmp_path, monkeypatch):
    monkeypatch.setattr(sidlib, "text_embeddings", _fake_text_embeddings)
    data = _index_catalog(tmp_path / "d", extra=3)
    _write(data, "T.item.json", {str(i): {"title": f"thing {i}"} for i in range(30)})
    d = prepare(_card_file(tmp_path, data, {"embedding": "text", "levels": 2, "codebook_size": 8}, monkeypatch),
                **QUIET)
    assert d.n_items == 30 and d.stats["sid_source"] == "rqkmeans"
    _assert_collision_free(d)


def test_index_missing_items_matter_only_for_precomputed(tmp_path, monkeypatch):
    data = _index_catalog(tmp_path / "d", drop=2)
    card = _card_file(tmp_path, data, {"embedding": "collaborative", "levels": 3, "codebook_size": 4}, monkeypatch)
    d = prepare(card, **QUIET)
    assert d.n_items == 30
    with pytest.raises(DataError, match=r"T\.index\.json: no SID for item id '0' used in T\.inter\.json \(2 items"):
        prepare(card, {"sids": {"source": "precomputed"}}, **QUIET)


# ---------------------------------------------------------------- case 3: precomputed levels

def test_precomputed_level_count(tmp_path, monkeypatch):
    data = _index_catalog(tmp_path / "d", levels=3)
    card = _card_file(tmp_path, data, {"source": "precomputed", "codebook_size": 4}, monkeypatch)
    d = prepare(card, **QUIET)  # the card does not set levels: the index decides
    assert d.sid_levels == 3 and d.stats["sid_levels"] == 3
    # what the runner passes: the resolved settings, every field spelled out (levels=4 by default)
    resolved = settings_for(load_card(card), {}).model_dump(mode="json")
    assert resolved["sids"]["levels"] == 4
    assert prepare(card, resolved, **QUIET).sid_levels == 3
    with pytest.raises(DataError, match=r"T\.index\.json: .*3 levels.*sids\.levels=4"):
        prepare(card, {"sids": {"levels": 4}}, **QUIET)
    assert prepare(card, {"sids": {"levels": 3}}, **QUIET).sid_levels == 3


def test_precomputed_level_count_set_by_the_card(tmp_path, monkeypatch):
    data = _index_catalog(tmp_path / "d", levels=3)
    card = _card_file(tmp_path, data, {"source": "precomputed", "levels": 4, "codebook_size": 4}, monkeypatch)
    with pytest.raises(DataError, match=r"T\.index\.json: .*3 levels.*sids\.levels=4"):
        prepare(card, **QUIET)
    assert prepare(card, {"sids": {"levels": 3}}, **QUIET).sid_levels == 3


# ---------------------------------------------------------------- case 4: errors that name the file

def _small(folder: Path) -> Path:
    return _write(folder, "T.inter.json", {str(u): [(u + j) % 12 for j in range(4)] for u in range(12)}).parent


def test_item_json_must_be_an_object(tmp_path, monkeypatch):
    data = _small(tmp_path / "d")
    _write(data, "T.item.json", [{"title": "a"}])
    with pytest.raises(DataError, match=r"T\.item\.json: expected .*got list"):
        load_raw(load_card(_card_file(tmp_path, data, {}, monkeypatch)))
    _write(data, "T.item.json", {"3": "just a string"})
    with pytest.raises(DataError, match=r"T\.item\.json: item '3'"):
        load_raw(load_card(str(tmp_path / "t.yaml")))


def test_inter_json_entries_must_be_lists_of_ids(tmp_path, monkeypatch):
    data = _write(tmp_path / "d", "T.inter.json", {"0": [1, 2, 3], "u9": 4}).parent
    card = _card_file(tmp_path, data, {}, monkeypatch)
    with pytest.raises(DataError, match=r"T\.inter\.json: user 'u9'"):
        load_raw(load_card(card))
    _write(data, "T.inter.json", {"0": [1, {"id": 2}, 3]})
    with pytest.raises(DataError, match=r"T\.inter\.json: user '0': entry 2 is a dict"):
        load_raw(load_card(card))


@pytest.mark.parametrize("bad, match", [
    (["<a_1>", "<b_x>"], r"T\.index\.json: item '5': cannot parse SID"),
    (["<b_1>", "<a_1>"], r"T\.index\.json: item '5': SID .* has levels"),
    (17, r"T\.index\.json: item '5': expected a list of SID tokens"),
])
def test_unparsable_index_sid_names_file_and_item(tmp_path, monkeypatch, bad, match):
    data = _index_catalog(tmp_path / "d", levels=2)
    index = json.loads((data / "T.index.json").read_text())
    index["5"] = bad
    _write(data, "T.index.json", index)
    card = _card_file(tmp_path, data, {"source": "precomputed"}, monkeypatch)
    with pytest.raises(DataError, match=match):
        prepare(card, **QUIET)
    # not the SID source: the index is not read
    assert prepare(card, {"sids": {"source": "rqkmeans", "embedding": "collaborative", "levels": 3,
                                   "codebook_size": 4}}, **QUIET).n_items == 30


def test_index_with_mixed_level_counts(tmp_path, monkeypatch):
    data = _index_catalog(tmp_path / "d", levels=3)
    index = json.loads((data / "T.index.json").read_text())
    index["9"] = index["9"][:2]
    _write(data, "T.index.json", index)
    card = _card_file(tmp_path, data, {"source": "precomputed"}, monkeypatch)
    with pytest.raises(DataError, match=r"T\.index\.json: item '9': 2 levels, other items have 3"):
        prepare(card, **QUIET)


def test_item2attributes_is_read_only_when_used(tmp_path, monkeypatch):
    data = _small(tmp_path / "d")
    _write(data, "T.item2attributes.json", {"0": [1, 2], "3": [4, "red"]})
    card = _card_file(tmp_path, data, {"embedding": "collaborative", "levels": 2, "codebook_size": 4}, monkeypatch)
    raw = load_raw(load_card(card))
    assert any(p.name == "T.item2attributes.json" for p in raw.source_files)  # still fingerprinted
    assert prepare(card, **QUIET).n_items == 12
    for emb in ("attributes", "hybrid"):
        with pytest.raises(DataError, match=r"T\.item2attributes\.json: item '3': attribute 'red' is not an integer"):
            prepare(card, {"sids": {"embedding": emb}}, **QUIET)
    _write(data, "T.item2attributes.json", [[1, 2]])
    with pytest.raises(DataError, match=r"T\.item2attributes\.json: expected .*got list"):
        prepare(card, {"sids": {"embedding": "attributes"}}, **QUIET)


def test_unreadable_json_names_file(tmp_path, monkeypatch):
    data = tmp_path / "d"
    data.mkdir()
    (data / "T.inter.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match=r"T\.inter\.json: cannot read"):
        load_raw(load_card(_card_file(tmp_path, data, {}, monkeypatch)))


def test_ml100k_bad_timestamp_names_line(tmp_path):
    (tmp_path / "ml-100k.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                            "1\t2\t3\t100\n1\t3\t4\tyesterday\n")
    card = DatasetCard(name="m", format="recbole_ml100k", path=str(tmp_path))
    with pytest.raises(DataError, match=r"ml-100k\.inter:3: timestamp 'yesterday'"):
        load_raw(card)


def test_amazon_raw_bad_records_name_the_record(tmp_path):
    def reviews(*records):
        with gzip.open(tmp_path / "r.json.gz", "wt") as f:
            f.write("\n".join(json.dumps(r) for r in records))

    card = DatasetCard(name="a", format="amazon_raw", path=str(tmp_path), reviews="r.json.gz")
    reviews({"reviewerID": "u", "asin": "A", "unixReviewTime": 1}, ["not", "a", "record"])
    with pytest.raises(DataError, match=r"r\.json\.gz: record 2: expected an object"):
        load_raw(card)
    reviews({"reviewerID": "u", "asin": "A", "unixReviewTime": "soon"})
    with pytest.raises(DataError, match=r"r\.json\.gz: record 1: unixReviewTime 'soon'"):
        load_raw(card)


# ---------------------------------------------------------------- case 5: check_files

def test_check_files_lcrec(tmp_path):
    from bench.loaders import check_files

    card = DatasetCard(name="t", format="lcrec", path=str(tmp_path), prefix="T")
    with pytest.raises(DataError, match=r"dataset 't': missing file .*T\.inter\.json"):
        check_files(card)
    inter = _write(tmp_path, "T.inter.json", "{not even json")  # nothing is read
    assert check_files(card) == [inter]
    index = _write(tmp_path, "T.index.json", {})
    attrs = _write(tmp_path, "T.item2attributes.json", {})
    assert check_files(card) == [inter, attrs, index]
    other = tmp_path / "elsewhere"
    with pytest.raises(DataError, match="folder not found"):
        check_files(card, str(other))
    _write(other, "T.inter.json", {})
    assert check_files(card, str(other)) == [other / "T.inter.json"]  # the override decides the folder
    precomputed = DataSettings(sids={"source": "precomputed"})
    with pytest.raises(DataError, match=r"missing file .*T\.index\.json.*sids\.source=precomputed"):
        check_files(card, str(other), settings=precomputed)
    with pytest.raises(DataError, match=r"missing file .*T\.item2attributes\.json.*sids\.embedding=hybrid"):
        check_files(card, str(other), settings=DataSettings(sids={"embedding": "hybrid"}))
    assert check_files(card, settings=precomputed) == [inter, attrs, index]


def test_check_files_ml100k_and_amazon(tmp_path):
    from bench.loaders import check_files

    ml = DatasetCard(name="m", format="recbole_ml100k", path=str(tmp_path))
    with pytest.raises(DataError, match=r"missing file .*ml-100k\.inter"):
        check_files(ml)
    inter = _write(tmp_path, "ml-100k.inter", "")
    assert check_files(ml) == [inter]
    item = _write(tmp_path, "ml-100k.item", "")
    assert check_files(ml) == [inter, item]
    assert check_files(load_card("ml-100k"))[0].name == "ml-100k.inter"  # the embedded default

    with pytest.raises(DataError, match="needs 'reviews'"):
        check_files(DatasetCard(name="a", format="amazon_raw", path=str(tmp_path)))
    am = DatasetCard(name="a", format="amazon_raw", path=str(tmp_path), reviews="r.json.gz", meta="m.json.gz")
    with pytest.raises(DataError, match=r"missing file .*r\.json\.gz"):
        check_files(am)
    reviews = _write(tmp_path, "r.json.gz", "")
    with pytest.raises(DataError, match=r"missing file .*m\.json\.gz"):
        check_files(am)
    meta = _write(tmp_path, "m.json.gz", "")
    assert check_files(am) == [reviews, meta]
    assert check_files(am.model_copy(update={"meta": None})) == [reviews]


def test_check_files_lists_what_load_raw_reads(tmp_path, monkeypatch):
    from bench.loaders import check_files

    data = _index_catalog(tmp_path / "d")
    _write(data, "T.item.json", {"0": {"title": "x"}})
    card = load_card(_card_file(tmp_path, data, {}, monkeypatch))
    assert check_files(card) == load_raw(card).source_files
