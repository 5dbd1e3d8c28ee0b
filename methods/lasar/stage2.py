"""LASAR's Stage 2 (a phase of ``middle_phases``, cached as a stage): answer CE through the latent loop, step-wise
alignment to the CoT anchors, the policy head's CE on the segment count, and a replayed Stage-1 batch."""
from __future__ import annotations

import random
import time

import numpy as np

from bench.generative.method import Phase
from bench.generative.training import PhaseState, train
from bench.specs import hashed_names
from methods.lasar.losses import align_distance


class Stage2:
    """Mixin of :class:`methods.lasar.method.LASAR`: Stage 2's data, loss, validation and cached phase."""

    def stage2_loss(self, model, idx: list[int]) -> dict:
        import torch

        from bench.generative.grpo import prefix_completion_logprobs

        st = self._cot_state
        pool = st["stage2"]
        hist = [pool.histories[i] for i in idx]
        state, aux = self.latent_prefix(model, hist, "stage-2", grad=True)
        answer = torch.tensor([self.enc.answer(int(pool.targets[i])) for i in idx], device=self.device)
        ce = -prefix_completion_logprobs(model, state, answer.unsqueeze(1)).mean()
        out = {"loss": ce, "ce": ce}
        n_cot = len(st["cots"])
        cot = [j for j, i in enumerate(idx) if i < n_cot]  # rows with a teacher CoT (alignment, head label)
        if not cot:
            out["mean_steps"] = aux["steps"].float().mean().detach()
            return self._add_replay(model, out, len(idx))
        if len(cot) < len(idx):
            rows = torch.as_tensor(cot, device=self.device)
            aux = {**aux, "hiddens": aux["hiddens"][rows], "steps": aux["steps"][rows], "logits": aux["logits"][rows]}
            idx = [idx[j] for j in cot]
        labels = torch.as_tensor(st["labels"][idx], device=self.device)
        if self.config.alignment != "none" and aux["hiddens"].shape[1]:
            T = aux["hiddens"].shape[1]
            anchors = st["anchors"][idx, :T].to(self.device)
            t = torch.arange(T, device=self.device)
            valid = (t < aux["steps"].unsqueeze(1)) & (t < labels.unsqueeze(1))  # valid_mask
            dist = align_distance(self.config.alignment, aux["hiddens"], anchors)
            align = (dist * valid).sum() / valid.sum().clamp(min=1)
            out["loss"] = out["loss"] + self.config.align_weight * align
            out["align"] = align
        pol = torch.nn.functional.cross_entropy(aux["logits"].float(), labels - 1)  # the head (always)
        out["loss"] = out["loss"] + self.config.policy_weight * pol
        out["policy"] = pol
        out["mean_steps"] = aux["steps"].float().mean().detach()
        return self._add_replay(model, out, len(hist))

    def _add_replay(self, model, out: dict, n: int) -> dict:
        if self.config.stage2_replay > 0:
            from bench.generative.training import causal_lm_loss

            pool = self._replay
            pick = self._replay_rng.choice(len(pool), min(n, len(pool)), replace=False)
            batch = {k: v.to(self.device) for k, v in self._collate([pool[i] for i in pick]).items()}
            replay = causal_lm_loss(model, batch)
            out["loss"] = out["loss"] + self.config.stage2_replay * replay
            out["replay"] = replay
        return out

    def init_stage2_pool(self, data) -> None:
        """Stage 2's samples: the CoT samples first, then ``stage2_extra_samples`` other prefixes."""
        from bench.data import Split

        st = self.cot_state(data)
        cot, extra = st["samples"], None
        if self.config.stage2_extra_samples:
            extra = data.train_samples(self.config.stage2_extra_samples, seed=54321)
        st["stage2"] = cot if extra is None else Split(np.concatenate([cot.users, extra.users]),
                                                        cot.histories + extra.histories,
                                                        np.concatenate([cot.targets, extra.targets]))

    def init_replay(self, data, seed: int) -> None:
        """The Stage-1 examples Stage 2 replays (``stage2_replay``)."""
        if self.config.stage2_replay > 0:
            self._replay = self.seqrec_sft_examples(data, self.enc, random.Random(seed + 2))
            self._replay_rng = np.random.default_rng(seed + 2)

    def _stage2_key(self, data, ctx, stage1: str | None) -> dict:
        # "vocabulary": what the model holds after Stage 1 (the markers only; entries made while the CoT words were
        # in it are other models)
        return {"recipe": "lasar-stage2", "stage1": stage1, "data": data.fingerprint, "vocabulary": "markers",
                # Force N is an inference (and RL) setting: Stage 2 is the same for every forced_steps
                "config": {**hashed_names(self.info.name, self.config.model_dump(mode="json", exclude=self.non_stage2_fields)),
                           "forced_steps": None},
                "seed": ctx.seed, **self.cot_identity(data),
                "selection": {"metric": ctx.selection_metric, "exclude_history": ctx.exclude_history}}

    def middle_phases(self, data, valid, ctx):
        """Anchors (from the Stage-1 weights, every run: their facts), then Stage 2 (cached: rows that differ
        only in RL or inference share it); the no-latent ablation has neither."""
        if not self.config.latent:
            return [Phase("", lambda: {"latent": False})]
        stage1 = self.sft_stage(data, ctx)
        key = self._stage2_key(data, ctx, stage1.id) if self.config.reuse_sft and stage1 is not None else None
        return [self.vocabulary_phase(data, ctx, words=False),  # the model never reads CoT text: its anchors do
                Phase("", lambda: self._prepare_anchors(data, ctx, stage1)),
                Phase("stage2", lambda: self._train_stage2(data, valid, ctx), self.stage_entry("lasar-stage2", key))]

    def _prepare_anchors(self, data, ctx, stage1) -> dict:
        st = self._anchors(self.bb, data, stage1.id if stage1 else f"run:{ctx.workdir}", ctx)
        first = data.codes[st["samples"].targets, 0]
        init = self._encode_anchors(self._initial_backbone(data, ctx), data, np.arange(min(1000, len(st["cots"]))),
                                    ctx.seed)
        facts: dict = {"latent": True, "segments": st["report"], "cot_samples": len(st["cots"]),
                       "anchor_signal": {"stage1": self.anchor_signal(st["anchors"], st["labels"], first),
                                         "initial_backbone": self.anchor_signal(init, st["labels"], first)},
                       "latent_config": {"two_stage": self.config.two_stage, "alignment": self.config.alignment,
                                         "forced_steps": self.config.forced_steps,
                                         "max_steps": self.config.max_steps, "teacher": self.config.teacher.kind}}
        ctx.log(f"lasar: anchor signal (centred cosine of last-segment anchors, pairs whose next items share the "
                f"first SID code vs random pairs): {facts['anchor_signal']}")
        return facts

    def _initial_backbone(self, data, ctx):
        """The run's initial weights (before Stage 1) with the reasoning markers, drawn as after Stage 1."""
        from bench.generative.backbone import load_backbone

        init = load_backbone(ctx.workdir / "backbone_init", data.sid_levels, data.codebook_size)
        return self.with_reasoning_vocabulary(init, data, ctx.seed, words=False)

    def _train_stage2(self, data, valid, ctx) -> dict:
        if not self.config.two_stage:  # mixed: the latent objective from the initial weights (and head)
            self._adopt(self._initial_backbone(data, ctx), data, ctx.workdir / "backbone_init")
        st = self._cot_state
        self.init_replay(data, ctx.seed)
        self.init_stage2_pool(data)
        t0 = time.time()
        ctx.log(f"lasar: Stage 2 on {len(st['stage2']):,} samples ({len(st['cots']):,} with CoT; alignment "
                f"{self.config.alignment}, "
                f"{'two-stage' if self.config.two_stage else 'mixed, from the initial weights'})")
        # phase stage-2: the head's N in training and in Stage-2 validation, whatever forced_steps
        facts = train(self.bb.model, self.stage2_loss, list(range(len(st["stage2"]))), lambda b: list(b),
                      self.config.stage2, workdir=ctx.workdir, valid_fn=self._stage2_valid_fn(data, valid, ctx),
                      seed=ctx.seed, progress=ctx.progress, log=ctx.log, tracker=ctx.tracker, name="stage2",
                      state=PhaseState(replay=self._replay_rng) if self.config.stage2_replay > 0 else None)
        facts["seconds"] = round(time.time() - t0 + facts.get("earlier_attempts_seconds", 0.0), 1)
        return facts

    def _stage2_valid_fn(self, data, valid, ctx):
        """The run's protocol (decoding through the latent loop), or with ``valid_metric: loss`` the
        answer CE after the latent loop on the same fixed validation users."""
        import torch

        from bench.generative.grpo import prefix_completion_logprobs
        from bench.metrics import fixed_subset

        protocol = self._valid_fn(data, valid, ctx, "stage-2")
        if self.config.valid_metric == "protocol":
            return protocol
        idx = fixed_subset(len(valid), self.config.valid_max_users)

        def score(model) -> dict:
            was = model.training
            model.eval()
            total = 0.0
            with torch.no_grad():
                for s in range(0, len(idx), 64):
                    rows = idx[s:s + 64]
                    state, _ = self.latent_prefix(model, [valid.histories[i] for i in rows], "stage-2")
                    ans = torch.tensor([self.enc.answer(int(valid.targets[i])) for i in rows], device=self.device)
                    total += float(-prefix_completion_logprobs(model, state, ans.unsqueeze(1)).mean()) * len(rows)
            model.train(was)
            loss = total / max(len(idx), 1)
            return {"valid_loss": round(loss, 5), "score": -loss}

        return score
