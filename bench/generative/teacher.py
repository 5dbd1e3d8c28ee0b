"""Teacher CoT, shared by the methods that learn from reasoning text (LASAR: anchors and Stage 1;
GREAM: CoT-SFT targets): reasoning text per training sample, written from the true next item but never
naming it. Three teachers behind one interface (``teacher.kind``):

- ``metadata`` (offline default): deterministic text in the App. E.2 structure (behavioural evidence
  -> latent preferences -> intent and goal -> recommendation formulation -> denoised sequence
  rewriting), written from the history items' and the true next item's metadata (titles,
  categories, brands, years; on datasets without text, SID-prefix clusters). Its depth grows with
  the history's length and diversity (the paper's Table 8), never by a random draw, and it never
  writes the target's title or SID.
- ``openai``: any OpenAI-compatible chat endpoint, the GREAM-style instruction (history + true
  next item, reason as if it were unknown), resumable on-disk cache, retries with back-off and a
  request-rate limit.
- ``file``: a user's JSONL ``{"user": <user id>, "target": <item id>, "cot": "..."}`` (external ids).

Every teacher's output is cached on disk per dataset and sample under ``$REASONREC_CACHE/cot/teacher/`` (files
made under the earlier ``lasar/cot/`` are copied over once).
"""
from __future__ import annotations

import hashlib
import html
import json
import os
import re
import time
from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bench.atomic import atomic_write_text
from bench.generative.cluster_chain import cluster_cot


class TeacherConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["metadata", "openai", "file"] = "metadata"
    # openai
    base_url: str = Field("https://api.openai.com/v1", description="OpenAI-compatible endpoint (…/v1)")
    model: str = "gpt-4o-mini"
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the key")
    requests_per_minute: float = Field(60.0, gt=0)
    max_retries: int = Field(5, ge=0)
    timeout_s: float = Field(60.0, gt=0)
    max_tokens: int = Field(400, ge=16)
    # file
    path: str | None = Field(None, description="JSONL of {user, target, cot} (kind=file)")


def sample_key(user: int, history, target: int) -> str:
    """A training sample's cache key: user, target and the history itself (internal ids)."""
    h = hashlib.sha1(",".join(map(str, history)).encode()).hexdigest()[:10]
    return f"{user}:{target}:{h}"


# ------------------------------------------------------------------ item metadata
class ItemFacts:
    """Titles, categories and brands parsed from the prepared item text (``field: value; ...``). On a
    catalog without text or without any category (``chain`` "clusters") the metadata teacher writes
    :func:`~bench.generative.cluster_chain.cluster_cot`, which reads the SID-prefix clusters and never names a code."""

    def __init__(self, data):
        self.n = data.n_items
        self.codes = [tuple(int(c) for c in data.codes[i]) for i in range(self.n)]
        self.has_text = any(str(t).strip() for t in data.item_text)
        self.title, self.category, self.brand, self.year = [], [], [], []
        self.has_categories = False
        for i in range(self.n):
            text = data.item_text[i] if i < len(data.item_text) else ""
            f = _fields(text)
            cats = [c.strip() for c in (f.get("categories") or f.get("genres") or "").split(",") if c.strip()]
            self.title.append(f.get("title") or (text if text and ":" not in text else ""))
            # the most specific category; never a name derived from the item's SID (it would tell the target's
            # code): an item without one is "uncategorised", a catalog without any gets :func:`cluster_cot`
            self.category.append(cats[-1] if cats else "uncategorised")
            self.has_categories = self.has_categories or bool(cats)
            self.brand.append(f.get("brand", ""))
            self.year.append(f.get("year", ""))
        self.sid = data.sid
        #: which chain the metadata teacher writes: "text" (titles, categories, brands) or, on a catalog without
        #: text or without any category (Sports: keywords only), "clusters" (:func:`cluster_cot`)
        self.chain = "text" if self.has_text and self.has_categories else "clusters"

    def name(self, i: int) -> str:
        return self.title[i] or f"the {self.category[i]} item"


_FIELD = re.compile(r"(?:^|; )([a-z_]+): ")


def _fields(text: str) -> dict:
    """``title: ...; categories: ...; brand: ...`` (bench.loaders' item text) -> fields; a value may
    itself contain "; " (only known-looking ``name: `` keys start a field)."""
    text = html.unescape(text or "")
    marks = list(_FIELD.finditer(text))
    return {m.group(1): text[m.end(): marks[n + 1].start() if n + 1 < len(marks) else len(text)].strip()
            for n, m in enumerate(marks)}


def _short(title: str, words: int = 8) -> str:
    w = title.split()
    return " ".join(w[:words]) + ("..." if len(w) > words else "")


def _join(xs: list[str]) -> str:
    xs = [x for x in xs if x]
    if len(xs) <= 1:
        return "".join(xs)
    return ", ".join(xs[:-1]) + " and " + xs[-1]


def metadata_cot(facts: ItemFacts, history: list[int], target: int) -> str:
    """The deterministic teacher. Sentences group into the five App. E.2 stages; how many sentences a
    stage gets depends on the history (its length, its distinct categories and brands)."""
    if facts.chain == "clusters":
        return cluster_cot(facts, history, target)
    h = list(history)
    banned = {facts.title[target]} if facts.title[target] else set()

    def nm(i):  # never the target's title, even when a history item shares it
        return "an item bought before" if facts.title[i] in banned else _short(facts.name(i))

    cats = [facts.category[i] for i in h]
    cat_count = Counter(cats)
    brands = Counter(b for b in (facts.brand[i] for i in h) if b)
    t_cat, t_brand = facts.category[target], facts.brand[target]
    s: list[str] = []
    # 1. behavioural evidence
    recent = h[-3:][::-1]
    s.append(f"The user most recently interacted with {_join([nm(i) for i in recent])}.")
    if len(h) > 6:
        s.append(f"Earlier in the history they chose {_join([nm(i) for i in h[:2]])}, "
                 f"{len(h)} interactions in total.")
    # 2. latent preferences
    top = cat_count.most_common(2)
    s.append(f"Their strongest interest is {top[0][0]}, present in {top[0][1]} of {len(h)} items.")
    if len(top) > 1 and len(cat_count) >= 3:
        s.append(f"A secondary interest is {top[1][0]}, and the history spans {len(cat_count)} different kinds of items.")
    if brands and brands.most_common(1)[0][1] >= 2:
        b, n = brands.most_common(1)[0]
        s.append(f"They show loyalty to the brand {b}, chosen {n} times.")
    # 3. intent and goal
    if t_cat in cat_count:
        s.append(f"The recent pattern suggests the user intends to continue with {t_cat}.")
    else:
        s.append(f"The recent pattern suggests a new need beyond {top[0][0]}: the goal shifts towards {t_cat}.")
    # 4. recommendation formulation
    if t_brand and t_brand in brands:
        s.append(f"So the next item should be a {t_cat} product from the familiar brand {t_brand}.")
    elif t_brand:
        s.append(f"So the next item should be a {t_cat} product, possibly from a brand new to this user.")
    else:
        s.append(f"So the next item should be a {t_cat} product that fits this goal.")
    # 5. denoised sequence rewriting
    if len(h) >= 4:
        keep = [i for i in h if facts.category[i] == t_cat][-3:] or h[-2:]
        s.append(f"Keeping only the relevant steps, the sequence reads {' then '.join(nm(i) for i in keep)}.")
    return " ".join(s)


# ------------------------------------------------------------------ the teachers
class Teacher:
    """``cots(samples) -> list[str]`` for ``samples`` = [(user, history, target)] (internal ids),
    cached on disk in one JSON file per dataset and teacher configuration."""

    def __init__(self, cfg: TeacherConfig, data, cache_dir: Path, legacy_dir: Path | None = None):
        """``legacy_dir``: where earlier versions kept the same cache file (copied over once, if found there)."""
        self.cfg, self.data = cfg, data
        self.facts = ItemFacts(data)
        ident = cfg.model_dump(exclude={"max_retries", "timeout_s", "requests_per_minute", "api_key_env"})
        #: what a stage trained on these CoTs must be keyed by beyond the teacher's settings ({} for the text
        #: chain, whose cached CoTs and stage entries predate this field)
        self.identity = {"cot_chain": "clusters-2"} if cfg.kind == "metadata" and self.facts.chain == "clusters" else {}
        if self.identity:  # not the cached CoTs of the old chain, which named the target's first SID code
            ident["text_free_chain"] = 2
        digest = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:10]
        self.path = Path(cache_dir) / f"{data.name}-{data.fingerprint[:12]}-{cfg.kind}-{digest}.jsonl"
        old = Path(legacy_dir) / self.path.name if legacy_dir is not None else None
        if old is not None and old.is_file() and not self.path.is_file():
            atomic_write_text(self.path, old.read_text())

    def _load_cache(self) -> dict[str, str]:
        out = {}
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                    out[rec["key"]] = rec["cot"]
                except (json.JSONDecodeError, KeyError):
                    continue  # a line cut by a crash: redone
        return out

    def cots(self, samples, progress: bool = False, log=print) -> list[str]:
        cache = self._load_cache()
        keys = [sample_key(u, h, t) for u, h, t in samples]
        todo = [(k, s) for k, s in zip(keys, samples) if k not in cache]
        if todo:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.cfg.kind == "metadata":
                new = {k: metadata_cot(self.facts, h, t) for k, (u, h, t) in todo}
                self._append(new)
            elif self.cfg.kind == "file":
                new = self._from_file(todo)
                self._append(new)
            else:
                new = self._from_endpoint(todo, progress, log)  # appends as it goes (resumable)
            cache.update(new)
        return [cache[k] for k in keys]

    def _append(self, new: dict[str, str]) -> None:
        with open(self.path, "a") as f:
            for k, v in new.items():
                f.write(json.dumps({"key": k, "cot": v}) + "\n")

    # -- file
    def _from_file(self, todo) -> dict[str, str]:
        from bench.loaders import DataError

        if not self.cfg.path:
            raise DataError("lasar: teacher.kind=file needs teacher.path (a JSONL of {user, target, cot})")
        path = Path(self.cfg.path).expanduser()
        if not path.is_file():
            raise DataError(f"{path}: teacher CoT file not found (teacher.path)")
        given: dict[tuple[str, str], str] = {}
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {n}: not JSON ({e.msg})") from None
            if not isinstance(rec, dict) or not all(k in rec for k in ("user", "target", "cot")):
                raise DataError(f"{path}: line {n}: expected an object with user, target and cot")
            if not isinstance(rec["cot"], str) or not rec["cot"].strip():
                raise DataError(f"{path}: line {n}: 'cot' must be a non-empty string")
            given[(str(rec["user"]), str(rec["target"]))] = rec["cot"]
        out, missing = {}, []
        for k, (u, h, t) in todo:
            key = (str(self.data.user_ids[u]), str(self.data.item_ids[t]))
            if key in given:
                out[k] = given[key]
            else:
                missing.append(key)
        if missing:
            raise DataError(f"{path}: no CoT for {len(missing)} training sample(s), e.g. user {missing[0][0]!r} "
                            f"target {missing[0][1]!r} (teacher.kind=file needs one line per sample)")
        return out

    # -- openai-compatible endpoint
    def prompt(self, history: list[int], target: int) -> list[dict]:
        f = self.facts
        hist = "\n".join(f"{n + 1}. {f.name(i)} ({f.category[i]}{', ' + f.brand[i] if f.brand[i] else ''})"
                         for n, i in enumerate(history))
        instruction = (
            "You are a recommendation analyst. Given a user's chronological purchase history and the item "
            "they actually chose next, write the reasoning that would lead to it, as if the next item were "
            "unknown. Follow five stages, one short paragraph each: behavioural evidence; latent preferences; "
            "intent and goal; recommendation formulation; denoised sequence rewriting. Never name the next item.")
        user = (f"History:\n{hist}\n\nNext item (do not name it): a {f.category[target]} product"
                f"{' by ' + f.brand[target] if f.brand[target] else ''}.")
        return [{"role": "system", "content": instruction}, {"role": "user", "content": user}]

    def _from_endpoint(self, todo, progress: bool, log) -> dict[str, str]:
        import urllib.error
        import urllib.request

        from tqdm.auto import tqdm

        key = os.environ.get(self.cfg.api_key_env, "")
        url = self.cfg.base_url.rstrip("/") + "/chat/completions"
        gap = 60.0 / self.cfg.requests_per_minute
        out: dict[str, str] = {}
        last = 0.0
        for k, (u, h, t) in tqdm(todo, desc="teacher CoT", disable=not progress):
            body = json.dumps({"model": self.cfg.model, "messages": self.prompt(h, t),
                               "max_tokens": self.cfg.max_tokens, "temperature": 0}).encode()
            for attempt in range(self.cfg.max_retries + 1):
                wait = last + gap - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                last = time.monotonic()
                req = urllib.request.Request(url, data=body, headers={
                    "Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})})
                try:
                    with urllib.request.urlopen(req, timeout=self.cfg.timeout_s) as resp:
                        text = json.loads(resp.read())["choices"][0]["message"]["content"].strip()
                    break
                except urllib.error.HTTPError as e:
                    if e.code not in (408, 409, 429) and e.code < 500 or attempt == self.cfg.max_retries:
                        raise RuntimeError(f"teacher endpoint {url}: HTTP {e.code} {e.reason}") from None
                except (urllib.error.URLError, TimeoutError, KeyError, IndexError, json.JSONDecodeError) as e:
                    if attempt == self.cfg.max_retries:
                        raise RuntimeError(f"teacher endpoint {url}: {e}") from None
                time.sleep(min(2.0 ** attempt * 0.5, 30.0))  # back-off
            out[k] = text
            self._append({k: text})  # resumable: each answer is on disk before the next request
        return out
