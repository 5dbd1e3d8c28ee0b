"""One GRPO implementation (MiniOneRec now, LASAR later), plugged into the shared training loop as a loss.

Rollouts are the constrained beam search itself: G beams -> G distinct real items per prompt, beam
rank = position in the group. Reward = rule + NDCG-rule (LASAR App. E.5 / MiniOneRec);
advantages are group-normalised; the objective is the clipped ratio with a k3 KL to a frozen
reference.

Sign of the NDCG rule: App. E.5 writes ``w_i / sum_j w_j`` with ``w_i = -1/log2(i+2)``, which is
positive and would *reward* wrong candidates, contradicting its own text ("penalizes non-target
candidates"). MiniOneRec's code computes ``-w_i / sum_j w_j`` with ``w_i = -1/log2(i+2)``: a
penalty. We implement the penalty: a wrong candidate at 0-based rank i gets
``-(1/log2(i+2)) / sum_j 1/log2(j+2)`` when the target is in the group, else 0.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

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
    max_prompts: int | None = Field(None, ge=1, description="cap on RL training prompts (random subset)")
    max_minutes: float | None = Field(None, gt=0)
    adv_eps: float = 1e-4


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


def grpo_token_loss(logp, old_logp, ref_logp, adv, mask, clip_eps: float, beta: float) -> torch.Tensor:
    """Clipped surrogate + beta * k3 KL, averaged over each sequence's tokens, then over sequences.
    logp/old_logp/ref_logp/mask: [N, T]; adv: [N]."""
    import torch

    ratio = torch.exp(logp - old_logp)
    a = adv.unsqueeze(1)
    surrogate = torch.min(ratio * a, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * a)
    d = ref_logp - logp
    kl = torch.exp(d) - d - 1
    per_token = -(surrogate - beta * kl)
    per_seq = (per_token * mask).sum(1) / mask.sum(1).clamp(min=1)
    return per_seq.mean()


def completion_logprobs(model, prompts: list[list[int]], completions: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Per-token log-probabilities of G completions per prompt: ``completions`` [B, G, T] -> [B, G, T].

    Each prompt is encoded once; its KV cache is repeated G times for the completion tokens (the
    rollout group shares the prompt), so a GRPO step costs one prompt pass per prompt, not G.
    Differentiable end to end (the repeated cache keeps its graph)."""
    import torch
    from transformers import DynamicCache

    from bench.generative.decoding import native_gqa
    from bench.generative.prompts import left_pad, positions

    B, G, T = completions.shape
    device = next(model.parameters()).device
    p_ids, p_mask = (t.to(device) for t in left_pad(prompts, pad_id))
    completions = completions.to(device)
    config = getattr(model, "module", model).config  # the model may be wrapped (DDP)
    with native_gqa():
        out = model(input_ids=p_ids, attention_mask=p_mask, position_ids=positions(p_mask),
                    past_key_values=DynamicCache(config=config), use_cache=True, logits_to_keep=1)
        first = torch.log_softmax(out.logits[:, -1].float(), -1).gather(1, completions[:, :, 0])  # [B, G]
        if T == 1:
            return first.unsqueeze(-1)
        cache = out.past_key_values
        cache.batch_repeat_interleave(G)
        ids = completions[:, :, :-1].reshape(B * G, T - 1)
        mask = torch.cat([p_mask.repeat_interleave(G, 0), p_mask.new_ones(B * G, T - 1)], 1)
        pos = p_mask.sum(-1).repeat_interleave(G).unsqueeze(1) + torch.arange(T - 1, device=device)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                       use_cache=True).logits.float()
    rest = torch.log_softmax(logits, -1).gather(-1, completions[:, :, 1:].reshape(B * G, T - 1, 1)).squeeze(-1)
    return torch.cat([first.reshape(B * G, 1), rest], 1).reshape(B, G, T)


@dataclass
class GRPOLoss:
    """``loss_fn(model, batch)`` for the shared training loop. A batch is a list of
    ``(prompt_ids, target_item)``. ``rollout(model, prompts, G) -> (items [B,G], tokens [B,G,T])``
    defaults to the constrained beam search; ``logprobs(model, prompts, tokens [B,G,T], pad_id)
    -> [B,G,T]`` to :func:`completion_logprobs`. LASAR passes its own (latent loop first)."""

    ref_model: object
    cfg: GRPOConfig
    pad_id: int
    rollout: Callable
    logprobs: Callable = completion_logprobs
    reward_fn: Callable = ranking_reward
    stats: list = field(default_factory=list)

    def __call__(self, model, batch) -> torch.Tensor:
        import torch

        prompts = [p for p, _ in batch]
        target = torch.tensor([t for _, t in batch])
        G = self.cfg.num_generations
        policy = getattr(model, "module", model)
        was_training = policy.training
        policy.eval()
        with torch.no_grad():
            items, tokens = self.rollout(policy, prompts, G)
        policy.train(was_training)
        items, tokens = items.cpu(), tokens.cpu()
        valid = items >= 0
        rewards = self.reward_fn(items, target)
        adv = group_advantages(rewards, self.cfg.adv_eps, valid)
        tokens = tokens.clamp(min=0)  # missing candidates (fewer than G items) are masked below
        logp = self.logprobs(model, prompts, tokens, self.pad_id).flatten(0, 1)      # [B*G, T]
        with torch.no_grad():
            ref = self.logprobs(self.ref_model, prompts, tokens, self.pad_id).flatten(0, 1)
        mask = valid.reshape(-1, 1).expand_as(logp).float().to(logp.device)
        loss = grpo_token_loss(logp, logp.detach(), ref, adv.reshape(-1).to(logp.device), mask,
                               self.cfg.clip_eps, self.cfg.beta)
        self.stats.append({"reward": float(rewards[valid].mean()), "hit": float(rule_reward(items, target).sum(1).mean())})
        return loss


def beam_rollout(trie, pad_id: int):
    """The default rollout: constrained beam search; tokens are the SID token ids."""
    import torch

    from bench.generative.decoding import constrained_beam_search

    def rollout(model, prompts, G):
        res = constrained_beam_search(model, trie, prompts=prompts, pad_id=pad_id, beam_width=G)
        levels = torch.arange(res.codes.shape[-1], device=res.codes.device)
        tokens = trie.sid_token_ids[levels, res.codes]
        return res.items, tokens

    return rollout
