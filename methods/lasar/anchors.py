"""Stage-2 targets: the teacher CoT segmented where adjacent sentences' embeddings drop in similarity, and
each segment's anchor (the Stage-1 backbone's final hidden state at its last token), cached per Stage-1 entry."""
from __future__ import annotations

import hashlib
import json
import time

import numpy as np

from bench.atomic import atomic_torch_save
from bench.data import cache_root


class Anchors:
    """Mixin of :class:`methods.lasar.method.LASAR`: segments, their step labels and anchors."""

    def _segments(self, data, log=print) -> dict:
        from methods.lasar.segment import Segmenter, label_report

        st = self.cot_state(data)
        if "segments" not in st:
            t0 = time.time()
            seg = Segmenter(self.config.segmenter_model, self.config.segment_threshold, cache_root() / "lasar" / "emb")
            st["segments"] = seg.segments(st["cots"], progress=False)
            counts = np.array([len(s) for s in st["segments"]])
            st["labels"] = np.clip(counts, 1, self.config.max_steps)
            st["report"] = label_report(st["labels"], st["samples"].histories, st["teacher"].facts.category)
            log(f"lasar: {len(counts):,} teacher CoTs segmented in {time.time() - t0:.0f}s; segments per sample: "
                + ", ".join(f"{r['segments']}: {r['share']:.1%} (hist {r['hist_len']}, cat. div. {r['cat_div']})"
                            for r in st["report"]))
            warning = self.constant_depth_warning(st["labels"], counts)
            if warning:
                log(warning)
        return st

    def constant_depth_warning(self, labels, counts) -> str | None:
        """A warning when every sample has the same label: the policy head then learns one N for every user
        (the distribution itself is in the facts, ``segments``)."""
        labels = np.asarray(labels)
        if len(labels) == 0 or len(np.unique(labels)) > 1:
            return None
        n = int(labels[0])
        if n == 1:
            why = (f"every teacher CoT is one segment (one sentence, or no adjacent sentences' cosine below "
                   f"segment_threshold={self.config.segment_threshold} with {self.config.segmenter_model})")
        elif np.max(counts) > n:
            why = f"every teacher CoT has at least {n} segments (labels clipped to max_steps={n})"
        else:
            why = f"every teacher CoT has {n} segments"
        knob = "lower segment_threshold" if n == 1 else "raise segment_threshold or max_steps"
        return (f"lasar: warning: {why}: the policy head will learn N = {n} for every user and the latent depth "
                f"cannot adapt; check the teacher (teacher.kind) or {knob}")

    def _encode_anchors(self, bb, data, idx, seed: int = 0, batch_size: int = 64):
        """Final-layer hidden state at each segment's last token (prompt + segments, one forward per sample) of
        ``bb`` reading the CoT text (:meth:`text_reader`: a copy with the CoT words when ``bb`` has none):
        ``[len(idx), N_max, d]`` float16 on CPU, zeros past a sample's last segment."""
        import torch

        from bench.generative.prompts import left_pad, positions

        st = self._segments(data)
        model, enc = self.text_reader(bb, data, seed)
        model = model.to(self.device)
        n_max, d = self.config.max_steps, model.config.hidden_size
        out = torch.zeros(len(idx), n_max, d, dtype=torch.float16)
        model.eval()
        with torch.no_grad():
            for s in range(0, len(idx), batch_size):
                rows = idx[s:s + batch_size]
                seqs, ends = [], []
                for i in rows:
                    ids = list(self.reasoning_prompt(enc, st["samples"].histories[i]))
                    e = []
                    for seg in st["segments"][i][:n_max]:
                        ids += enc.text(seg)[: self.config.max_cot_tokens] or [bb.pad_id]
                        e.append(len(ids) - 1)
                    seqs.append(ids), ends.append(e)
                ids, mask = left_pad(seqs, bb.pad_id)
                hid = model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                            position_ids=positions(mask.to(self.device)), output_hidden_states=True).hidden_states[-1]
                shift = ids.shape[1] - np.array([len(q) for q in seqs])
                for r, e in enumerate(ends):
                    pos = torch.tensor([shift[r] + p for p in e])
                    out[s + r, :len(e)] = hid[r, pos].float().cpu().half()
        return out

    def _anchors(self, bb, data, stage_id: str, ctx) -> dict:
        """Anchors of every latent sample from the Stage-1 backbone, cached per Stage-1 entry."""
        import torch

        st = self._segments(data, ctx.log)
        if "anchors" in st and st.get("anchor_stage") == stage_id:
            return st
        # the CoT text itself: a teacher whose output changed (e.g. the text-free chain) makes new anchors
        cots = hashlib.sha1(json.dumps(st["cots"]).encode()).hexdigest()[:16]
        key = json.dumps({"stage": stage_id, "seg": [self.config.segmenter_model, self.config.segment_threshold],
                          "cots": cots,
                          "n_max": self.config.max_steps, "samples": self.config.cot_samples,
                          "teacher": self.config.teacher.model_dump(), "data": data.fingerprint,
                          "reader": "stage1 + markers + CoT words (a copy)"}, sort_keys=True)
        path = cache_root() / "lasar" / "anchors" / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"
        if path.is_file():
            st["anchors"] = torch.load(path, weights_only=True)
            ctx.log(f"lasar: anchors reused from {path}")
        else:
            t0 = time.time()
            st["anchors"] = self._encode_anchors(bb, data, np.arange(len(st["cots"])), ctx.seed)
            atomic_torch_save(st["anchors"], path)
            ctx.log(f"lasar: anchors of {len(st['cots']):,} samples encoded in {time.time() - t0:.0f}s -> {path}")
        st["anchor_stage"] = stage_id
        return st

    @staticmethod
    def anchor_signal(anchors, labels, first_codes, max_pairs: int = 20000, seed: int = 0) -> dict:
        """Do anchors carry signal? Mean cosine (centred) between the last-segment anchors of sample
        pairs whose next items share a first-level SID code, vs random pairs."""
        import torch

        n = len(anchors)
        labels, first = np.asarray(labels)[:n], np.asarray(first_codes)[:n]
        last = anchors[torch.arange(n), torch.as_tensor(labels - 1)].float()
        last = torch.nn.functional.normalize(last - last.mean(0), dim=-1)
        rng = np.random.default_rng(seed)
        order = np.argsort(first, kind="stable")
        same = [g for g in np.split(order, np.flatnonzero(np.diff(first[order])) + 1) if len(g) > 1]
        if not same:
            return {}
        pairs = [rng.choice(same[rng.integers(len(same))], 2, replace=False) for _ in range(max_pairs)]
        sa, sb = np.array(pairs).T
        ra, rb = rng.integers(0, n, max_pairs), rng.integers(0, n, max_pairs)
        ok = ra != rb
        cos = lambda x, y: float((last[x] * last[y]).sum(-1).mean())  # noqa: E731
        return {"same_first_code": round(cos(sa, sb), 4), "random": round(cos(ra[ok], rb[ok]), 4)}
