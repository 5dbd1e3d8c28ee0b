import gzip
import json

import pytest

from bench.data import prepare
from bench.loaders import DataError, load_card, load_raw
from bench.specs import DatasetCard, SpecError


def _card(path, **kw):
    return DatasetCard(name="t", format="lcrec", path=str(path), prefix="T", **kw)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(DataError, match=r"missing file .*T\.inter\.json"):
        load_raw(_card(tmp_path))


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="folder not found"):
        load_raw(_card(tmp_path / "nope"))


def test_unset_env_var_is_named():
    card = DatasetCard(name="t", format="lcrec", path="${REASONREC_NOT_SET_VAR}/x")
    with pytest.raises(DataError, match="REASONREC_NOT_SET_VAR"):
        load_raw(card)


def test_malformed_json_names_file(tmp_path):
    (tmp_path / "T.inter.json").write_text("{not json")
    with pytest.raises(DataError, match=r"T\.inter\.json: malformed JSON"):
        load_raw(_card(tmp_path))


def test_wrong_shape(tmp_path):
    (tmp_path / "T.inter.json").write_text(json.dumps({"0": 5}))
    with pytest.raises(DataError, match="user '0'"):
        load_raw(_card(tmp_path))


def test_index_with_unknown_or_missing_items(tmp_path):
    # extra entries are ignored and counted; missing items are an error only where the index is the
    # SID source (sids.source=precomputed: tests/test_data_robustness.py)
    (tmp_path / "T.inter.json").write_text(json.dumps({"0": [1, 2, 3]}))
    (tmp_path / "T.index.json").write_text(json.dumps({"1": ["<a_1>"], "2": ["<a_2>"], "3": ["<a_3>"], "77": ["<a_0>"]}))
    raw = load_raw(_card(tmp_path))
    assert raw.sid_index() == {"1": ["<a_1>"], "2": ["<a_2>"], "3": ["<a_3>"]} and raw.index_extra_items == 1
    (tmp_path / "T.index.json").write_text(json.dumps({"1": ["<a_1>"], "2": ["<a_2>"]}))
    raw = load_raw(_card(tmp_path))
    assert raw.sid_index() is not None and raw.index_missing_items == ["3"]


def test_too_few_interactions(tmp_path, monkeypatch):
    (tmp_path / "T.inter.json").write_text(json.dumps({"0": [1, 2], "1": [1]}))
    card = tmp_path / "t.yaml"
    card.write_text(f"name: t\nformat: lcrec\nprefix: T\npath: {tmp_path}\n"
                    "data: {kcore: 0, sids: {embedding: collaborative, codebook_size: 2, levels: 1}}\n")
    monkeypatch.setenv("REASONREC_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="no user has >= 3 interactions"):
        prepare(str(card), progress=False, log=lambda *_: None)
    assert not (tmp_path / "cache" / "data").exists() or not any((tmp_path / "cache" / "data").iterdir())


def test_card_typo_and_unknown_dataset(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nformat: lcrec\npath: /tmp\ntext_field: [title]\n")
    with pytest.raises(SpecError, match="unknown key 'text_field'; did you mean 'text_fields'"):
        load_card(str(bad))
    with pytest.raises(SpecError, match="unknown dataset 'ml100k'; did you mean 'ml-100k'"):
        load_card("ml100k")


def test_ml100k_loader():
    raw = load_raw(load_card("ml-100k"))
    assert len(raw.sequences) == 943 and sum(map(len, raw.sequences.values())) == 100_000
    assert "Toy Story" in raw.item_text["1"] and "Animation" in raw.item_text["1"]


def test_amazon_raw_2014_and_2018(tmp_path):
    reviews = [{"reviewerID": "u1", "asin": "B", "unixReviewTime": 20},
               {"reviewerID": "u1", "asin": "A", "unixReviewTime": 10},
               {"reviewerID": "u2", "asin": "A", "unixReviewTime": 5}]
    with gzip.open(tmp_path / "r.json.gz", "wt") as f:
        f.write("\n".join(json.dumps(r) for r in reviews))
    with gzip.open(tmp_path / "meta2014.json.gz", "wt") as f:  # Python dict literals
        f.write(str({"asin": "A", "title": "Lipstick", "categories": [["Beauty", "Makeup"]]}) + "\n")
    with gzip.open(tmp_path / "meta2018.json.gz", "wt") as f:
        f.write(json.dumps({"asin": "A", "title": "Lipstick", "category": ["Beauty", "Makeup"]}) + "\n")
    for meta in ("meta2014.json.gz", "meta2018.json.gz"):
        card = DatasetCard(name="a", format="amazon_raw", path=str(tmp_path), reviews="r.json.gz", meta=meta,
                           text_fields=["title", "categories"])
        raw = load_raw(card)
        assert raw.sequences == {"u1": ["A", "B"], "u2": ["A"]}
        assert raw.item_text["A"] == "title: Lipstick; categories: Beauty, Makeup"
    with gzip.open(tmp_path / "bad.json.gz", "wt") as f:
        f.write("this is not json\n")
    card = DatasetCard(name="a", format="amazon_raw", path=str(tmp_path), reviews="bad.json.gz")
    with pytest.raises(DataError, match=r"bad\.json\.gz:1"):
        load_raw(card)


def test_prepare_is_cached_by_fingerprint(toy_env, toy_data):
    again = prepare("toy", progress=False, log=lambda *_: None)
    assert again.fingerprint == toy_data.fingerprint
    other = prepare("toy", {"max_history": 4}, progress=False, log=lambda *_: None)
    assert other.fingerprint != toy_data.fingerprint
