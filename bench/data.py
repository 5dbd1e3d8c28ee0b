"""Prepared, cached, fingerprinted shared data: the only thing methods see.

card -> raw loader -> k-core -> internal ids -> leave-one-out -> item text -> embeddings
-> SIDs (+ trie) = :class:`SIDData`, cached under ``$REASONREC_CACHE`` (default
``~/.cache/reasonrec``) in a folder named by the fingerprint of inputs + settings.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from bench import loaders, sids as sidlib
from bench.overrides import deep_merge
from bench.sid_index import check_index
from bench.specs import DataSettings, DatasetCard, SIDSettings, validated
from bench.split import kcore, leave_one_out, train_prefixes

FORMAT_VERSION = 1


def cache_root() -> Path:
    return Path(os.environ.get("REASONREC_CACHE", Path.home() / ".cache" / "reasonrec"))


@dataclass
class Split:
    """Histories (internal item ids, oldest first, truncated) and targets for one split."""

    users: np.ndarray
    histories: list[list[int]]
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, idx) -> "Split":
        idx = np.asarray(idx)
        return Split(self.users[idx], [self.histories[i] for i in idx], self.targets[idx])


class SIDData:
    """Users' chronological sequences over internal item ids 0..n_items-1, item text and SIDs."""

    def __init__(self, name: str, fingerprint: str, settings: DataSettings, sequences: list[np.ndarray],
                 user_ids: list[str], item_ids: list[str], item_text: list[str], codes: np.ndarray,
                 codebook_size: int, stats: dict, sid_groups: np.ndarray | None = None):
        self.name, self.fingerprint, self.settings = name, fingerprint, settings
        self.sequences, self.user_ids, self.item_ids, self.item_text = sequences, user_ids, item_ids, item_text
        self.codes, self.codebook_size, self.stats = codes, codebook_size, stats
        #: per item, its SID's id *before* collisions were resolved (items that shared a SID share it): the
        #: SID-level metrics count them as one answer (:func:`bench.metrics.group_ranks`). None: a cache
        #: written before it was recorded, whose SIDs could not be rebuilt identically
        self.sid_groups = sid_groups

    n_users = property(lambda self: len(self.sequences))
    n_items = property(lambda self: len(self.item_ids))
    sid_levels = property(lambda self: self.codes.shape[1])
    max_history = property(lambda self: self.settings.max_history)

    def sid(self, item: int) -> str:
        return sidlib.sid_string(self.codes[item])

    def sid_vocabulary(self) -> list[str]:
        return [sidlib.sid_token(l, c) for l in range(self.sid_levels) for c in range(self.codebook_size)]

    @cached_property
    def trie(self) -> sidlib.SIDTrie:
        return sidlib.SIDTrie.build(self.codes, self.codebook_size)

    def split(self, which: str) -> Split:
        if which not in ("valid", "test"):
            raise ValueError(f"split must be 'valid' or 'test', got {which!r}")
        pairs = [leave_one_out(s.tolist(), self.max_history)[which] for s in self.sequences]
        return Split(np.arange(self.n_users), [h for h, _ in pairs], np.array([t for _, t in pairs], dtype=np.int64))

    def train_sequences(self) -> list[list[int]]:
        """Training part of every user (validation and test targets removed)."""
        return [s[:-2].tolist() for s in self.sequences]

    def train_samples(self, cap: int | None = None, seed: int = 0) -> Split:
        """Every prefix of every training sequence -> next item; ``cap`` keeps a random subset."""
        users, hist, tgt = [], [], []
        for u, s in enumerate(self.sequences):
            for h, t in train_prefixes(s.tolist(), self.max_history):
                users.append(u), hist.append(h), tgt.append(t)
        sp = Split(np.array(users, dtype=np.int64), hist, np.array(tgt, dtype=np.int64))
        if cap is not None and cap < len(sp):
            idx = np.sort(np.random.default_rng(seed).choice(len(sp), cap, replace=False))
            sp = sp.subset(idx)
        return sp

    def item_popularity(self) -> np.ndarray:
        counts = np.zeros(self.n_items, dtype=np.int64)
        for s in self.sequences:
            np.add.at(counts, s[:-2], 1)
        return counts

    # ------------------------------------------------------------ persistence
    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        lengths = np.array([len(s) for s in self.sequences], dtype=np.int64)
        flat = np.concatenate(self.sequences) if self.sequences else np.zeros(0, dtype=np.int64)
        extra = {"sid_groups": self.sid_groups} if self.sid_groups is not None else {}
        np.savez(folder / "arrays.npz", lengths=lengths, flat=flat, codes=self.codes, **extra)
        (folder / "items.json").write_text(json.dumps({"users": self.user_ids, "items": self.item_ids,
                                                        "text": self.item_text}))
        meta = {"format_version": FORMAT_VERSION, "name": self.name, "fingerprint": self.fingerprint,
                "settings": self.settings.model_dump(mode="json"), "codebook_size": self.codebook_size,
                "stats": self.stats}
        (folder / "meta.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, folder: Path) -> "SIDData":
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{folder}: cache format {meta.get('format_version')} != {FORMAT_VERSION}")
        arr = np.load(folder / "arrays.npz")
        items = json.loads((folder / "items.json").read_text())
        seqs = np.split(arr["flat"], np.cumsum(arr["lengths"])[:-1]) if len(arr["lengths"]) else []
        return cls(meta["name"], meta["fingerprint"], DataSettings(**meta["settings"]), list(seqs),
                   items["users"], items["items"], items["text"], arr["codes"], meta["codebook_size"],
                   meta["stats"], arr["sid_groups"] if "sid_groups" in arr.files else None)


# ---------------------------------------------------------------- preparation

def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_DIGESTS: dict[tuple, str] = {}


def files_digest(files: list[Path]) -> str:
    """The data files' contents, by file name (not path: a copy elsewhere is the same data), as 16 hex digits;
    part of a run id when they are not the card's own files (:meth:`bench.specs.RunSpec.run_id`). Each file is
    hashed once per process while its size and modification time stay the same."""
    parts = {}
    for p in files:
        st = Path(p).stat()
        key = (str(Path(p).resolve()), st.st_size, st.st_mtime_ns)
        if key not in _DIGESTS:
            _DIGESTS[key] = _file_digest(Path(p))
        parts[Path(p).name] = _DIGESTS[key]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def settings_for(card: DatasetCard, overrides: dict | None) -> DataSettings:
    """The card's data settings < the run's overrides (``data.*``), validated."""
    return validated(DataSettings, deep_merge(card.data.model_dump(), overrides or {}),
                     f"data settings for dataset '{card.name}'", prefix="data.")


def fingerprint(card: DatasetCard, settings: DataSettings, files: list[Path]) -> str:
    payload = {
        "format_version": FORMAT_VERSION,
        "card": card.model_dump(mode="json", include={"name", "format", "prefix", "reviews", "meta", "text_fields"}),
        "settings": settings.model_dump(mode="json"),
        "files": {p.name: _file_digest(p) for p in files},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def data_fingerprint(dataset: str, data_overrides: dict | None = None, *, path: str | None = None) -> str:
    """The fingerprint :func:`prepare` would give the data (the files as they are now, the settings, the
    data code's format version), without building anything: the raw files are read, nothing is embedded."""
    card = loaders.load_card(dataset)
    settings = settings_for(card, data_overrides)
    return fingerprint(card, settings, loaders.load_raw(card, path).source_files)


def prepare(dataset: str | DatasetCard, data_overrides: dict | None = None, *, path: str | None = None,
            progress: bool = True, log=print, force: bool = False) -> SIDData:
    """Build (or load from cache) the shared data for ``dataset`` (a card, as a resolved spec carries it, or a
    card name or path)."""
    card = dataset if isinstance(dataset, DatasetCard) else loaders.load_card(dataset)
    settings = settings_for(card, data_overrides)
    raw = loaders.load_raw(card, path)
    index = None
    if settings.sids.source == "precomputed":  # before the cache: an explicit sids.levels must match the index
        index = check_index(card, settings, raw, data_overrides)
    fp = fingerprint(card, settings, raw.source_files)
    folder = cache_root() / "data" / f"{card.name}-{fp}"
    if folder.is_dir() and (folder / "meta.json").is_file() and not force:
        data = SIDData.load(folder)
        if data.sid_groups is None:  # a cache from before the SID groups were recorded
            _add_sid_groups(data, folder, card, settings, raw, fp, index, log=log, progress=progress)
        data.stats["source_files"] = [str(p) for p in raw.source_files]  # where it was read this time
        return data
    t0 = time.time()
    data = build(card, settings, raw, fp, progress=progress, log=log, overrides=data_overrides, index=index)
    data.stats["source_files"] = [str(p) for p in raw.source_files]
    data.stats["prepare_seconds"] = round(time.time() - t0, 2)
    # write to a temporary folder then rename, so a crash never leaves a half cache
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        data.save(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return data


def _add_sid_groups(data: SIDData, folder: Path, card: DatasetCard, settings: DataSettings, raw, fp: str, index,
                    *, log, progress: bool) -> None:
    """Record the pre-resolution SID groups of a cache written before they were: from the index for
    precomputed SIDs; else by building the data again, kept only when it gives the cached SIDs exactly (the
    committed rows were made on those), so a cache is never silently changed."""
    if settings.sids.source == "precomputed":
        data.sid_groups = sidlib.sid_groups(np.array([index[i] for i in data.item_ids]))
    else:
        log(f"dataset '{card.name}': the cache predates SID groups; rebuilding the SIDs once to recover them")
        fresh = build(card, settings, raw, fp, progress=progress, log=log, index=index)
        if not np.array_equal(fresh.codes, data.codes):
            log(f"warning: dataset '{card.name}': rebuilt SIDs differ from the cached ones; SID-level metrics are "
                f"not reported for this cache (prepare it again with force to get them, and new run results)")
            return
        data.sid_groups = fresh.sid_groups
    np.savez(folder / ".arrays.tmp.npz", lengths=np.array([len(s) for s in data.sequences], dtype=np.int64),
             flat=np.concatenate(data.sequences), codes=data.codes, sid_groups=data.sid_groups)
    os.replace(folder / ".arrays.tmp.npz", folder / "arrays.npz")


def build(card: DatasetCard, settings: DataSettings, raw: loaders.RawData, fp: str, *,
          progress: bool = True, log=print, overrides: dict | None = None, index: dict | None = None) -> SIDData:
    """``overrides``: the data overrides ``settings`` came from (only to tell an explicit
    ``sids.levels`` from the default, see :func:`bench.sid_index.check_index`); ``index``: the checked
    precomputed index (checked here when not given)."""
    n_raw_users = len(raw.sequences)
    n_raw_inter = sum(len(s) for s in raw.sequences.values())
    seqs = kcore(raw.sequences, settings.kcore)
    kept = sum(len(s) for s in seqs.values()) / max(n_raw_inter, 1)
    if settings.kcore and kept < 0.5:  # e.g. a catalog that is k-core on users only: items then cascade away
        log(f"warning: dataset '{card.name}': the {settings.kcore}-core filter keeps {kept:.0%} of the interactions "
            f"({len(seqs):,} of {n_raw_users:,} users); if the data are already filtered, set data.kcore=0")
    short = [u for u, s in seqs.items() if len(s) < settings.min_user_interactions]
    for u in short:
        del seqs[u]
    if not seqs:
        raise loaders.DataError(f"dataset '{card.name}': no user has >= {max(settings.kcore, settings.min_user_interactions)} "
                                f"interactions after filtering ({n_raw_users} users before)")
    # internal ids: items in order of first appearance over users sorted by raw id (deterministic)
    user_ids = sorted(seqs, key=lambda u: (len(u), u))
    item_index: dict[str, int] = {}
    for u in user_ids:
        for i in seqs[u]:
            item_index.setdefault(i, len(item_index))
    item_ids = list(item_index)
    sequences = [np.array([item_index[i] for i in seqs[u]], dtype=np.int64) for u in user_ids]
    item_text = [raw.item_text.get(i, "") for i in item_ids]
    n_items = len(item_ids)
    s = settings.sids
    stats: dict = {"users": len(user_ids), "items": n_items, "interactions": int(sum(len(x) for x in sequences)),
                   "raw_users": n_raw_users, "raw_interactions": n_raw_inter,
                   "dropped_short_users": len(short), "kcore_kept_share": round(kept, 4), "sid_source": s.source}
    if s.source == "precomputed":
        index = index if index is not None else check_index(card, settings, raw, overrides)
        codes = np.array([index[i] for i in item_ids])
        stats["index_extra_items"] = raw.index_extra_items
        k = max(int(codes.max()) + 1, 256 if s.codebook_size == "auto" else s.codebook_size)
        cents = resid = None
    else:
        k = sidlib.auto_codebook_size(n_items) if s.codebook_size == "auto" else s.codebook_size
        if s.embedding == "text":
            empty = sum(1 for t in item_text if not t)
            if empty == n_items:
                raise loaders.DataError(
                    f"dataset '{card.name}' has no item text: use sids.embedding=attributes or collaborative, "
                    f"or sids.source=precomputed")
            log(f"embedding {n_items} item texts with {s.embedding_model} ({empty} empty)")
            x = sidlib.text_embeddings([t or "unknown item" for t in item_text], s.embedding_model, progress=progress)
        else:
            parts = []
            if s.embedding in ("attributes", "hybrid"):
                attributes = raw.attributes()  # read (and checked) only here
                if not attributes:
                    raise loaders.DataError(
                        f"dataset '{card.name}': sids.embedding={s.embedding} needs an item2attributes file")
                parts.append(sidlib.attribute_embeddings([attributes.get(i, []) for i in item_ids], seed=s.seed))
            if s.embedding in ("collaborative", "hybrid"):  # training interactions only
                parts.append(sidlib.collaborative_embeddings([q[:-2].tolist() for q in sequences], n_items, seed=s.seed))
            x = np.concatenate(parts, 1) / np.sqrt(len(parts))
        log(f"residual k-means: {s.levels} levels x {k} codes on {x.shape}")
        rq = sidlib.rq_kmeans(x, s.levels, k, seed=s.seed, max_iter=s.kmeans_iters)
        codes, cents, resid = rq.codes, rq.centroids[-1], rq.residual_last
    sid_groups = sidlib.sid_groups(codes)
    groups = sidlib.collision_groups(codes)
    stats["sid_collision_items"] = int(sum(len(g) for g in groups))
    stats["sid_collision_rate"] = round(stats["sid_collision_items"] / n_items, 6)
    codes, k = _resolve_collisions(card, s, codes, k, cents, resid, stats, log)
    stats["sid_levels"] = int(codes.shape[1])
    stats["codebook_size"] = int(k)
    stats["codebook_usage"] = [int(len(np.unique(codes[:, l]))) for l in range(codes.shape[1])]
    stats["unique_sids"] = int(len(np.unique(codes, axis=0)))
    return SIDData(card.name, fp, settings, sequences, user_ids, item_ids, item_text, codes.astype(np.int64),
                   int(k), stats, sid_groups)


def _resolve_collisions(card: DatasetCard, s: SIDSettings, codes: np.ndarray, k: int, cents, resid, stats: dict,
                        log) -> tuple[np.ndarray, int]:
    """Collision-free codes and the codebook size covering them.

    ``reassign`` gives exactly its codes whenever it succeeds. When a prefix has no free
    last-level code left (e.g. many items with one identical embedding: no training interaction,
    empty text), it falls back to :func:`bench.sids.extra_levels` on the k-means codes (the same
    codes as ``extra_code`` when one level suffices) and says so in ``stats``.
    """
    levels = codes.shape[1]
    stats["sid_collisions_resolved_by"] = s.collisions
    if s.collisions == "extra_code":
        if levels >= len(sidlib.LEVEL_LETTERS):
            raise loaders.DataError(f"dataset '{card.name}': sids.collisions=extra_code appends a level to {levels}, "
                                    f"but SIDs have at most {len(sidlib.LEVEL_LETTERS)}; set sids.levels to "
                                    f"{len(sidlib.LEVEL_LETTERS) - 1} or less")
        codes = sidlib.resolve_collisions(codes, k, "extra_code")
        return codes, max(k, int(codes[:, -1].max()) + 1)
    try:
        return sidlib.resolve_collisions(codes, k, "reassign", cents, resid), k
    except sidlib.CollisionError as e:
        reason = str(e).split(";")[0]
    try:
        out, new_k = sidlib.extra_levels(codes, k)
    except ValueError as e:
        raise loaders.DataError(f"dataset '{card.name}': SID {reason}, and {e}; set a larger sids.codebook_size "
                                f"(now {k}) or fewer sids.levels (now {levels})") from None
    stats["sid_collisions_resolved_by"] = "reassign->extra_level"
    stats["sid_extra_levels"] = int(out.shape[1] - levels)
    stats["sid_fallback_items"] = int((out[:, levels:] != 0).any(1).sum())
    stats["sid_fallback_reason"] = reason
    log(f"reassign ran out of codes ({reason}): appended {out.shape[1] - levels} SID level(s) instead")
    return out, new_k
