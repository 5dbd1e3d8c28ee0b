"""Base of SID-generating LLM methods: builds the backbone, runs SFT through the shared loop,
optionally GRPO, and ranks with the shared trie-constrained beam search on the shared prompt."""
from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import ClassVar

import numpy as np
from pydantic import Field

from bench.generative.backbone import BackboneConfig, build_backbone, load_backbone
from bench.generative.grpo import GRPOConfig, GRPOLoss, beam_rollout
from bench.generative.prompts import ALPACA, SEQREC_TEMPLATE, Example, PromptEncoder, collate, seqrec_examples
from bench.generative.training import TrainConfig, causal_lm_loss, train
from bench.method import Method, MethodConfig, Recommendations


class GenerativeConfig(MethodConfig):
    """Defaults are sized for a 2-core CPU (an ml-100k run in about ten minutes); on a GPU raise the
    caps: ``max_train_samples: null``, ``max_alignment_per_task: null``, ``sft.epochs: 10``,
    ``backbone.name_or_path: Qwen/Qwen3-0.6B``."""

    backbone: BackboneConfig = BackboneConfig()
    sft: TrainConfig = TrainConfig(epochs=1, lr=1e-3, batch_size=32)
    max_train_samples: int | None = Field(15000, ge=1, description="cap on seqrec training samples (random subset)")
    max_alignment_per_task: int | None = Field(3000, ge=1, description="cap on each alignment task's examples")
    valid_max_users: int = Field(500, ge=1, description="validation users for the SFT early-stopping loss")
    max_prompt_tokens: int = Field(512, ge=16, description="the paper's max sequence length")
    decode_batch_size: int = Field(64, ge=1, description="users per beam-search batch")


class GenerativeMethod(Method):
    Config: ClassVar = GenerativeConfig
    rl_stage: ClassVar[bool] = False

    # ------------------------------------------------------------ hooks for subclasses
    def sft_examples(self, data, enc: PromptEncoder, rng: random.Random) -> list[Example]:
        train = data.train_samples(self.config.max_train_samples, seed=rng.randint(0, 2**31))
        return seqrec_examples(enc, data.sid, train.histories, train.targets)

    def extra_corpus(self) -> list[str]:
        return []

    # ------------------------------------------------------------ shared machinery
    def _corpus(self, data) -> list[str]:
        return [ALPACA, SEQREC_TEMPLATE, *self.extra_corpus(), *[t for t in data.item_text if t]]

    def _build(self, data, ctx) -> None:
        import torch

        from bench.generative.decoding import TrieTensors

        from bench import distributed

        bb_dir = ctx.workdir / "backbone_init"
        with distributed.main_process_first():  # multi-process launch: every process loads the main one's
            if bb_dir.is_dir():  # resume: the same tokenizer and initial weights as the first attempt
                self.bb = load_backbone(bb_dir, data.sid_levels, data.codebook_size)
            else:
                self.bb = build_backbone(self.config.backbone, sid_tokens=data.sid_vocabulary(),
                                         levels=data.sid_levels, codebook_size=data.codebook_size,
                                         corpus=self._corpus(data), seed=ctx.seed)
                self.bb.save(bb_dir)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.bb.model.to(self.device)
        self.enc = PromptEncoder(self.bb.tokenizer, self.bb.sid_token_ids, data.codes)
        self.trie = TrieTensors(data.trie, self.bb.sid_token_ids, self.device)
        self.sid_text = data.sid
        self.n_items = data.n_items

    def _collate(self, batch):
        return collate(batch, self.bb.pad_id, self.config.max_prompt_tokens)

    def _valid_fn(self, data, valid):
        import torch

        rng = np.random.default_rng(0)
        idx = rng.choice(len(valid), min(self.config.valid_max_users, len(valid)), replace=False)
        examples = seqrec_examples(self.enc, data.sid, [valid.histories[i] for i in idx], valid.targets[idx])

        def score(model) -> float:
            model.eval()
            total, n = 0.0, 0
            with torch.no_grad():
                for s in range(0, len(examples), 64):
                    batch = {k: v.to(self.device) for k, v in self._collate(examples[s:s + 64]).items()}
                    total += float(causal_lm_loss(model, batch)) * len(batch["input_ids"])
                    n += len(batch["input_ids"])
            model.train()
            return -total / max(n, 1)  # higher is better

        return score

    def fit(self, data, *, valid, ctx):
        import time

        self._build(data, ctx)
        rng = random.Random(ctx.seed)
        examples = self.sft_examples(data, self.enc, rng)
        ctx.log(f"{self.info.name}: backbone {self.bb.source} ({self.bb.n_parameters():,} parameters, "
                f"vocab {len(self.bb.tokenizer):,}); {len(examples):,} SFT examples")
        t0 = time.time()
        facts = {"sft": train(self.bb.model, lambda m, b: causal_lm_loss(m, {k: v.to(self.device) for k, v in b.items()}),
                              examples, self._collate, self.config.sft, workdir=ctx.workdir,
                              valid_fn=self._valid_fn(data, valid), seed=ctx.seed, progress=ctx.progress,
                              log=ctx.log, name="sft")}
        facts["sft"]["seconds"] = round(time.time() - t0, 1)
        facts["sft_examples"] = len(examples)
        rl: GRPOConfig | None = getattr(self.config, "rl", None)
        if rl is not None and rl.enabled:
            t0 = time.time()
            facts["rl"] = self._grpo(data, valid, ctx, rl, rng)
            facts["rl"]["seconds"] = round(time.time() - t0, 1)
        self.beam_width = ctx.beam_width
        self.bb.model.eval()
        return facts

    def _grpo(self, data, valid, ctx, rl: GRPOConfig, rng: random.Random) -> dict:
        train_s = data.train_samples(rl.max_prompts, seed=rng.randint(0, 2**31) + 1)
        prompts = [(self.enc.template(SEQREC_TEMPLATE, h, data.sid), int(t))
                   for h, t in zip(train_s.histories, train_s.targets)]
        ref = copy.deepcopy(self.bb.model).eval()
        for p in ref.parameters():
            p.requires_grad_(False)
        loss = GRPOLoss(ref, rl, self.bb.pad_id, beam_rollout(self.trie, self.bb.pad_id))
        cfg = TrainConfig(epochs=rl.epochs, lr=rl.lr, batch_size=rl.batch_prompts, patience=rl.epochs,
                          max_minutes=rl.max_minutes)
        facts = train(self.bb.model, loss, prompts, lambda b: b, cfg, workdir=ctx.workdir,
                      valid_fn=self._valid_fn(data, valid), seed=ctx.seed, progress=ctx.progress, log=ctx.log,
                      name="grpo", restore_best=False)  # the SFT loss is logged, not used to pick RL weights
        if loss.stats:
            facts["mean_reward"] = round(float(np.mean([s["reward"] for s in loss.stats])), 5)
            facts["mean_hits_per_group"] = round(float(np.mean([s["hit"] for s in loss.stats])), 5)
        facts["prompts"] = len(prompts)
        return facts

    def recommend(self, histories, *, k):
        import torch

        from bench.generative.decoding import constrained_beam_search

        width = max(self.beam_width, k)
        out_items, out_scores = [], []
        bs = self.config.decode_batch_size
        for s in range(0, len(histories), bs):
            prompts = [self.enc.template(SEQREC_TEMPLATE, h, self.sid_text)[-self.config.max_prompt_tokens:]
                       for h in histories[s:s + bs]]
            res = constrained_beam_search(self.bb.model, self.trie, prompts=prompts, pad_id=self.bb.pad_id,
                                          beam_width=width)
            out_items.append(res.items[:, :k].cpu())
            out_scores.append(res.scores[:, :k].cpu())
        items = torch.cat(out_items).numpy()
        return Recommendations(items, torch.cat(out_scores).numpy())

    def describe(self):
        if not hasattr(self, "bb"):
            return {}
        return {"backbone": self.bb.source, "parameters": self.bb.n_parameters(),
                "vocab_size": len(self.bb.tokenizer), "beam_width": getattr(self, "beam_width", None),
                "decoder": "trie-constrained beam search (bench.generative.decoding)"}

    def save(self, path: Path) -> None:
        self.bb.save(Path(path))

    def load(self, path: Path, data, *, beam_width: int = 50) -> None:
        from bench.generative.decoding import TrieTensors

        self.bb = load_backbone(Path(path), data.sid_levels, data.codebook_size)
        self.enc = PromptEncoder(self.bb.tokenizer, self.bb.sid_token_ids, data.codes)
        self.trie = TrieTensors(data.trie, self.bb.sid_token_ids)
        self.sid_text, self.n_items, self.beam_width = data.sid, data.n_items, beam_width
        self.bb.model.eval()
