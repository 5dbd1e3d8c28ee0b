"""The teacher-CoT machinery shared by the methods that learn from reasoning text (LASAR, GREAM).

Stage 1 is the shared packed seqrec SFT, plus (``stage1_cot_samples`` > 0, the text pass) a causal-LM pass over
teacher CoTs in the reasoning layout ``<rec> history <lat_s> CoT <lat_e> answer``, so that a backbone built from
a config reads the CoT language. GREAM has the text pass by default; LASAR's default Stage 1 has none: it is
the plain seqrec recipe, the same stage-cache entry as MiniOneRec's SFT, and the reasoning markers join the
vocabulary after it (:meth:`CoTMethod.vocabulary_phase`; the CoT words only join the copy that reads the CoT
for the anchors, :meth:`CoTMethod.text_reader`). LASAR puts its latent loop between the
two markers; GREAM generates the CoT text there. With the same recipe, fields and tokens they share one
Stage-1 entry (tested).

The CoT samples are ``cot_samples`` random training prefixes (a fixed seed) with their teacher CoT
(:mod:`bench.generative.teacher`, cached on disk per dataset and sample).
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import ClassVar

from pydantic import AliasChoices, Field

from bench.generative.config import GenerativeConfig
from bench.generative.method import GenerativeMethod, Phase
from bench.generative.prompts import Example, PromptEncoder
from bench.generative.teacher import Teacher, TeacherConfig
from bench.generative.training import TrainConfig

#: the reasoning region's start and end markers (the latent loop's for LASAR, the think block's for GREAM)
REASON_START, REASON_END = "<lat_s>", "<lat_e>"
#: the fields Stage 1 reads beyond the generative ones
STAGE1_FIELDS = frozenset({"teacher", "cot_samples", "stage1_cot_samples", "max_cot_tokens"})
#: the seed of the CoT sample draw (fixed: every method and run sees the same CoT samples)
COT_SAMPLE_SEED = 12345


class CoTConfig(GenerativeConfig):
    teacher: TeacherConfig = TeacherConfig()
    cot_samples: int = Field(8000, ge=1, validation_alias=AliasChoices("cot_samples", "latent_samples"),
                             description="training samples with a teacher CoT (LASAR: anchors and Stage 2; GREAM: "
                                         "CoT-SFT); random subset of all prefixes. Was latent_samples (still read; "
                                         "run ids and stage keys hash it under that name: Method.renamed_settings)")
    stage1_cot_samples: int = Field(1500, ge=0, description="CoT text examples in Stage 1 (the text pass)")
    max_cot_tokens: int = Field(128, ge=8, description="teacher CoT longer than this is cut")
    # Stage 1: the shared packed SFT plus the CoT text pass (~1.5x an epoch's tokens): fewer epochs, a
    # longer guard than MiniOneRec's
    sft: TrainConfig = TrainConfig(epochs=14, lr=2e-3, batch_size=64, patience=5, warmup_ratio=0.02,
                                   max_minutes=45)


def cot_non_sft_fields(config_cls: type[CoTConfig]) -> set[str]:
    """A CoT method's fields Stage 1 does not read: everything its config adds to :class:`CoTConfig`,
    and the generative fields SFT never reads. Methods listing them this way share Stage-1 entries."""
    return set(config_cls.model_fields) - set(CoTConfig.model_fields) | set(GenerativeMethod.non_sft_fields)


class CoTMethod(GenerativeMethod):
    """A generative method trained on teacher CoT: Stage 1 (:meth:`sft_examples`) is the shared recipe
    above; :meth:`cot_state` has the CoT samples, their text and the teacher."""

    Config: ClassVar = CoTConfig
    sft_recipe = "cot-stage1"  # Stage 1 with the CoT text pass (GREAM's; LASAR's text-pass ablation)
    renamed_settings = {"cot_samples": "latent_samples"}
    non_sft_fields = cot_non_sft_fields(CoTConfig)

    @property
    def text_pass(self) -> bool:
        """Stage 1 has the CoT text pass (``stage1_cot_samples`` > 0); without it Stage 1 is the plain seqrec SFT
        (the same stage-cache entry as MiniOneRec's) and the reasoning markers (and, for a method that trains on
        CoT text, its words) join the vocabulary after it (:meth:`vocabulary_phase`)."""
        return self.config.stage1_cot_samples > 0

    def sft_is_seqrec(self) -> bool:
        return not self.text_pass

    def extra_special_tokens(self):
        base = super().extra_special_tokens()
        return [*base, REASON_START, REASON_END] if self.text_pass else base

    def uses_item_text(self) -> bool:
        return self.text_pass

    def with_reasoning_vocabulary(self, bb, data, seed: int, words: bool = True):
        """``bb`` with the reasoning markers and (``words``) the CoT words of a preset tokenizer (new embedding rows
        drawn under ``seed``; no id moves): what a Stage 1 without the text pass lacks. After a text-pass Stage 1
        ``bb`` is returned as is."""
        from bench.generative.backbone import extend_vocabulary

        if self.text_pass:  # Stage 1 was built with them (a rare word the text pass's cap left out stays out)
            return bb
        return extend_vocabulary(bb, corpus=self.cot_state(data)["cots"] if words else (),
                                 special=[REASON_START, REASON_END], max_vocab=self.config.backbone.max_vocab, seed=seed)

    def text_reader(self, bb, data, seed: int):
        """``(model, encoder)`` that read CoT text with ``bb``'s weights: ``bb`` itself when it has the CoT words
        (a text-pass Stage 1), else a copy with them added (:meth:`with_reasoning_vocabulary`): a method whose
        model never reads CoT text (LASAR: only its anchors do) keeps its vocabulary, and its output softmax,
        at Stage 1's size plus the two markers."""
        import copy

        from bench.generative.backbone import Backbone

        if self.text_pass:
            return bb.model, self._encoder(data, bb)
        twin = Backbone(copy.deepcopy(bb.model), bb.tokenizer, bb.sid_token_ids, bb.source)
        twin = self.with_reasoning_vocabulary(twin, data, seed)
        return twin.model, self._encoder(data, twin)

    def vocabulary_phase(self, data, ctx, words: bool = True) -> Phase:
        """The first middle phase: the Stage-1 model gets the reasoning markers and (``words``: a method that
        trains on CoT text, GREAM) the CoT words (:meth:`with_reasoning_vocabulary`: the same model and modules;
        a no-op after a text-pass Stage 1)."""

        def extend() -> dict:
            before = len(self.bb.tokenizer)
            bb = self.with_reasoning_vocabulary(self.bb, data, ctx.seed, words=words)
            if bb is self.bb:
                return {}
            self._adopt(bb, data, keep_modules=True)
            ctx.log(f"{self.info.name}: vocabulary {before:,} -> {len(bb.tokenizer):,} after Stage 1 (the reasoning "
                    f"markers{' and the teacher CoT words' if words else ''}, new embedding rows)")
            return {"vocabulary": {"stage1": before, "after": len(bb.tokenizer)}}

        return Phase("", extend)

    def extra_corpus(self, data):
        return self.cot_state(data)["cots"] if self.config.stage1_cot_samples else []

    def _tok(self, token: str) -> int:
        return self.bb.tokenizer.convert_tokens_to_ids(token)

    def cot_cache_dir(self) -> Path:
        from bench.data import cache_root

        return cache_root() / "cot"  # the teacher's CoT under teacher/ (shared by every CoT method)

    def cot_state(self, data) -> dict:
        """The CoT samples (``samples``), their teacher CoT (``cots``) and the ``teacher``; cached on the
        method per dataset. Methods add their own derived entries (segments, anchors)."""
        st = getattr(self, "_cot_state", None)
        if st is not None and st["fp"] == data.fingerprint:
            return st
        from bench.data import cache_root

        samples = data.train_samples(self.config.cot_samples, seed=COT_SAMPLE_SEED)
        teacher = Teacher(self.config.teacher, data, self.cot_cache_dir() / "teacher",
                          legacy_dir=cache_root() / "lasar" / "cot")
        self._cot_state = {"fp": data.fingerprint, "samples": samples, "teacher": teacher}
        self._cot_state["cots"] = self.teacher_cots(data, samples)
        return self._cot_state

    def cot_identity(self, data) -> dict:
        """What a stage trained on the teacher's CoTs is keyed by beyond the settings: the chain's identity
        (:attr:`bench.generative.teacher.Teacher.identity`; empty for the text chain, so older entries stay valid)."""
        return dict(self.cot_state(data)["teacher"].identity)

    def teacher_cots(self, data, samples) -> list[str]:
        """The teacher's CoT for any training samples (a :class:`~bench.data.Split`), cached like the rest."""
        teacher = self.cot_state(data)["teacher"]
        return teacher.cots([(int(u), list(h), int(t)) for u, h, t in
                             zip(samples.users, samples.histories, samples.targets)], progress=False)

    def reasoning_prompt(self, enc: PromptEncoder, history) -> list[int]:
        """The seqrec prompt followed by the reasoning start marker."""
        return [*enc.seqrec(history)[-(self.config.max_prompt_tokens - 1):], self._tok(REASON_START)]

    def cot_text(self, enc: PromptEncoder, cot: str) -> list[int]:
        return enc.text(cot)[: self.config.max_cot_tokens]

    def sft_examples(self, data, enc, rng: random.Random):
        """Stage 1: seqrec (packed in the compact style) + the CoT text pass."""
        examples = self.seqrec_sft_examples(data, enc, rng)
        n = min(self.config.stage1_cot_samples, self.config.cot_samples)
        if n:
            st = self.cot_state(data)
            e_tok = self._tok(REASON_END)
            for i in range(min(n, len(st["cots"]))):
                h, t = st["samples"].histories[i], int(st["samples"].targets[i])
                examples.append(Example(self.reasoning_prompt(enc, h),
                                        [*self.cot_text(enc, st["cots"][i]), e_tok, *enc.answer(t)], "cot"))
        return examples
