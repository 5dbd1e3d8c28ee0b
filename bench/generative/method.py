"""Base of SID-generating LLM methods: builds the backbone, runs SFT through the shared loop,
optionally GRPO, and ranks with the shared trie-constrained beam search on the shared prompt."""
from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Literal

import numpy as np
from pydantic import Field

from bench.atomic import atomic_dir
from bench.generative.backbone import BackboneConfig, add_embedding_dropout, build_backbone, load_backbone
from bench.generative.grpo import GRPOConfig, GRPOLoss, beam_rollout
from bench.generative.prompts import (ALPACA, SEQREC_TEMPLATE, START_TOKEN, Example, PromptEncoder, collate,
                                      packed_seqrec_examples, seqrec_examples, training_windows)
from bench.generative.stages import StageCache, run_stage
from bench.generative.training import TrainConfig, causal_lm_loss, train
from bench.method import Method, MethodConfig, Recommendations


#: who asks a method for its decoding prefix (:meth:`GenerativeMethod.prefix`)
PHASES = ("sft-valid", "stage-2", "rollout", "test")

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


#: the methods a generative plugin may override (everything else is the core's; a contract test checks
#: every registered plugin)
HOOKS = frozenset({"sft_examples", "sft_loss", "extra_special_tokens", "attach_modules", "prefix",
                   "completion_logprobs", "rl_init", "rl_extra_terms", "rl_facts", "rl_prompts", "middle_phases",
                   "param_groups", "uses_item_text", "extra_corpus", "describe"})


class GenerativeConfig(MethodConfig):
    """Defaults are sized for a 2-core CPU: a config-built backbone (``medium`` preset) reading the
    compact prompt, packed seqrec SFT, trained until the validation NDCG@10 stops improving (or the
    ``sft.max_minutes`` budget). With a pretrained LM (``backbone.name_or_path: Qwen/Qwen3-0.6B``)
    the prompt style becomes the paper's."""

    backbone: BackboneConfig = BackboneConfig(preset="medium", max_vocab=2048)
    prompt_style: Literal["auto", "paper", "compact"] = Field(
        "auto", description="auto = paper for a pretrained backbone (name_or_path), compact for a preset")
    pack_seqrec: bool | None = Field(
        None, description="one causal pass per user window (compact style only); None = on for compact")
    # cosine over 18 epochs (~1.8 min each on Beauty, medium preset, 1 thread); early stopping on the
    # validation NDCG@10 (patience 5: on 1,000 users it moved by +-0.004 between epochs while the
    # validation loss still fell steadily, and patience 3 would have stopped at epoch 6) and a
    # wall-clock budget guard
    sft: TrainConfig = TrainConfig(epochs=18, lr=2e-3, batch_size=64, patience=5, warmup_ratio=0.02,
                                   max_minutes=38)
    max_train_samples: int | None = Field(None, ge=1, description="cap on seqrec training examples (windows when "
                                                                  "packed, prefixes otherwise; random subset)")
    max_alignment_per_task: int | None = Field(3000, ge=1, description="cap on each alignment task's examples")
    max_text_tokens: int = Field(48, ge=4, description="item text longer than this is cut (alignment tasks)")
    valid_metric: Literal["protocol", "loss"] = Field(
        "protocol", description="SFT model selection: 'protocol' = the run's selection metric (RunSpec.selection, "
                                "NDCG@10 by default) of the constrained decoder through FitContext.validate, as every "
                                "method; 'loss' = the SFT loss on the same users (cheaper: no decoding)")
    valid_max_users: int = Field(2000, ge=1, description="fixed validation subset (decoding is expensive)")
    valid_beam_width: int = Field(20, ge=10, description="beam width of the validation decode")
    max_prompt_tokens: int = Field(512, ge=16, description="the paper's max sequence length")
    decode_batch_size: int = Field(64, ge=1, description="users per beam-search batch")
    reuse_sft: bool = Field(True, description="reuse an identical SFT stage from the stage cache "
                                              "(bench.generative.stages); false always trains")


class GenerativeMethod(Method):
    """SFT (+ optional GRPO) on a SID-generating LM, ranked by the shared trie-constrained beam search.

    A method with its own reasoning (LASAR's latent loop, GREAM's CoT) fills hooks and overrides no
    core method (:data:`HOOKS`; a contract test walks every registered plugin): :meth:`sft_examples`,
    :meth:`sft_loss`, :meth:`extra_special_tokens`, :meth:`attach_modules` (extra trainable modules, saved
    and reloaded with the backbone), :meth:`prefix` (what ranking, validation and GRPO rollouts decode
    from, told which phase asks: :data:`PHASES`), :meth:`completion_logprobs` (log-probs of SID
    completions from a differentiable prefix), :meth:`rl_init` / :meth:`rl_extra_terms` / :meth:`rl_facts`
    (the RL phase's own state, passed to each call, extra loss terms and facts) and :meth:`param_groups`
    (optimizer groups per stage). What a method decides per user travels as the ``aux`` dict that
    :meth:`prefix` returns: on the rollout (the log-prob passes and the RL terms read it) and, under
    ``aux["per_user"]``, on :class:`~bench.method.Recommendations` (per-user statistics in ``per_user.json``).
    Loss components returned as dicts are logged per epoch by the shared training loop."""

    Config: ClassVar = GenerativeConfig
    inference_options: ClassVar[tuple[str, ...]] = ("beam_width",)
    #: config fields the SFT stage does not read (left out of its cache key)
    non_sft_fields: ClassVar[set[str]] = {"rl", "decode_batch_size", "reuse_sft"}
    #: which example builder the SFT stage uses (default: the method's name); methods whose SFT is
    #: another's (LASAR's Stage 1) name that recipe to share its cache entries
    sft_recipe: ClassVar[str | None] = None

    # ------------------------------------------------------------ hooks for subclasses
    def sft_examples(self, data, enc: PromptEncoder, rng: random.Random) -> list[Example]:
        """SFT supervision (default: seqrec, packed in the compact style)."""
        return self.seqrec_sft_examples(data, enc, rng)

    def sft_loss(self, model, batch: dict):
        """Loss of one collated SFT batch: a scalar tensor, or ``{"loss": total, name: part, ...}``
        (parts logged per epoch). Default: cross-entropy on the response tokens."""
        return causal_lm_loss(model, batch)

    def extra_special_tokens(self) -> list[str]:
        """Tokens added to the tokenizer besides the SID tokens (e.g. a think marker)."""
        return [START_TOKEN] if self.style == "compact" else []

    def attach_modules(self, model) -> dict:
        """Create extra trainable modules (e.g. a policy head), attach them to ``model`` as submodules
        (so they train, move and checkpoint with it) and return them by name; they are saved next to
        the backbone and restored on load. Called once per built or loaded backbone."""
        return {}

    def prefix(self, model, histories: list[list[int]], phase: str, *, grad: bool = False,
               given: dict | None = None, state: dict | None = None):
        """``(PrefixState, aux)``: the :class:`~bench.generative.decoding.PrefixState` the constrained
        decoder continues from, and what the method decided per row (a dict; ``aux["per_user"]``: per-user
        statistics, e.g. LASAR's ``latent_steps``, reported by the runner). ``phase`` (:data:`PHASES`) says
        who asks: ``sft-valid`` (model selection while the SFT stage trains), ``stage-2`` (training and
        validation of a method's second supervised phase), ``rollout`` (GRPO: the rollout and the log-prob
        passes that re-score it, which get the rollout's ``aux`` as ``given``; ``state`` is the RL phase's
        :meth:`rl_init` dict) or ``test`` (ranking, and validation during RL). ``grad``: keep the graph
        (RL log-probs). Default: the prompt, prefilled, in every phase."""
        from bench.generative.decoding import prefill
        from bench.generative.prompts import left_pad

        ids, mask = left_pad([self.prompt(h) for h in histories], self.bb.pad_id)
        return prefill(model, ids.to(self.device), mask.to(self.device), grad=grad), {}

    def completion_logprobs(self, model, histories: list[list[int]], tokens, given: dict | None = None):
        """``(log-probs [B, G, T], aux)`` of G SID completions per history, differentiable: from
        :meth:`prefix` in the ``rollout`` phase with grad (the prompt's cache shared by the group), ``given``
        the rollout's ``aux`` (a per-prompt choice made at rollout time is kept)."""
        from bench.generative.grpo import prefix_completion_logprobs

        state, aux = self.prefix(model, histories, "rollout", grad=True, given=given)
        return prefix_completion_logprobs(model, state, tokens), aux

    def rl_init(self) -> dict:
        """The RL phase's own state (e.g. a sampler's generator, a running baseline), created once when
        GRPO starts and passed to :meth:`prefix` (rollouts), :meth:`rl_extra_terms` and :meth:`rl_facts`."""
        return {}

    def rl_extra_terms(self, model, rollout, logp, aux: dict, state: dict) -> dict:
        """Extra GRPO loss terms ``{name: scalar tensor}`` added to the objective (and logged); they
        see the rollout (items, rewards, advantages, reference log-probs, its ``aux``), the policy's
        log-probs and the ``aux`` of the policy pass that produced them, and the RL state."""
        return {}

    def middle_phases(self, data, valid, ctx) -> list[Phase]:
        """The method's own :class:`Phase` list between SFT and RL (LASAR: anchors, then Stage 2; GREAM:
        CoT-SFT), each with its stage-cache entry or none. Default: none."""
        return []

    def rl_prompts(self, data, rng: random.Random, n: int) -> list[tuple]:
        """GRPO's ``(prompt, target)`` pairs; a prompt is what :meth:`prefix` reads (default: the
        histories of ``n`` random training samples)."""
        train_s = data.train_samples(n, seed=rng.randint(0, 2**31) + 1)
        return [(list(h), int(t)) for h, t in zip(train_s.histories, train_s.targets)]

    def rl_facts(self, state: dict) -> dict:
        """Facts of the RL phase from its state (merged into ``training.rl``)."""
        return {}

    def param_groups(self, model, stage: str) -> list[dict] | None:
        """Optimizer parameter groups for ``stage`` ("sft" or "rl"); None = every parameter at the
        stage's learning rate."""
        return None

    def uses_item_text(self) -> bool:
        """Whether the SFT examples contain item text (the preset tokenizer then learns its words)."""
        return False

    def extra_corpus(self, data) -> list[str]:
        """Extra text the preset tokenizer learns its words from (besides item text)."""
        return []

    # ------------------------------------------------------------ shared machinery
    @property
    def style(self) -> str:
        s = self.config.prompt_style
        return s if s != "auto" else ("paper" if self.config.backbone.name_or_path else "compact")

    @property
    def packed(self) -> bool:
        p = self.config.pack_seqrec
        if p and self.style != "compact":
            raise ValueError(f"{self.info.name}: pack_seqrec=true needs prompt_style=compact (the paper prompt puts "
                             "English text between history and answer); set pack_seqrec=false or null")
        return self.style == "compact" if p is None else p

    def prompt(self, history: list[int]) -> list[int]:
        """The seqrec prompt of a history, cut to ``max_prompt_tokens``."""
        return self.enc.seqrec(history)[-self.config.max_prompt_tokens:]

    def seqrec_sft_examples(self, data, enc: PromptEncoder, rng: random.Random) -> list[Example]:
        """History -> next item supervision: packed windows (compact) or one example per prefix."""
        cap = self.config.max_train_samples
        seed = rng.randint(0, 2**31)
        if self.packed:
            windows = training_windows(data.train_sequences(), data.max_history)
            if cap is not None and cap < len(windows):
                keep = np.sort(np.random.default_rng(seed).choice(len(windows), cap, replace=False))
                windows = [windows[i] for i in keep]
            return packed_seqrec_examples(enc, windows)
        train = data.train_samples(cap, seed=seed)
        return seqrec_examples(enc, data.sid, train.histories, train.targets)

    def _corpus(self, data) -> list[str]:
        texts = [t for t in data.item_text if t] if (self.style == "paper" or self.uses_item_text()) else []
        base = [ALPACA, SEQREC_TEMPLATE] if self.style == "paper" else []
        return [*base, *self.extra_corpus(data), *texts]

    def _encoder(self, data) -> PromptEncoder:
        return PromptEncoder(self.bb.tokenizer, self.bb.sid_token_ids, data.codes, style=self.style,
                             sid_text=data.sid, max_text_tokens=self.config.max_text_tokens)

    def _adopt(self, bb, data, folder: Path | None = None, strict_modules: bool = True) -> None:
        """Make ``bb`` the method's backbone: attach the method's modules (restoring their saved
        weights from ``folder``), move to the device, rebuild the encoder and the trie tensors.
        ``strict_modules=False`` (a shared SFT stage, which does not train them): a module the stage does not
        have (it was published by a method without it, e.g. GREAM for LASAR's head) or has in another shape
        (LASAR's head for another N_max) gets the weights it had before this call (the run's own build): the
        same as the method's own stage would hold, so the run's result does not depend on which row
        published the stage (a mismatched shape used to keep a fresh draw, and the row changed with it)."""
        import torch

        from bench.generative.decoding import TrieTensors

        self.bb = bb
        before = {n: m.state_dict() for n, m in (getattr(self, "modules", None) or {}).items()}
        self.modules = self.attach_modules(bb.model)
        if folder is not None and self.modules:
            path = Path(folder) / MODULES_FILE
            if path.is_file():
                state = torch.load(path, weights_only=True)
            elif strict_modules:
                raise FileNotFoundError(f"{path}: the saved extra modules ({', '.join(self.modules)}) are missing")
            else:
                state = {}
            for name, module in self.modules.items():
                saved = state.get(name)
                if not strict_modules and not _fits(saved, module):
                    saved = before.get(name)  # the run's own build-time weights
                    if not _fits(saved, module):
                        continue
                module.load_state_dict(saved)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.bb.model.to(self.device)
        self.enc = self._encoder(data)
        self.trie = TrieTensors(data.trie, self.bb.sid_token_ids, self.device)
        self.sid_text, self.n_items = data.sid, data.n_items

    def _build(self, data, ctx) -> None:
        from bench import distributed

        _ = self.packed  # a contradictory setting fails before any work
        bb_dir = ctx.workdir / "backbone_init"
        with distributed.main_process_first():  # multi-process launch: every process loads the main one's
            if bb_dir.is_dir():  # resume: the same tokenizer and initial weights as the first attempt
                self._adopt(load_backbone(bb_dir, data.sid_levels, data.codebook_size), data, bb_dir)
            else:
                bb = build_backbone(self.config.backbone, sid_tokens=data.sid_vocabulary(),
                                    levels=data.sid_levels, codebook_size=data.codebook_size,
                                    corpus=self._corpus(data), seed=ctx.seed, extra_tokens=self.extra_special_tokens())
                self._adopt(bb, data)
                if distributed.is_main():
                    with atomic_dir(bb_dir) as tmp:
                        self.save(tmp)

    def _collate(self, batch):
        return collate(batch, self.bb.pad_id, self.config.max_prompt_tokens)

    def _decode(self, model, histories, *, k: int, width: int, phase: str, batch_size: int | None = None):
        """Top-k items and scores per history with the shared trie-constrained beam search from
        :meth:`prefix` in ``phase``, and the per-user statistics the prefix reported (``aux["per_user"]``)."""
        import torch

        from bench.generative.decoding import constrained_beam_search

        width = max(width, k)
        out_items, out_scores, stats = [], [], {}
        bs = batch_size or self.config.decode_batch_size
        with torch.no_grad():
            for s in range(0, len(histories), bs):
                state, aux = self.prefix(model, histories[s:s + bs], phase)
                for name, values in (aux.get("per_user") or {}).items():
                    stats.setdefault(name, []).append(np.asarray(values.cpu() if hasattr(values, "cpu") else values))
                res = constrained_beam_search(model, self.trie, prefix=state, beam_width=width)
                out_items.append(res.items[:, :k].cpu())
                out_scores.append(res.scores[:, :k].cpu())
        return (torch.cat(out_items).numpy(), torch.cat(out_scores).numpy(),
                {name: np.concatenate(v) for name, v in stats.items()})

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

    def _selection(self, ctx, valid) -> dict:
        if self.config.valid_metric == "loss":
            return {"metric": "SFT loss (method_config.valid_metric=loss)", "split": "valid",
                    "users": min(self.config.valid_max_users, len(valid))}
        return ctx.selection(self.config.valid_max_users, len(valid))

    def run_phase(self, phase: Phase, data, ctx) -> dict:
        """The one driver for a phase: trained here (no stage), or trained once and reused through the stage
        cache; the facts as :class:`Phase` describes them."""
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
        key = {"recipe": self.sft_recipe or self.info.name, "data": data.fingerprint, "prompt_style": self.style,
               "config": self.config.model_dump(mode="json", exclude=self.non_sft_fields), "seed": ctx.seed,
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
                      name="sft", lengths=[len(e.prompt) + len(e.response) for e in examples], param_groups=groups)
        facts["seconds"] = round(time.time() - t0, 1)
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
        state = self.rl_init()
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
        cfg = TrainConfig(epochs=rl.epochs, lr=rl.lr, batch_size=rl.batch_prompts, patience=rl.epochs,
                          max_minutes=rl.max_minutes)
        groups = (lambda m: self.param_groups(m, "rl")) if self.param_groups(self.bb.model, "rl") else None
        facts = train(self.bb.model, loss, batch, lambda b: b, cfg, workdir=ctx.workdir,
                      valid_fn=valid_fn, seed=ctx.seed, progress=ctx.progress, log=ctx.log,
                      name="grpo", restore_best=False,  # the validation score is logged, not used to pick RL weights
                      param_groups=groups, updates_per_batch=rl.updates_per_rollout)
        if loss.stats:
            facts["mean_reward"] = round(float(np.mean([s["reward"] for s in loss.stats])), 5)
            facts["group_hit_rate"] = round(float(np.mean([s["hit"] for s in loss.stats])), 5)
        after = facts["history"][-1] if facts["history"] else {}
        key = next((k for k in before if k.startswith("valid_NDCG")), "valid_loss")
        facts["valid_before"] = {key: before[key]}
        facts["valid_after"] = {key: after.get(key)}
        ctx.log(f"grpo: group hit rate {facts.get('group_hit_rate')}, mean reward {facts.get('mean_reward')}, "
                f"{key} {before[key]} -> {after.get(key)} on the same validation users")
        facts["prompts"] = len(batch)
        facts["updates_per_rollout"] = rl.updates_per_rollout
        facts.update(self.rl_facts(state))
        facts["seconds"] = round(time.time() - t0, 1)
        return facts

    def recommend(self, histories, *, k, beam_width: int = 50):
        items, scores, stats = self._decode(self.bb.model, histories, k=k, width=beam_width, phase="test")
        return Recommendations(items, scores, stats=stats)

    def describe(self):
        if not hasattr(self, "bb"):
            return {}
        return {"backbone": self.bb.source, "parameters": self.bb.n_parameters(), "prompt_style": self.style,
                "packed_seqrec": self.packed, "vocab_size": len(self.bb.tokenizer),
                "extra_modules": sorted(getattr(self, "modules", {}) or {}),
                "decoder": "trie-constrained beam search (bench.generative.decoding)"}

    def save(self, path: Path) -> None:
        """The backbone (weights + tokenizer) and the attached modules' weights."""
        import torch

        self.bb.save(Path(path))
        if getattr(self, "modules", None):
            torch.save({name: m.state_dict() for name, m in self.modules.items()}, Path(path) / MODULES_FILE)

    def load(self, path: Path, data) -> None:
        self._adopt(load_backbone(Path(path), data.sid_levels, data.codebook_size), data, Path(path))
        self.bb.model.eval()


MODULES_FILE = "extra_modules.pt"


def _fits(saved: dict | None, module) -> bool:
    """Whether a saved state dict loads into ``module`` (present, same keys, same shapes)."""
    if saved is None:
        return False
    own = module.state_dict()
    return set(saved) == set(own) and all(v.shape == own[k].shape for k, v in saved.items())


def phase_rng(seed: int, phase: str) -> random.Random:
    """A phase's own random stream, from the run's seed and the phase's name. The SFT stage draws from
    ``random.Random(seed)``; every later phase from its own stream, so what it draws (GRPO's prompts) does
    not depend on whether the SFT stage was trained in this run or reused from the stage cache (it did: a
    reused stage skipped SFT's draws, and the same run id gave different RL rows)."""
    return random.Random(f"{seed}:{phase}")
