"""LASAR's RL terms on the shared GRPO: N sampled per prompt at rollout time (the RL state's generator),
terminal KL between h_N and the last anchor, REINFORCE on the policy head with an EMA baseline."""
from __future__ import annotations

import numpy as np

from methods.lasar.losses import bidir_kl, reinforce_loss


class LatentPrompt:
    """A history (item ids; iterable like one) that also carries the sample's index, which the RL terms
    read (its anchors). Never modified. Not a list subclass: data loaders rebuild lists element by element."""

    def __init__(self, history, index: int):
        self.history, self.index = list(history), index

    def __iter__(self):
        return iter(self.history)

    def __len__(self) -> int:
        return len(self.history)

    def __getitem__(self, i):
        return self.history[i]


class LatentRL:
    """Mixin of :class:`methods.lasar.method.LASAR`: the RL hooks."""

    def rl_init(self) -> dict:
        """N's sampler (seeded once per RL phase), the REINFORCE baseline and the N each rollout drew."""
        import torch

        return {"generator": torch.Generator(device=self.device).manual_seed(1234), "baseline": 0.0,
                "steps": [], "baseline_rollout": None}

    def rl_prompts(self, data, rng, n):
        if not self.latent_on("rollout"):
            return super().rl_prompts(data, rng, n)
        st = self._cot_state
        pick = sorted(rng.sample(range(len(st["cots"])), min(n, len(st["cots"]))))
        return [(LatentPrompt(st["samples"].histories[i], i), int(st["samples"].targets[i])) for i in pick]

    def rl_extra_terms(self, model, rollout, logp, aux, state):
        """Terminal KL (h_N of this policy pass vs the last segment's anchor) and REINFORCE on the head
        (the rollout's N, its group reward, the RL state's EMA baseline: updated once per rollout)."""
        import torch

        if not self.latent_on("rollout"):
            return {}
        rl, st = self.config.rl, self._cot_state
        out = {}
        idx = [p.index for p in rollout.prompts]
        if rl.terminal_kl > 0:
            last = torch.as_tensor(np.minimum(st["labels"][idx], self.config.max_steps) - 1)
            anchor = st["anchors"][torch.as_tensor(idx), last].to(self.device)
            out["terminal_kl"] = rl.terminal_kl * bidir_kl(aux["h_n"], anchor).mean()
        if rl.reinforce and self.config.forced_steps is None:
            valid = rollout.valid.float()
            reward = (rollout.rewards * valid).sum(1) / valid.sum(1).clamp(min=1)  # R_group
            loss, ent = reinforce_loss(aux["logits"], aux["steps"], reward.to(self.device), state["baseline"],
                                       rl.step_penalty, rl.entropy_coef)
            loss = rl.reinforce_coef * loss  # gamma_RF
            if rollout is not state["baseline_rollout"]:  # one baseline update per rollout
                state["baseline_rollout"] = rollout
                state["baseline"] = rl.baseline_decay * state["baseline"] + (1 - rl.baseline_decay) * float(reward.mean())
            out["reinforce"] = loss
            out["head_entropy"] = ent.detach()
        return out

    def rl_facts(self, state):
        steps = state["steps"]
        if not steps:
            return {}
        values, counts = np.unique(steps, return_counts=True)
        return {"mean_steps_sampled": round(float(np.mean(steps)), 4),
                "steps_sampled": {str(int(k)): int(v) for k, v in zip(values, counts)},
                "reinforce_baseline": round(state["baseline"], 5)}
