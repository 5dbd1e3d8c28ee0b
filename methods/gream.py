"""Explicit CoT (GREAM, the "GRRM" public code): CoT-SFT on the shared teacher CoT, two inference modes.

Training
1. **Stage 1** is the teacher-CoT Stage 1 LASAR uses (:mod:`bench.generative.cot`: packed seqrec SFT + a
   causal-LM pass over ``history <lat_s> CoT <lat_e> answer``): the same recipe, fields and tokens, so the
   two methods share one Stage-1 entry of the stage cache.
2. **CoT-SFT** (:meth:`middle_phases`, cached as a stage both modes share): GREAM's target format on every CoT
   sample -- the think block (teacher CoT), the rewritten history (the SIDs of the last ``rewrite_items``
   history items: the released code copies the history verbatim), then the answer SID -- mixed with
   ``direct_samples`` direct samples (history -> SID). In the compact layout the rewrite sits inside the
   reasoning region, before its end marker, so that the answer follows the end marker directly:
   ``<rec> history <lat_s> CoT rewrite <lat_e> SID``. Model selection: the run's protocol in the direct mode
   (one selection for both rows).

Inference (``mode``; two leaderboard rows from one trained model)
- ``direct``: the shared constrained beam search straight after the prompt (the paper's Table 1 row);
  the target's English scaffolding ("Let's rewrite user's purchase history:", ``<answer>`` tags) is not
  used in either prompt style: the reasoning markers and the SIDs delimit the parts
- ``reasoning``: greedy CoT text generation on the KV cache after ``<lat_s>`` (no repeated 4-grams) until the
  model writes ``<lat_e>`` or a SID token (where the rewrite starts) or ``max_think_tokens`` (default: the
  longest CoT text CoT-SFT trains + 8); the rewrite -- by definition the copy of the history's last items --
  and ``<lat_e>`` are then fed through the cache, and the shared constrained beam search (beam 50) continues
  from it (the paper's Table 4 row). Each user's generated text length is recorded (``per_user.json`` and the
  result's ``evaluation.by_stat.cot_tokens``).
"""
from __future__ import annotations

import time
from typing import Literal

from pydantic import Field

from bench.generative.cot import COT_SAMPLE_SEED, REASON_END, CoTConfig, CoTMethod, cot_non_sft_fields
from bench.generative.method import Phase
from bench.generative.prompts import Example, seqrec_examples
from bench.generative.training import TrainConfig, causal_lm_loss, train
from bench.method import MethodInfo
from bench.registry import register
from bench.specs import without_late_settings


class GREAMConfig(CoTConfig):
    mode: Literal["direct", "reasoning"] = Field(
        "direct", description="inference: direct = beam search after the prompt; reasoning = greedy CoT, then beams")
    cot_sft_samples: int | None = Field(None, ge=1, description="CoT samples in CoT-SFT; None = Stage 1's CoT samples "
                                                                "(cot_samples), else a draw of this size")
    direct_samples: int = Field(16000, ge=0, description="direct (history -> SID) samples mixed into CoT-SFT")
    rewrite_items: int = Field(10, ge=0, description="history items rewritten (as SIDs) after the CoT; 0 = none")
    max_think_tokens: int | None = Field(
        None, ge=1, description="reasoning mode: cap on generated CoT text tokens; None = the longest CoT text "
                                "CoT-SFT trains (max_cot_tokens) + 8")
    no_repeat_ngram: int = Field(4, ge=0, description="reasoning mode: greedy decoding never repeats an n-gram of "
                                                      "this size (HF's no_repeat_ngram_size; 0 = off): a small model's "
                                                      "greedy text otherwise loops and never closes the think block")
    answer_weight: float = Field(
        1.0, gt=0, description="CoT-SFT: weight of a CoT sample's answer tokens (after the think block) in the "
                               "token-mean loss; 1 = the released plain token loss. The answer is ~4 of a CoT "
                               "target's ~170 tokens, and the reasoning mode's answer is learnt from it alone")
    cot_sft: TrainConfig = TrainConfig(epochs=3, lr=2e-4, batch_size=32, patience=2, warmup_ratio=0.05,
                                       max_minutes=30)


@register()
class GREAM(CoTMethod):
    info = MethodInfo(name="gream", family="explicit-cot", paper="GREAM (Hong et al.), 2025",
                      description="explicit CoT: CoT-SFT on teacher reasoning + rewritten history + SID; "
                                  "direct or reasoning inference", uses_sids=True, needs_text=False)
    Config = GREAMConfig
    table4_row = "Explicit CoT (GREAM), CoT generation"

    def paper_latency_row(self) -> str:
        """The paper times GREAM's CoT generation: the reasoning mode; the direct mode has no paper row."""
        return self.table4_row if self.config.mode == "reasoning" else ""
    #: added after the GREAM rows were committed; at this value, as before it (left out of run ids)
    late_settings = {"answer_weight": 1.0}
    non_sft_fields = cot_non_sft_fields(GREAMConfig)
    #: CoT-SFT does not read these (both modes share the CoT-SFT entry)
    non_cot_sft_fields = {"mode", "max_think_tokens", "no_repeat_ngram", "decode_batch_size", "reuse_sft", "rl"}

    demo_priority = 5
    demo_config = {"backbone": {"preset": "tiny", "max_vocab": 512}, "valid_metric": "loss",
                   "cot_samples": 600, "stage1_cot_samples": 300, "direct_samples": 2400, "rewrite_items": 5,
                   # the answer after the think block is learnt only from CoT samples: with Stage 1's 300 the
                   # reasoning row stayed below popularity; validation NDCG@10 (reasoning / direct): 300 CoTs
                   # 0.0150 / 0.0356, 3,000 0.0197, 8,000 0.0215 / 0.0417 (popularity 0.0173)
                   "cot_sft_samples": 8000,
                   # then (validation, reasoning row): the answer tokens weighted 20x in CoT-SFT 0.0220 -> 0.0278,
                   # and Stage 1 (shared with LASAR) 14 epochs instead of 6 -> 0.0355; CoT-SFT lr 5e-4 -> 2e-3
                   # 0.0389, with the answer 50x 0.0408 (4 CoT-SFT epochs: 0.0447, over the demo's time)
                   "answer_weight": 50,
                   "sft": {"epochs": 14, "batch_size": 32, "lr": 5e-3, "patience": 3},
                   "cot_sft": {"epochs": 2, "batch_size": 32, "lr": 2e-3, "patience": 2}}
    demo_rows = {"GREAM (direct)": {"mode": "direct"}, "GREAM (reasoning)": {"mode": "reasoning"}}
    # both rows share one CoT-SFT stage: the second would wait on its lock beside the first, so it runs last
    demo_row_priority = {"GREAM (reasoning)": -1}
    smoke_config = {"backbone": {"preset": "tiny"}, "max_train_samples": 64, "valid_max_users": 16,
                    "cot_samples": 32, "stage1_cot_samples": 16, "direct_samples": 16, "rewrite_items": 3,
                    "max_think_tokens": 24, "sft": {"epochs": 1, "batch_size": 16},
                    "cot_sft": {"epochs": 1, "batch_size": 16}, "decode_batch_size": 16}

    # ------------------------------------------------------------ CoT-SFT
    def cot_sft_examples(self, data) -> list[Example]:
        st, enc = self.cot_state(data), self.enc
        samples, cots = st["samples"], st["cots"]
        if self.config.cot_sft_samples is not None:
            samples = data.train_samples(self.config.cot_sft_samples, seed=COT_SAMPLE_SEED + 2)
            cots = self.teacher_cots(data, samples)
        end = self._tok(REASON_END)
        out = []
        for h, t, cot in zip(samples.histories, samples.targets, cots):
            out.append(Example(self.reasoning_prompt(enc, h), [*self.cot_text(enc, cot), *self.rewrite(h), end,
                                                               *enc.answer(int(t))], "cot"))
        if self.config.direct_samples:
            direct = data.train_samples(self.config.direct_samples, seed=COT_SAMPLE_SEED + 1)
            out += seqrec_examples(enc, data.sid, direct.histories, direct.targets)
        return out

    def _cot_sft_key(self, data, ctx, stage1: str) -> dict:
        config = without_late_settings(self.info.name, self.config.model_dump(mode="json",
                                                                               exclude=self.non_cot_sft_fields))
        return {"recipe": "gream-cot-sft", "stage1": stage1, "data": data.fingerprint, "config": config,
                "seed": ctx.seed, **self.cot_identity(data),
                "selection": {"metric": ctx.selection_metric, "exclude_history": ctx.exclude_history}}

    def _train_cot_sft(self, data, valid, ctx) -> dict:
        examples = self.cot_sft_examples(data)
        n_tok = sum(len(e.prompt) + len(e.response) for e in examples)
        ctx.log(f"gream: CoT-SFT on {len(examples):,} examples ({sum(e.task == 'cot' for e in examples):,} with CoT), "
                f"{n_tok:,} tokens")
        t0 = time.time()  # model selection decodes in the direct mode (phase stage-2): one for both rows
        end, w = self._tok(REASON_END), self.config.answer_weight

        def loss(m, b):
            b = {k: v.to(self.device) for k, v in b.items()}
            return causal_lm_loss(m, b, answer_weights(b["labels"], end, w) if w != 1 else None)

        facts = train(self.bb.model, loss,
                      examples, self._collate, self.config.cot_sft, workdir=ctx.workdir,
                      valid_fn=self._valid_fn(data, valid, ctx, "stage-2"), seed=ctx.seed, progress=ctx.progress,
                      log=ctx.log, tracker=ctx.tracker, name="cot_sft", lengths=[len(e.prompt) + len(e.response) for e in examples])
        facts.update(seconds=round(time.time() - t0 + facts.get("earlier_attempts_seconds", 0.0), 1), examples=len(examples),
                     tokens_per_epoch=n_tok)
        return facts

    def middle_phases(self, data, valid, ctx):
        """CoT-SFT, cached: the direct and reasoning rows share it."""
        stage1 = self.sft_stage(data, ctx)
        key = self._cot_sft_key(data, ctx, stage1.id) if stage1 is not None else None
        return [self.vocabulary_phase(data, ctx),
                Phase("cot_sft", lambda: self._train_cot_sft(data, valid, ctx), self.stage_entry("gream-cot-sft", key)),
                Phase("", lambda: {"mode": self.config.mode, "cot_samples": len(self.cot_state(data)["cots"])})]

    # ------------------------------------------------------------ inference
    def prefix(self, model, histories, phase, *, grad=False, given=None, state=None):
        """The direct prompt in training and model selection (every phase but ``test``: one Stage 1 and one
        CoT-SFT serve both rows); in the reasoning mode's ``test`` phase, the generated CoT
        (``aux["per_user"]["cot_tokens"]``: its length per user)."""
        if self.config.mode == "direct" or phase != "test":
            return super().prefix(model, histories, phase, grad=grad, given=given, state=state)
        if grad:
            raise NotImplementedError("gream: the reasoning mode's prefix is generated text (no gradient through it)")
        out, lengths = self.generate_reasoning(model, histories)
        return out, {"per_user": {"cot_tokens": lengths}}

    @property
    def think_cap(self) -> int:
        c = self.config
        if c.max_think_tokens is not None:
            return c.max_think_tokens
        return c.max_cot_tokens + 8

    def rewrite(self, history) -> list[int]:
        """The rewritten history that closes the think block: the SIDs of the last ``rewrite_items`` items."""
        return [x for i in list(history)[-self.config.rewrite_items:] for x in self.enc.sid_ids(int(i))] \
            if self.config.rewrite_items else []

    def generate_reasoning(self, model, histories, cap: int | None = None):
        """Greedy reasoning text after ``<lat_s>`` on the KV cache. A row's text ends when it writes ``<lat_e>``
        or a SID token (the start of the rewrite), or after ``cap`` tokens; then its rewrite -- by definition
        the copy of its last history items, so appended rather than sampled -- and ``<lat_e>`` go into the
        cache. Returns the prefix state the answer is decoded from and each row's generated text length."""
        import torch

        from bench.generative.decoding import extend_prefix, prefill
        from bench.generative.prompts import left_pad

        cap = cap or self.think_cap
        core = getattr(model, "module", model)
        emb = core.get_input_embeddings()
        end = self._tok(REASON_END)
        B = len(histories)
        ids, mask = left_pad([self.reasoning_prompt(self.enc, h) for h in histories], self.bb.pad_id)
        with torch.no_grad():
            state = prefill(model, ids.to(self.device), mask.to(self.device))
            stops = torch.zeros(state.last_logits.shape[-1], dtype=torch.bool, device=self.device)
            stops[self.bb.sid_token_ids.flatten().to(self.device)] = True
            stops[end] = True
            eos = self.bb.tokenizer.eos_token_id
            if eos is not None:
                stops[eos] = True  # an end of sequence inside the think block ends the text too
            active = torch.ones(B, dtype=torch.bool, device=self.device)
            lengths = torch.zeros(B, dtype=torch.long, device=self.device)
            gen = torch.zeros(B, 0, dtype=torch.long, device=self.device)
            for _ in range(cap):
                logits = state.last_logits
                n = self.config.no_repeat_ngram
                if n and gen.shape[1] >= n:
                    logits = logits.masked_fill(repeated_ngram_mask(gen, n, logits.shape[1], keep=end), float("-inf"))
                nxt = logits.argmax(-1)
                active = active & ~stops[nxt]  # a stop token ends the text and is not kept
                if not active.any():
                    break
                gen = torch.cat([gen, nxt.unsqueeze(1)], 1)
                state = extend_prefix(model, state, emb(nxt), active)
                lengths += active.long()
            # every row: its rewrite, then the end marker (rows with shorter rewrites are masked meanwhile)
            tails = [[*self.rewrite(h), end] for h in histories]
            for t in range(max(len(x) for x in tails)):
                tok = torch.tensor([x[t] if t < len(x) else end for x in tails], device=self.device)
                on = torch.tensor([t < len(x) for x in tails], device=self.device)
                state = extend_prefix(model, state, emb(tok), on)
        return state, lengths

    def describe(self):
        return {**super().describe(), "mode": self.config.mode,
                "max_think_tokens": self.think_cap,
                "rewrite_items": self.config.rewrite_items}


def answer_weights(labels, end: int, weight: float):
    """[B, T] loss weights: ``weight`` on the labelled tokens after a row's ``end`` marker (a CoT sample's
    answer), 1 elsewhere (the CoT text, the rewrite, the marker itself, and direct samples, which have none)."""
    import torch

    after = (torch.cumsum((labels == end).long(), 1) > 0) & (labels != end)
    return 1.0 + (weight - 1.0) * after.float()


def repeated_ngram_mask(gen, n: int, vocab: int, keep: int | None = None):
    """[B, vocab] True where the token would complete an n-gram already in ``gen`` [B, t] (each row's
    generated tokens): HF's ``no_repeat_ngram_size``, vectorized. ``keep`` is never banned."""
    import torch

    B, t = gen.shape
    ban = torch.zeros(B, vocab, dtype=torch.long, device=gen.device)
    if t >= n:
        windows = gen.unfold(1, n - 1, 1)[:, :-1]                        # [B, t-n+1] earlier (n-1)-grams
        match = (windows == gen[:, t - n + 1:].unsqueeze(1)).all(-1)     # ... equal to the last n-1 tokens
        ban.scatter_reduce_(1, gen[:, n - 1:], match.long(), "amax")     # the token that followed each match
    if keep is not None:
        ban[:, keep] = 0
    return ban.bool()
