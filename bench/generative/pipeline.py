"""The phase pipeline of a generative method: SFT (a cached stage), the method's ``middle_phases``, then GRPO,
each a :class:`Phase` run by one driver (:meth:`PhasePipeline.fit` -> :meth:`PhasePipeline.run_phase` ->
:func:`bench.generative.stages.run_stage`). A mixin of :class:`bench.generative.method.GenerativeMethod`: it
calls the method's hooks and never the other way round."""
from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from bench.generative.backbone import add_embedding_dropout, load_backbone
from bench.generative.grpo import GRPOConfig, GRPOLoss, beam_rollout
from bench.generative.prompts import seqrec_examples
from bench.generative.stages import StageCache, run_stage
from bench.generative.batches import PeriodBatches
from bench.generative.training import PhaseState, TrainConfig, train
from bench.specs import hashed_names


@dataclass
class Phase:
    """One training phase of a generative method, run by the one driver (:meth:`GenerativeMethod.fit`):
    ``train()`` trains the backbone in place (or only computes, e.g. LASAR's anchors) and returns the
    phase's facts, stored under ``training.<name>`` (``name`` "": merged into the training facts). With a
    ``stage`` the phase is trained once and reused from the stage cache by every row that shares it
    (:func:`bench.generative.stages.run_stage`, the only caching code, also under torchrun); its facts then
    carry the stage id and, when loaded, ``reused: true`` and the seconds it took when it was trained. No
    phase knows how it is cached. ``strict_modules=False``: a reused entry may lack the method's extra
    modules (a shared SFT stage, which does not train them; see :meth:`GenerativeMethod._adopt`)."""

    name: str
    train: Callable[[], dict]
    stage: StageCache | None = None
    strict_modules: bool = True


class PhasePipeline:
    """``fit`` as phases: the SFT stage, ``middle_phases``, GRPO."""

    def _selection(self, ctx, valid) -> dict:
        if self.config.valid_metric == "loss":
            return {"metric": "SFT loss (method_config.valid_metric=loss)", "split": "valid",
                    "users": min(self.config.valid_max_users, len(valid))}
        return ctx.selection(self.config.valid_max_users, len(valid))

    def _valid_fn(self, data, valid, ctx, phase: str = "sft-valid"):
        """Model selection: the run's selection metric through ``ctx.validate`` (the protocol every
        method uses; decoding from :meth:`prefix` in ``phase``) on a fixed subset of ``valid_max_users``
        users, or the SFT loss on the same users (``valid_metric: loss``); the loss is recorded every epoch
        either way."""
        import torch

        from bench.metrics import fixed_subset

        idx = fixed_subset(len(valid), self.config.valid_max_users)
        hist, tgt = [valid.histories[i] for i in idx], valid.targets[idx]
        examples = seqrec_examples(self.enc, data.sid, hist, tgt)

        def loss(model) -> float:
            total, n = 0.0, 0
            with torch.no_grad():
                for s in range(0, len(examples), 64):
                    batch = {k: v.to(self.device) for k, v in self._collate(examples[s:s + 64]).items()}
                    out = self.sft_loss(model, batch)
                    total += float(out["loss"] if isinstance(out, dict) else out) * len(batch["input_ids"])
                    n += len(batch["input_ids"])
            return total / max(n, 1)

        def score(model) -> dict:
            was = model.training
            model.eval()
            out = {"valid_loss": round(loss(model), 5)}
            if self.config.valid_metric == "protocol":
                got = ctx.validate(lambda h, k: self._decode(model, h, k=k, width=self.config.valid_beam_width,
                                                             phase=phase)[0],
                                   valid, data.n_items, max_users=self.config.valid_max_users,
                                   batch_size=self.config.decode_batch_size)
                out.update({f"valid_{m}": round(v, 5) for m, v in got.items() if "@" in m})
                out["score"] = got["score"]
            else:
                out["score"] = -out["valid_loss"]
            model.train(was)
            return out

        return score

    def run_phase(self, phase: Phase, data, ctx) -> dict:
        """The one driver for a phase: trained here (no stage), or trained once and reused through the stage
        cache; the facts as :class:`Phase` describes them. Every phase after SFT draws torch's random numbers
        (dropout masks, samples) from a stream of its own, seeded from the run's seed and the phase's name, and
        leaves the global stream as it found it: what a phase draws does not depend on whether the phases
        before it trained or were reused from the stage cache (a trained phase advances torch's stream; a
        DataLoader takes a draw from it every epoch)."""
        if phase.name == "sft":
            return self._run_phase(phase, data, ctx)
        import torch

        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(phase_seed(ctx.seed, phase.name))
            return self._run_phase(phase, data, ctx)

    def _run_phase(self, phase: Phase, data, ctx) -> dict:
        if phase.stage is None:
            return phase.train()
        stage = phase.stage
        facts, reused = run_stage(
            stage, phase.name or "facts", train=phase.train, save=self.save, run_id=Path(ctx.workdir).parent.name,
            log=lambda msg: ctx.log(f"{self.info.name}: {phase.name or 'phase'} {msg}"),
            load=lambda d: self._adopt(load_backbone(d, data.sid_levels, data.codebook_size), data, d,
                                       strict_modules=phase.strict_modules))
        return {**facts, **({"reused": True} if reused else {}), "stage": stage.id}

    def stage_entry(self, stage_name: str, key: dict | None) -> StageCache | None:
        """A phase's stage-cache entry (None when the phase is not cached: ``key`` None)."""
        return StageCache(stage_name, key) if key is not None else None

    # ------------------------------------------------------------ the SFT stage (cached)
    def sft_stage(self, data, ctx) -> StageCache | None:
        if not self.config.reuse_sft:
            return None
        import hashlib

        if self.sft_is_seqrec():  # the plain recipe: every method whose SFT it is shares the entry (LASAR's
            # Stage 1 and MiniOneRec's SFT), keyed by the generative fields alone
            recipe, config = "seqrec", self.config.model_dump(mode="json", include=self.seqrec_sft_fields)
        else:
            recipe = self.sft_recipe or self.info.name
            config = hashed_names(self.info.name, self.config.model_dump(mode="json", exclude=self.non_sft_fields))
        corpus = hashlib.sha256("\n".join(self._corpus(data)).encode()).hexdigest()[:16]
        key = {"recipe": recipe, "data": data.fingerprint, "prompt_style": self.style, "config": config,
               "tokenizer": {"extra_tokens": self.extra_special_tokens(), "corpus": corpus}, "seed": ctx.seed,
               "selection": {"metric": ctx.selection_metric, "exclude_history": ctx.exclude_history}}
        return StageCache("sft", key)

    def _train_sft(self, data, valid, ctx, rng) -> dict:
        add_embedding_dropout(self.bb.model, self.config.backbone.embedding_dropout)
        examples = self.sft_examples(data, self.enc, rng)
        n_tok = sum(len(e.prompt) + len(e.response) for e in examples)
        ctx.log(f"{self.info.name}: backbone {self.bb.source} ({self.bb.n_parameters():,} parameters, "
                f"vocab {len(self.bb.tokenizer):,}); prompt style {self.style}"
                f"{' (packed seqrec)' if self.packed else ''}; {len(examples):,} SFT examples, {n_tok:,} tokens")
        t0 = time.time()
        groups = (lambda m: self.param_groups(m, "sft")) if self.param_groups(self.bb.model, "sft") else None
        facts = train(self.bb.model, lambda m, b: self.sft_loss(m, {k: v.to(self.device) for k, v in b.items()}),
                      examples, self._collate, self.config.sft, workdir=ctx.workdir,
                      valid_fn=self._valid_fn(data, valid, ctx), seed=ctx.seed, progress=ctx.progress, log=ctx.log,
                      tracker=ctx.tracker,
                      name="sft", lengths=[len(e.prompt) + len(e.response) for e in examples], param_groups=groups)
        facts["seconds"] = round(time.time() - t0 + facts.get("earlier_attempts_seconds", 0.0), 1)
        facts["examples"] = len(examples)
        facts["tokens_per_epoch"] = n_tok
        from collections import Counter

        facts["tasks"] = dict(Counter(e.task for e in examples))
        return facts

    def fit(self, data, *, valid, ctx):
        self._build(data, ctx)
        rng = random.Random(ctx.seed)
        facts: dict = {"prompt_style": self.style, "packed_seqrec": self.packed,
                       "selection": self._selection(ctx, valid)}
        stage = self.sft_stage(data, ctx)
        facts["sft"] = self.run_phase(Phase("sft", lambda: self._train_sft(data, valid, ctx, rng), stage,
                                            strict_modules=False), data, ctx)
        # the embedding dropout of every later phase (a hook, not saved with the weights: a reused SFT stage's
        # model arrives without it)
        add_embedding_dropout(self.bb.model, self.config.backbone.embedding_dropout)
        if stage is not None:
            if facts["sft"].get("reused"):
                facts["reused_seconds"] = facts["sft"].get("seconds", 0.0)
            facts["started_from"] = {"stage": stage.id, "path": str(stage.dir)}
        phases = self.middle_phases(data, valid, ctx)
        rl: GRPOConfig | None = getattr(self.config, "rl", None)
        if rl is not None and rl.enabled:
            phases.append(Phase("rl", lambda: self._grpo(data, valid, ctx, rl, phase_rng(ctx.seed, "rl"))))
        for phase in phases:
            got = self.run_phase(phase, data, ctx)
            if phase.name:
                facts[phase.name] = got
            else:
                facts.update(got)
        self.bb.model.eval()
        return facts

    def _grpo(self, data, valid, ctx, rl: GRPOConfig, rng: random.Random) -> dict:
        t0 = time.time()
        state = PhaseState(self.rl_init())  # checkpointed with GRPO's epochs
        batch = self.rl_prompts(data, rng, rl.max_prompts)
        valid_fn = self._valid_fn(data, valid, ctx, "test")
        before = valid_fn(self.bb.model)
        ref = copy.deepcopy(self.bb.model).eval()
        for p in ref.parameters():
            p.requires_grad_(False)
        rollout = beam_rollout(self.trie, self.bb.pad_id,
                               prefix_fn=lambda m, prompts: self.prefix(m, prompts, "rollout", state=state))
        loss = GRPOLoss(ref, rl, rollout=rollout, logprobs=self.completion_logprobs,
                        extra_terms=lambda m, r, logp, aux: self.rl_extra_terms(m, r, logp, aux, state))
        batches, epochs = None, rl.epochs
        if rl.valid_every is not None:  # validation periods of valid_every optimizer steps
            batches = PeriodBatches(len(batch), rl.batch_prompts, math.ceil(rl.valid_every / rl.updates_per_rollout),
                                    seed=ctx.seed)
            epochs = rl.epochs * batches.periods
        cfg = TrainConfig(epochs=epochs, lr=rl.lr, batch_size=rl.batch_prompts, patience=epochs,
                          max_minutes=rl.max_minutes)
        groups = (lambda m: self.param_groups(m, "rl")) if self.param_groups(self.bb.model, "rl") else None
        best = rl.keep == "best"
        facts = train(self.bb.model, loss, batch, lambda b: b, cfg, workdir=ctx.workdir,
                      valid_fn=valid_fn, seed=ctx.seed, progress=ctx.progress, log=ctx.log, tracker=ctx.tracker,
                      name="grpo", restore_best=best, initial_score=before["score"] if best else None,
                      param_groups=groups, updates_per_batch=rl.updates_per_rollout, batches=batches, state=state)
        if loss.stats:
            facts["mean_reward"] = round(float(np.mean([s["reward"] for s in loss.stats])), 5)
            facts["group_hit_rate"] = round(float(np.mean([s["hit"] for s in loss.stats])), 5)
        after = facts["history"][-1] if facts["history"] else {}
        key = next((k for k in before if k.startswith("valid_NDCG")), "valid_loss")
        facts["valid_before"] = {key: before[key]}
        facts["valid_after"] = {key: after.get(key)}
        facts["valid_curve"] = [{"step": 0, key: before[key]}] + [{"step": r.get("step"), key: r.get(key)}
                                                                  for r in facts["history"]]
        facts["kept"] = rl.keep
        if best:
            kept = facts["best_epoch"]
            facts["kept_step"] = 0 if kept is None or kept < 0 else facts["history"][kept]["step"]
            facts["rl_improved"] = facts["kept_step"] > 0
            facts["valid_kept"] = {key: before[key] if not facts["rl_improved"] else facts["history"][kept].get(key)}
        ctx.log(f"grpo: group hit rate {facts.get('group_hit_rate')}, mean reward {facts.get('mean_reward')}, "
                f"{key} {before[key]} -> {after.get(key)} on the same validation users; "
                + (f"kept the weights of step {facts['kept_step']}" if best else "kept the last weights")
                + ("" if not best or facts["rl_improved"] else " (RL never beat the SFT weights: the SFT weights)"))
        facts["prompts"] = len(batch)
        facts["updates_per_rollout"] = rl.updates_per_rollout
        facts.update(self.rl_facts(state))
        facts["seconds"] = round(time.time() - t0 + facts.get("earlier_attempts_seconds", 0.0), 1)
        return facts


def phase_seed(seed: int, phase: str) -> int:
    """A phase's torch seed, from the run's seed and the phase's name (stable across processes)."""
    import hashlib

    return int.from_bytes(hashlib.sha256(f"{seed}:{phase}".encode()).digest()[:4], "little")


def phase_rng(seed: int, phase: str) -> random.Random:
    """A phase's own random stream, from the run's seed and the phase's name. The SFT stage draws from
    ``random.Random(seed)``; every later phase from its own stream, so what it draws (GRPO's prompts) does
    not depend on whether the SFT stage was trained in this run or reused from the stage cache (it did: a
    reused stage skipped SFT's draws, and the same run id gave different RL rows)."""
    return random.Random(f"{seed}:{phase}")
