"""One GRPO implementation (MiniOneRec now, LASAR later), plugged into the shared training loop as a loss.

Rollouts are the constrained beam search itself: G beams -> G distinct real items per prompt, beam
rank = position in the group. Reward = rule + NDCG-rule (LASAR App. E.5 / MiniOneRec);
advantages are group-normalised; the objective is the clipped ratio with a k3 KL to a frozen
reference.

The ratio is taken against the *rollout* policy: the log-probs of the completions under the weights
that produced them, computed once per rollout batch. With ``updates_per_rollout: 1`` (the default,
as MiniOneRec / TRL's ``num_iterations=1``) every update is on-policy, the ratio is exactly 1 and the
clip never binds; with ``updates_per_rollout: mu > 1`` the same rollout serves mu optimizer steps and
the clip bounds the later ones (the fraction of clipped tokens is recorded).

Sign of the NDCG rule: App. E.5 writes ``w_i / sum_j w_j`` with ``w_i = -1/log2(i+2)``, which is
positive and would *reward* wrong candidates, contradicting its own text ("penalizes non-target
candidates"). MiniOneRec's code computes ``-w_i / sum_j w_j`` with ``w_i = -1/log2(i+2)``: a
penalty. We implement the penalty: a wrong candidate at 0-based rank i gets
``-(1/log2(i+2)) / sum_j 1/log2(j+2)`` when the target is in the group, else 0.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import torch


class GRPOConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True
    num_generations: int = Field(16, ge=2, description="G: beams per prompt (MiniOneRec: 16)")
    beta: float = Field(1e-3, ge=0, description="KL weight (k3 estimator) to the frozen reference")
    clip_eps: float = Field(0.2, gt=0)
    lr: float = Field(1e-5, gt=0)
    epochs: int = Field(1, ge=1)
    batch_prompts: int = Field(8, ge=1, description="prompts per optimizer step")
    updates_per_rollout: int = Field(1, ge=1, description="mu: optimizer steps per rollout batch; 1 = on-policy "
                                                          "(ratio 1, clip inactive), >1 = the clip binds")
    max_prompts: int | None = Field(None, ge=1, description="cap on RL training prompts (random subset)")
    max_minutes: float | None = Field(None, gt=0)
    adv_eps: float = 1e-4
    # model selection, as every phase: RL's objective is not the validation score, and on Beauty the validation
    # NDCG@10 fell during RL in MiniOneRec and in all three LASAR RL variants while the last weights were kept
    valid_every: int | None = Field(16, ge=1, description="validate every this many optimizer steps (and after the "
                                                          "last); None = once, after the last step")
    keep: Literal["best", "last"] = Field("best", description="best = the best validated weights, the SFT weights "
                                                              "(step 0) included; last = the weights after the last step")


def rule_reward(items: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 for the exact target item, 0 otherwise. items [B, G], target [B]."""
    return (items == target.unsqueeze(1)).float()


def ndcg_rule_reward(items: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    import torch

    G = items.shape[1]
    w = 1.0 / torch.log2(torch.arange(G, dtype=torch.float32, device=items.device) + 2)
    hit = items == target.unsqueeze(1)
    penalty = (-w / w.sum()).expand_as(items).clone()
    penalty[hit] = 0.0
    return torch.where(hit.any(1, keepdim=True), penalty, torch.zeros_like(penalty))


def ranking_reward(items: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return rule_reward(items, target) + ndcg_rule_reward(items, target)


def group_advantages(rewards: torch.Tensor, eps: float = 1e-4, valid: torch.Tensor | None = None) -> torch.Tensor:
    """(r - mean) / (std + eps) within each group (row); std unbiased, as TRL/MiniOneRec.
    ``valid`` masks candidates that do not exist (fewer than G items): they get advantage 0."""
    import torch

    if valid is None:
        valid = torch.ones_like(rewards, dtype=torch.bool)
    n = valid.sum(1, keepdim=True).clamp(min=1)
    mean = (rewards * valid).sum(1, keepdim=True) / n
    var = (((rewards - mean) ** 2) * valid).sum(1, keepdim=True) / (n - 1).clamp(min=1)
    return torch.where(valid, (rewards - mean) / (var.sqrt() + eps), torch.zeros_like(rewards))


def grpo_token_terms(logp, old_logp, ref_logp, adv, mask, clip_eps: float, beta: float) -> dict:
    """The GRPO objective and its parts: ``loss`` = -(clipped surrogate - beta * k3 KL), averaged over
    each sequence's tokens, then over sequences; ``kl`` and ``clip_fraction`` (share of tokens whose
    ratio left [1 - eps, 1 + eps]) are detached diagnostics. logp/old_logp/ref_logp/mask: [N, T]; adv: [N]."""
    import torch

    ratio = torch.exp(logp - old_logp)
    a = adv.unsqueeze(1)
    surrogate = torch.min(ratio * a, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * a)
    d = ref_logp - logp
    kl = torch.exp(d) - d - 1
    per_token = -(surrogate - beta * kl)
    denom = mask.sum(1).clamp(min=1)
    loss = ((per_token * mask).sum(1) / denom).mean()
    with torch.no_grad():
        clipped = ((ratio < 1 - clip_eps) | (ratio > 1 + clip_eps)).float()
        n_tok = mask.sum().clamp(min=1)
        kl_mean = float(((kl * mask).sum(1) / denom).mean())
        clip_fraction = float((clipped * mask).sum() / n_tok)
    return {"loss": loss, "kl": kl_mean, "clip_fraction": clip_fraction}


def grpo_token_loss(logp, old_logp, ref_logp, adv, mask, clip_eps: float, beta: float) -> torch.Tensor:
    """Clipped surrogate + beta * k3 KL (see :func:`grpo_token_terms`)."""
    return grpo_token_terms(logp, old_logp, ref_logp, adv, mask, clip_eps, beta)["loss"]


def prefix_completion_logprobs(model, prefix, completions: torch.Tensor) -> torch.Tensor:
    """Per-token log-probabilities of G completions per row of a :class:`PrefixState` (``completions``
    [B, G, T] -> [B, G, T]). The prefix is encoded once and its KV cache repeated G times (the group
    shares it); differentiable end to end when the prefix was built with grad (its cache keeps the
    graph). The given prefix is not modified."""
    import copy

    import torch

    from bench.generative.decoding import native_gqa, with_cache

    B, G, T = completions.shape
    device = prefix.last_logits.device
    completions = completions.to(device)
    first = torch.log_softmax(prefix.last_logits.float(), -1).gather(1, completions[:, :, 0])  # [B, G]
    if T == 1:
        return first.unsqueeze(-1)
    cache = copy.copy(prefix.cache)  # new layer objects, the same (graph-carrying) tensors
    cache.layers = [copy.copy(layer) for layer in prefix.cache.layers]
    cache.batch_repeat_interleave(G)
    ids = completions[:, :, :-1].reshape(B * G, T - 1)
    p_mask = prefix.attention_mask
    mask = torch.cat([p_mask.repeat_interleave(G, 0), p_mask.new_ones(B * G, T - 1)], 1)
    pos = prefix.next_position.repeat_interleave(G).unsqueeze(1) + torch.arange(T - 1, device=device)
    with native_gqa():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, **with_cache(model, cache),
                       use_cache=True).logits.float()
    rest = torch.log_softmax(logits, -1).gather(-1, completions[:, :, 1:].reshape(B * G, T - 1, 1)).squeeze(-1)
    return torch.cat([first.reshape(B * G, 1), rest], 1).reshape(B, G, T)


def completion_logprobs(model, prompts: list[list[int]], completions: torch.Tensor, pad_id: int) -> torch.Tensor:
    """:func:`prefix_completion_logprobs` after prefilling token prompts (with grad)."""
    from bench.generative.decoding import prefill
    from bench.generative.prompts import left_pad

    device = next(model.parameters()).device
    p_ids, p_mask = (t.to(device) for t in left_pad(prompts, pad_id))
    return prefix_completion_logprobs(model, prefill(model, p_ids, p_mask, grad=True), completions)


@dataclass
class Rollout:
    """One rollout batch, as the RL loss terms see it."""

    prompts: list                 # what the batch carried per row (token ids, or histories)
    target: torch.Tensor          # [B] target item ids
    items: torch.Tensor           # [B, G] item ids (-1: fewer than G candidates)
    tokens: torch.Tensor          # [B, G, T] completion token ids
    valid: torch.Tensor           # [B, G] bool
    rewards: torch.Tensor         # [B, G]
    advantages: torch.Tensor      # [B, G]
    old_logp: torch.Tensor | None = None   # [B*G, T] under the rollout policy (mu > 1)
    ref_logp: torch.Tensor | None = None   # [B*G, T] under the frozen reference
    aux: dict = field(default_factory=dict)  # what the rollout's prefix decided per prompt (LASAR: N)


@dataclass
class GRPOLoss:
    """``loss_fn(model, batch)`` for the shared training loop. A batch is a list of
    ``(prompt, target_item)``; a prompt is whatever ``rollout`` and ``logprobs`` read (token ids by
    default; the generative base passes histories and its hooks).

    ``rollout(model, prompts, G) -> (items [B,G], tokens [B,G,T], aux)`` (:func:`beam_rollout`: the
    constrained beam search); ``logprobs(model, prompts, tokens [B,G,T], given) -> ([B,G,T], aux)``
    (differentiable; ``given`` is the rollout's ``aux``, so a per-prompt choice made at rollout time holds in
    every pass that re-scores it); ``extra_terms(model, rollout, logp, aux) -> {name: scalar tensor}`` adds
    loss terms that see the rollout, its advantages and the policy pass's ``aux`` (LASAR's terminal KL and
    REINFORCE), each logged by name; a value without a graph (a detached diagnostic such as the head's
    entropy) is logged and not added.

    The rollout, its rewards, reference log-probs and rollout-policy log-probs are computed once per
    batch object and reused by the ``updates_per_rollout`` optimizer steps the loop takes on it."""

    ref_model: object
    cfg: GRPOConfig
    rollout: Callable
    logprobs: Callable
    reward_fn: Callable = ranking_reward
    extra_terms: Callable | None = None
    stats: list = field(default_factory=list)
    _batch: object = field(default=None, repr=False)
    _rollout: Rollout | None = field(default=None, repr=False)

    def _new_rollout(self, model, batch) -> Rollout:
        import torch

        prompts = [p for p, _ in batch]
        target = torch.tensor([t for _, t in batch])
        G = self.cfg.num_generations
        policy = getattr(model, "module", model)
        was_training = policy.training
        policy.eval()
        with torch.no_grad():
            items, tokens, aux = self.rollout(policy, prompts, G)
            items, tokens = items.cpu(), tokens.cpu()
            valid = items >= 0
            rewards = self.reward_fn(items, target)
            adv = group_advantages(rewards, self.cfg.adv_eps, valid)
            tokens = tokens.clamp(min=0)  # missing candidates (fewer than G items) are masked below
            ref = self.logprobs(self.ref_model, prompts, tokens, aux)[0].flatten(0, 1)
            old = self.logprobs(policy, prompts, tokens, aux)[0].flatten(0, 1) if self.cfg.updates_per_rollout > 1 \
                else None
        policy.train(was_training)
        self.stats.append({"reward": float(rewards[valid].mean()), "hit": float(rule_reward(items, target).sum(1).mean())})
        return Rollout(prompts, target, items, tokens, valid, rewards, adv, old, ref, aux)

    def __call__(self, model, batch) -> dict:
        if batch is not self._batch or self._rollout is None:
            self._batch, self._rollout = batch, self._new_rollout(model, batch)
        r = self._rollout
        logp, aux = self.logprobs(model, r.prompts, r.tokens, r.aux)
        logp = logp.flatten(0, 1)                                            # [B*G, T]
        mask = r.valid.reshape(-1, 1).expand_as(logp).float().to(logp.device)
        old = r.old_logp.to(logp.device) if r.old_logp is not None else logp.detach()
        terms = grpo_token_terms(logp, old, r.ref_logp.to(logp.device), r.advantages.reshape(-1).to(logp.device), mask,
                                 self.cfg.clip_eps, self.cfg.beta)
        out = {"loss": terms["loss"], "grpo": float(terms["loss"].detach()), "kl": terms["kl"],
               "clip_fraction": terms["clip_fraction"]}
        if self.extra_terms is not None:
            for name, value in self.extra_terms(model, r, logp, aux).items():
                if getattr(value, "requires_grad", False):  # a loss term; a detached value is logged only
                    out["loss"] = out["loss"] + value
                out[name] = value
        return out


def beam_rollout(trie, pad_id: int, prefix_fn: Callable | None = None):
    """The default rollout: constrained beam search; tokens are the SID token ids. ``prefix_fn(model,
    prompts) -> (PrefixState, aux)`` decodes from a method's own prefix and returns what it decided per
    prompt (default: prefill token prompts, ``aux`` empty)."""
    import torch

    from bench.generative.decoding import constrained_beam_search

    def rollout(model, prompts, G):
        aux = {}
        if prefix_fn is None:
            res = constrained_beam_search(model, trie, prompts=prompts, pad_id=pad_id, beam_width=G)
        else:
            state, aux = prefix_fn(model, prompts)
            res = constrained_beam_search(model, trie, prefix=state, beam_width=G)
        levels = torch.arange(res.codes.shape[-1], device=res.codes.device)
        tokens = trie.sid_token_ids[levels, res.codes]
        return res.items, tokens, aux

    return rollout
