"""Base of SID-generating LLM methods: the hooks a plugin fills, the backbone it builds and adopts, and ranking
with the shared trie-constrained beam search from the method's prefix. Training is the phase pipeline
(:mod:`bench.generative.pipeline`: SFT -> the method's middle phases -> GRPO)."""
from __future__ import annotations

import random
from pathlib import Path
from typing import ClassVar

import numpy as np

from bench.atomic import atomic_dir
from bench.generative.backbone import build_backbone, load_backbone
from bench.generative.config import GenerativeConfig
from bench.generative.pipeline import Phase, PhasePipeline  # noqa: F401  (Phase: re-exported for plugins)
from bench.generative.prompts import (ALPACA, SEQREC_TEMPLATE, START_TOKEN, Example, PromptEncoder, collate,
                                      packed_seqrec_examples, seqrec_examples, training_windows)
from bench.generative.training import causal_lm_loss
from bench.method import Method, Recommendations


#: who asks a method for its decoding prefix (:meth:`GenerativeMethod.prefix`)
PHASES = ("sft-valid", "stage-2", "rollout", "test")

#: the methods a generative plugin may override (everything else is the core's; a contract test checks
#: every registered plugin)
HOOKS = frozenset({"sft_examples", "sft_loss", "extra_special_tokens", "attach_modules", "prefix",
                   "completion_logprobs", "rl_init", "rl_extra_terms", "rl_facts", "rl_prompts", "middle_phases",
                   "param_groups", "uses_item_text", "extra_corpus", "describe", "sft_is_seqrec", "paper_latency_row"})


class GenerativeMethod(PhasePipeline, Method):
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
    #: the fields the plain seqrec SFT reads (its stage key when :meth:`sft_is_seqrec`)
    seqrec_sft_fields: ClassVar[set[str]] = set(GenerativeConfig.model_fields) - {"rl", "decode_batch_size", "reuse_sft"}

    @classmethod
    def inert_settings(cls, config):
        rl = config.get("rl")
        if isinstance(rl, dict) and rl.get("enabled") is False:
            return {"rl.keep", "rl.valid_every"}  # RL model selection: read only when RL runs (SFT-only rows)
        return set()

    # ------------------------------------------------------------ hooks for subclasses
    def sft_is_seqrec(self) -> bool:
        """Whether this method's SFT stage is the plain seqrec recipe (:meth:`seqrec_sft_examples` on a backbone
        built with the base tokens and corpus): then its stage-cache entry is keyed by the generative fields
        alone and shared with every other method whose SFT it is (MiniOneRec without alignment tasks and
        LASAR's Stage 1 are one entry). Default: the method does not override :meth:`sft_examples`."""
        return type(self).sft_examples is GenerativeMethod.sft_examples

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

    def _encoder(self, data, bb=None) -> PromptEncoder:
        bb = bb or self.bb
        return PromptEncoder(bb.tokenizer, bb.sid_token_ids, data.codes, style=self.style,
                             sid_text=data.sid, max_text_tokens=self.config.max_text_tokens)

    def _adopt(self, bb, data, folder: Path | None = None, strict_modules: bool = True,
               keep_modules: bool = False) -> None:
        """Make ``bb`` the method's backbone: attach the method's modules (restoring their saved
        weights from ``folder``), move to the device, rebuild the encoder and the trie tensors.
        ``strict_modules=False`` (a shared SFT stage, which does not train them): a module the stage does not
        have (it was published by a method without it, e.g. GREAM for LASAR's head) or has in another shape
        (LASAR's head for another N_max) gets the weights it had before this call (the run's own build): the
        same as the method's own stage would hold, so the run's result does not depend on which row
        published the stage (a mismatched shape used to keep a fresh draw, and the row changed with it).
        ``keep_modules`` (no ``folder``): the modules keep the weights they had (the same model with a
        larger vocabulary, :func:`~bench.generative.backbone.extend_vocabulary`)."""
        import torch

        from bench.device import torch_device
        from bench.generative.decoding import TrieTensors

        self.bb = bb
        before = {n: m.state_dict() for n, m in (getattr(self, "modules", None) or {}).items()}
        self.modules = self.attach_modules(bb.model)
        if keep_modules and folder is None:
            for name, module in self.modules.items():
                if _fits(before.get(name), module):
                    module.load_state_dict(before[name])
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
        self.device = torch_device()
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
