"""Dataset cards and raw loaders. Each loader returns :class:`RawData`; nothing is filtered here.

Formats:
- ``recbole_ml100k``: MovieLens-100k shipped in the recbole wheel (the embedded default).
- ``lcrec``: ``X.inter.json`` (+ optional ``X.item.json``, ``X.index.json``,
  ``X.item2attributes.json``), as in ``../shared/data/{beauty,sports,instruments}``.
- ``amazon_raw``: Amazon review + metadata ``.json.gz`` (2014 and 2018 layouts).
"""
from __future__ import annotations

import ast
import gzip
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from bench.specs import DatasetCard, SpecError, format_validation_error, load_yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
CARDS_DIR = REPO_ROOT / "datasets"


class DataError(ValueError):
    """Bad input data; the message names the file, field or value."""


@dataclass
class RawData:
    """Chronological interactions by raw user id, plus optional item side information."""

    sequences: dict[str, list[str]]                   # user -> items, oldest first
    item_text: dict[str, str] = field(default_factory=dict)
    item_attributes: dict[str, list[int]] = field(default_factory=dict)
    precomputed_sids: dict[str, list[str]] | None = None
    source_files: list[Path] = field(default_factory=list)


# ---------------------------------------------------------------- cards

def card_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("REASONREC_CARDS", "").split(os.pathsep) if p]
    return extra + [CARDS_DIR]


def known_datasets() -> list[str]:
    names = set()
    for d in card_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def load_card(name_or_path: str) -> DatasetCard:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        path = p
    else:
        path = next((d / f"{name_or_path}.yaml" for d in card_dirs() if (d / f"{name_or_path}.yaml").is_file()), None)
        if path is None:
            import difflib

            close = difflib.get_close_matches(name_or_path, known_datasets(), n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise SpecError(f"unknown dataset '{name_or_path}'{hint} (known: {', '.join(known_datasets())}; "
                            f"or pass a card file path)")
    from pydantic import ValidationError

    try:
        return DatasetCard(**load_yaml(path))
    except ValidationError as e:
        raise SpecError(format_validation_error(e, f"dataset card {path}", DatasetCard)) from None


def resolve_path(card: DatasetCard, override: str | None = None) -> Path:
    raw = override or card.path
    env = dict(os.environ)
    if "${RECBOLE_EXAMPLES}" in raw:
        import recbole

        env["RECBOLE_EXAMPLES"] = str(Path(recbole.__file__).parent / "dataset_example")
    missing = [v for v in re.findall(r"\$\{(\w+)\}", raw) if v not in env]
    if missing:
        raise DataError(f"dataset '{card.name}': path {raw!r} needs the environment variable {missing[0]} "
                        f"(e.g. export {missing[0]}=/path/to/shared/data) or --dataset-path")
    path = Path(re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], raw)).expanduser()
    if not path.is_dir():
        raise DataError(f"dataset '{card.name}': folder not found: {path}")
    return path


# ---------------------------------------------------------------- readers

def _read_json(path: Path):
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: malformed JSON ({e})") from None


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
    inter, item = root / "ml-100k.inter", root / "ml-100k.item"
    if not inter.is_file():
        raise DataError(f"dataset '{card.name}': missing file {inter}")
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
            rows.append((cols[iu], cols[ii], float(cols[it]), n))
    rows.sort(key=lambda r: (r[0], r[2], r[3]))  # chronological, file order breaks ties
    seqs: dict[str, list[str]] = {}
    for u, i, _, _ in rows:
        seqs.setdefault(u, []).append(i)
    text: dict[str, str] = {}
    if item.is_file():
        with open(item, encoding="latin-1") as f:
            header = [h.split(":")[0] for h in f.readline().rstrip("\n").split("\t")]
            for line in f:
                cols = dict(zip(header, line.rstrip("\n").split("\t")))
                rec = {"title": cols.get("movie_title", ""), "year": cols.get("release_year", ""),
                       "genres": cols.get("class", "").replace(" ", ", ")}
                text[cols["item_id"]] = _item_text(rec, card.text_fields or ["title", "year", "genres"])
    return RawData(seqs, text, source_files=[inter] + ([item] if item.is_file() else []))


def load_lcrec(card: DatasetCard, root: Path) -> RawData:
    prefix = card.prefix or root.name
    inter = root / f"{prefix}.inter.json"
    if not inter.is_file():
        raise DataError(f"dataset '{card.name}': missing file {inter}")
    obj = _read_json(inter)
    if not isinstance(obj, dict):
        raise DataError(f"{inter}: expected {{user: [item, ...]}}, got {type(obj).__name__}")
    seqs = {}
    for u, items in obj.items():
        if not isinstance(items, list):
            raise DataError(f"{inter}: user {u!r}: expected a list of item ids, got {type(items).__name__}")
        seqs[str(u)] = [str(i) for i in items]
    files = [inter]
    all_items = {i for s in seqs.values() for i in s}
    text: dict[str, str] = {}
    item_file = root / f"{prefix}.item.json"
    if item_file.is_file():
        files.append(item_file)
        meta = _read_json(item_file)
        for i, rec in meta.items():
            if not isinstance(rec, dict):
                raise DataError(f"{item_file}: item {i!r}: expected an object with text fields")
            text[str(i)] = _item_text(rec, card.text_fields or ["title"])
    attrs: dict[str, list[int]] = {}
    attr_file = root / f"{prefix}.item2attributes.json"
    if attr_file.is_file():
        files.append(attr_file)
        attrs = {str(k): [int(a) for a in v] for k, v in _read_json(attr_file).items()}
    sids = None
    index_file = root / f"{prefix}.index.json"
    if index_file.is_file():
        files.append(index_file)
        sids = {str(k): list(v) for k, v in _read_json(index_file).items()}
        unknown = sorted(set(sids) - all_items, key=lambda s: (len(s), s))
        missing = sorted(all_items - set(sids), key=lambda s: (len(s), s))
        if missing:
            raise DataError(f"{index_file}: no SID for item id {missing[0]!r} used in {inter.name} "
                            f"({len(missing)} items missing)")
        if unknown:
            raise DataError(f"{index_file}: unknown item id {unknown[0]!r} (not in {inter.name}; "
                            f"{len(unknown)} unknown ids)")
    return RawData(seqs, text, attrs, sids, files)


def load_amazon_raw(card: DatasetCard, root: Path) -> RawData:
    if not card.reviews:
        raise DataError(f"dataset card '{card.name}': format amazon_raw needs 'reviews' (a .json.gz file name)")
    reviews = root / card.reviews
    if not reviews.is_file():
        raise DataError(f"dataset '{card.name}': missing file {reviews}")
    events: dict[str, list[tuple[int, int, str]]] = {}
    for n, r in enumerate(_iter_json_lines(reviews)):
        user = r.get("reviewerID") or r.get("user_id")
        item = r.get("asin") or r.get("parent_asin")
        ts = r.get("unixReviewTime", r.get("timestamp"))
        if user is None or item is None or ts is None:
            raise DataError(f"{reviews}: record {n + 1} lacks reviewerID/asin/unixReviewTime")
        events.setdefault(str(user), []).append((int(ts), n, str(item)))
    seqs = {u: [i for _, _, i in sorted(ev)] for u, ev in events.items()}
    text: dict[str, str] = {}
    files = [reviews]
    if card.meta:
        meta = root / card.meta
        if not meta.is_file():
            raise DataError(f"dataset '{card.name}': missing file {meta}")
        files.append(meta)
        fields = card.text_fields or ["title", "brand", "categories"]
        for r in _iter_json_lines(meta):
            if "asin" in r:
                if "category" in r and "categories" not in r:  # 2018 layout
                    r["categories"] = r["category"]
                text[str(r["asin"])] = _item_text(r, fields)
    return RawData(seqs, text, source_files=files)


LOADERS = {"recbole_ml100k": load_recbole_ml100k, "lcrec": load_lcrec, "amazon_raw": load_amazon_raw}


def load_raw(card: DatasetCard, path_override: str | None = None) -> RawData:
    return LOADERS[card.format](card, resolve_path(card, path_override))
