"""Raw loaders (cards: :mod:`bench.cards`). Each loader returns :class:`RawData`; nothing is filtered here.

Formats:
- ``recbole_ml100k``: MovieLens-100k shipped in the recbole wheel (the embedded default).
- ``lcrec``: ``X.inter.json`` (+ optional ``X.item.json``, ``X.index.json``,
  ``X.item2attributes.json``), as in ``../shared/data/{beauty,sports,instruments}``.
- ``amazon_raw``: Amazon review + metadata ``.json.gz`` (2014 and 2018 layouts).
"""
from __future__ import annotations

import ast
import difflib
import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path

from bench.cards import (CARDS_DIR, REPO_ROOT, DataError, card_dirs, known_datasets, load_card,  # noqa: F401
                         resolve_path)
from bench.specs import DataSettings, DatasetCard


@dataclass
class RawData:
    """Chronological interactions by raw user id, plus optional item side information.

    The attribute and SID index files are listed in ``source_files`` (so they enter the
    fingerprint) but read only when needed: :meth:`attributes` and :meth:`sid_index`.
    """

    sequences: dict[str, list[str]]                   # user -> items, oldest first
    item_text: dict[str, str] = field(default_factory=dict)
    item_attributes: dict[str, list[int]] = field(default_factory=dict)
    precomputed_sids: dict[str, list[str]] | None = None
    source_files: list[Path] = field(default_factory=list)
    attributes_file: Path | None = None
    index_file: Path | None = None
    index_extra_items: int = 0                        # index entries for items not in the interactions
    index_missing_items: list[str] = field(default_factory=list)  # items in the interactions without one

    def attributes(self) -> dict[str, list[int]]:
        """Item attributes, read from ``attributes_file`` on first use."""
        if not self.item_attributes and self.attributes_file is not None:
            self.item_attributes = read_attributes(self.attributes_file)
        return self.item_attributes

    def sid_index(self) -> dict[str, list[str]] | None:
        """Precomputed SIDs of the items in ``sequences`` (None without an index), read from
        ``index_file`` on first use; extra entries are dropped and counted, missing items listed."""
        if self.precomputed_sids is None and self.index_file is not None:
            index = read_index(self.index_file)
            used = {i for s in self.sequences.values() for i in s}
            self.precomputed_sids = {i: v for i, v in index.items() if i in used}
            self.index_extra_items = len(index) - len(self.precomputed_sids)
            self.index_missing_items = sorted(used - set(index), key=lambda i: (len(i), i))
        return self.precomputed_sids


# ---------------------------------------------------------------- readers

def _read_json(path: Path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: malformed JSON ({e})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None


def _read_json_object(path: Path, shape: str) -> dict:
    """A JSON file whose top level must be an object (``shape`` describes it for the message)."""
    obj = _read_json(path)
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected {shape}, got {type(obj).__name__}")
    return obj


def read_attributes(path: Path) -> dict[str, list[int]]:
    """``X.item2attributes.json``: {item: [attribute id, ...]}."""
    out = {}
    for item, values in _read_json_object(path, "{item: [attribute id, ...]}").items():
        if not isinstance(values, list):
            raise DataError(f"{path}: item {item!r}: expected a list of attribute ids, got {type(values).__name__}")
        try:
            out[str(item)] = [int(a) for a in values]
        except (TypeError, ValueError):
            bad = next(a for a in values if not _is_int_like(a))
            raise DataError(f"{path}: item {item!r}: attribute {bad!r} is not an integer") from None
    return out


def _is_int_like(value) -> bool:
    try:
        int(value)
    except (TypeError, ValueError):
        return False
    return True


def read_index(path: Path) -> dict[str, list[str]]:
    """``X.index.json``: {item: ["<a_1>", "<b_2>", ...]} (a single token string is accepted too)."""
    out = {}
    for item, tokens in _read_json_object(path, '{item: ["<a_1>", "<b_2>", ...]}').items():
        if isinstance(tokens, str):
            tokens = [tokens]
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise DataError(f"{path}: item {item!r}: expected a list of SID tokens like [\"<a_1>\", \"<b_2>\"], "
                            f"got {tokens!r}")
        out[str(item)] = tokens
    return out


def _iter_json_lines(path: Path):
    """One record per line: JSON (2018 layout) or a Python dict literal (2014 metadata)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    try:
                        yield ast.literal_eval(line)
                    except (ValueError, SyntaxError):
                        raise DataError(f"{path}:{lineno}: neither JSON nor a Python dict literal") from None
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None


def _flatten_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(t for t in (_flatten_text(v) for v in value) if t)
    return str(value).strip()


def _item_text(record: dict, fields: list[str]) -> str:
    parts = []
    for f in fields:
        t = _flatten_text(record.get(f))
        if t:
            parts.append(f"{f}: {t}" if len(fields) > 1 else t)
    return "; ".join(parts)


def load_recbole_ml100k(card: DatasetCard, root: Path) -> RawData:
    inter, item = _require(card, root / "ml-100k.inter"), root / "ml-100k.item"
    rows = []
    with open(inter) as f:
        header = f.readline().rstrip("\n").split("\t")
        names = [h.split(":")[0] for h in header]
        try:
            iu, ii, it = names.index("user_id"), names.index("item_id"), names.index("timestamp")
        except ValueError:
            raise DataError(f"{inter}: header must have user_id, item_id, timestamp; got {header}") from None
        for n, line in enumerate(f, 2):
            cols = line.rstrip("\n").split("\t")
            if len(cols) != len(names):
                raise DataError(f"{inter}:{n}: expected {len(names)} columns, got {len(cols)}")
            try:
                ts = float(cols[it])
            except ValueError:
                raise DataError(f"{inter}:{n}: timestamp {cols[it]!r} is not a number") from None
            rows.append((cols[iu], cols[ii], ts, n))
    rows.sort(key=lambda r: (r[0], r[2], r[3]))  # chronological, file order breaks ties
    seqs: dict[str, list[str]] = {}
    for u, i, _, _ in rows:
        seqs.setdefault(u, []).append(i)
    text: dict[str, str] = {}
    if item.is_file():
        with open(item, encoding="latin-1") as f:
            header = [h.split(":")[0] for h in f.readline().rstrip("\n").split("\t")]
            if "item_id" not in header:
                raise DataError(f"{item}: header must have item_id; got {header}")
            for line in f:
                cols = dict(zip(header, line.rstrip("\n").split("\t")))
                rec = {"title": cols.get("movie_title", ""), "year": cols.get("release_year", ""),
                       "genres": cols.get("class", "").replace(" ", ", ")}
                text[cols["item_id"]] = _item_text(rec, card.text_fields or ["title", "year", "genres"])
    return RawData(seqs, text, source_files=[inter] + ([item] if item.is_file() else []))


def _lcrec_files(card: DatasetCard, root: Path) -> dict[str, Path]:
    prefix = card.prefix or root.name
    return {kind: root / f"{prefix}.{kind}.json" for kind in ("inter", "item", "item2attributes", "index")}


def _read_sequences(path: Path) -> dict[str, list[str]]:
    seqs = {}
    for u, items in _read_json_object(path, "{user: [item, ...]}").items():
        if not isinstance(items, list):
            raise DataError(f"{path}: user {u!r}: expected a list of item ids, got {type(items).__name__}")
        for n, i in enumerate(items):
            if isinstance(i, (list, dict, bool)) or i is None or (isinstance(i, float) and not i.is_integer()):
                raise DataError(f"{path}: user {u!r}: entry {n + 1} is a {type(i).__name__} ({i!r}), "
                                f"expected an item id (string or integer)")
        # a whole float (3112.0, as some JSON writers emit integers) is the integer id, not a new item "3112.0"
        seqs[str(u)] = [str(int(i)) if isinstance(i, float) else str(i) for i in items]
    return seqs


def check_text_fields(path: Path, fields: list[str], records) -> None:
    """A card's ``text_fields`` that no record of ``path`` has is a typo, not a catalog without text: a
    DataError naming the field, the fields the records have and a close match."""
    present: set[str] = set()
    for rec in records:
        if isinstance(rec, dict):
            present.update(rec)
    missing = [f for f in fields if f not in present]
    if missing and present:
        close = [c for f in missing for c in difflib.get_close_matches(f, sorted(present), n=1, cutoff=0.5)]
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise DataError(f"{path}: no item has the text field(s) {', '.join(map(repr, missing))} named by the card's "
                        f"text_fields; the items have {', '.join(map(repr, sorted(present)))}{hint}")


def _read_item_text(path: Path, fields: list[str], explicit: bool = False) -> dict[str, str]:
    """``explicit``: the fields come from the card (checked: :func:`check_text_fields`), not the default."""
    text = {}
    records = _read_json_object(path, "{item: {field: value, ...}}")
    if explicit:
        check_text_fields(path, fields, records.values())
    for i, rec in records.items():
        if not isinstance(rec, dict):
            raise DataError(f"{path}: item {i!r}: expected an object with text fields, got {type(rec).__name__}")
        text[str(i)] = _item_text(rec, fields)
    return text


def load_lcrec(card: DatasetCard, root: Path) -> RawData:
    paths = _lcrec_files(card, root)
    inter = _require(card, paths["inter"])
    raw = RawData(_read_sequences(inter), source_files=[inter])
    if paths["item"].is_file():
        raw.source_files.append(paths["item"])
        raw.item_text = _read_item_text(paths["item"], card.text_fields or ["title"], explicit=bool(card.text_fields))
    if paths["item2attributes"].is_file():  # read by raw.attributes() when an embedding needs it
        raw.source_files.append(paths["item2attributes"])
        raw.attributes_file = paths["item2attributes"]
    if paths["index"].is_file():  # read by raw.sid_index() when it is the SID source
        raw.source_files.append(paths["index"])
        raw.index_file = paths["index"]
    return raw


def load_amazon_raw(card: DatasetCard, root: Path) -> RawData:
    reviews, meta = _amazon_files(card, root)
    _require(card, reviews)
    events: dict[str, list[tuple[int, int, str]]] = {}
    for n, r in enumerate(_iter_json_lines(reviews)):
        if not isinstance(r, dict):
            raise DataError(f"{reviews}: record {n + 1}: expected an object, got {type(r).__name__}")
        user = r.get("reviewerID") or r.get("user_id")
        item = r.get("asin") or r.get("parent_asin")
        ts = r.get("unixReviewTime", r.get("timestamp"))
        if user is None or item is None or ts is None:
            raise DataError(f"{reviews}: record {n + 1} lacks reviewerID/asin/unixReviewTime")
        try:
            ts = int(ts)
        except (TypeError, ValueError):
            raise DataError(f"{reviews}: record {n + 1}: unixReviewTime {ts!r} is not an integer") from None
        events.setdefault(str(user), []).append((ts, n, str(item)))
    seqs = {u: [i for _, _, i in sorted(ev)] for u, ev in events.items()}
    text: dict[str, str] = {}
    files = [reviews]
    if meta is not None:
        files.append(_require(card, meta))
        fields = card.text_fields or ["title", "brand", "categories"]
        keys: dict[str, None] = {}
        for r in _iter_json_lines(meta):
            if isinstance(r, dict) and "asin" in r:
                if "category" in r and "categories" not in r:  # 2018 layout
                    r["categories"] = r["category"]
                keys.update(dict.fromkeys(r))
                text[str(r["asin"])] = _item_text(r, fields)
        if card.text_fields:
            check_text_fields(meta, fields, [keys])
    return RawData(seqs, text, source_files=files)


LOADERS = {"recbole_ml100k": load_recbole_ml100k, "lcrec": load_lcrec, "amazon_raw": load_amazon_raw}


# ---------------------------------------------------------------- files

def _require(card: DatasetCard, path: Path, why: str = "") -> Path:
    if not path.is_file():
        raise DataError(f"dataset '{card.name}': missing file {path}" + (f" (needed by {why})" if why else ""))
    return path


def _amazon_files(card: DatasetCard, root: Path) -> tuple[Path, Path | None]:
    if not card.reviews:
        raise DataError(f"dataset card '{card.name}': format amazon_raw needs 'reviews' (a .json.gz file name)")
    return root / card.reviews, (root / card.meta if card.meta else None)


def _card_files(card: DatasetCard, root: Path) -> list[tuple[Path, bool]]:
    """(file, required) for every file the card's loader reads, in the loader's order."""
    if card.format == "lcrec":
        paths = _lcrec_files(card, root)
        return [(paths["inter"], True)] + [(paths[k], False) for k in ("item", "item2attributes", "index")]
    if card.format == "recbole_ml100k":
        return [(root / "ml-100k.inter", True), (root / "ml-100k.item", False)]
    reviews, meta = _amazon_files(card, root)
    return [(reviews, True)] + ([(meta, True)] if meta is not None else [])


def check_files(card: DatasetCard, path_override: str | None = None, *,
                settings: DataSettings | None = None) -> list[Path]:
    """The files a prepare of ``card`` would read (without reading them); a :class:`DataError`
    names the first missing required file. With ``settings`` (DataSettings), the files those
    settings need are required too: the SID index for ``sids.source=precomputed`` and
    item2attributes for ``sids.embedding`` attributes/hybrid."""
    root = resolve_path(card, path_override)
    files = []
    for path, required in _card_files(card, root):
        if required:
            _require(card, path)
        if path.is_file():
            files.append(path)
    if settings is not None:
        for kind, why in _needed_by(settings):
            if card.format != "lcrec":
                raise DataError(f"dataset '{card.name}': {why} needs an X.{kind}.json file; "
                                f"format {card.format} has none")
            _require(card, _lcrec_files(card, root)[kind], why)
    return files


def _needed_by(settings: DataSettings) -> list[tuple[str, str]]:
    """(lcrec file kind, the setting that needs it) for the optional files ``settings`` make necessary."""
    s = settings.sids
    if s.source == "precomputed":
        return [("index", "sids.source=precomputed")]
    if s.embedding in ("attributes", "hybrid"):
        return [("item2attributes", f"sids.embedding={s.embedding}")]
    return []


def load_raw(card: DatasetCard, path_override: str | None = None) -> RawData:
    return LOADERS[card.format](card, resolve_path(card, path_override))
