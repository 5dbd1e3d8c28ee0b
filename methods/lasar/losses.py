"""LASAR's loss terms: the step-wise alignment distances (Eq. 4) and the REINFORCE objective (Eq. 6)."""
from __future__ import annotations


def bidir_kl(a, b):
    """0.5 * (KL(softmax(a) || softmax(b)) + KL(softmax(b) || softmax(a))), softmax over the hidden
    dimension; one value per row."""
    import torch

    la, lb = torch.log_softmax(a.float(), -1), torch.log_softmax(b.float(), -1)
    pa, pb = la.exp(), lb.exp()
    return 0.5 * ((pa * (la - lb)).sum(-1) + (pb * (lb - la)).sum(-1))


def align_distance(kind: str, h, anchor):
    import torch

    if kind == "kl":
        return bidir_kl(h, anchor)
    if kind == "cosine":
        return 1 - torch.nn.functional.cosine_similarity(h.float(), anchor.float(), dim=-1)
    if kind == "mse":
        return (h.float() - anchor.float()).pow(2).mean(-1)
    raise ValueError(f"unknown alignment {kind!r}")


def reinforce_loss(logits, steps, reward, baseline: float, step_penalty: float, entropy_coef: float):
    """Eq. 6: -E[(R - b - lambda N) log pi(N | h_0)] - eta H(pi). ``steps`` are 1-based."""
    import torch

    logp = torch.log_softmax(logits.float(), -1)
    chosen = logp.gather(1, (steps.long() - 1).view(-1, 1)).squeeze(1)
    adv = (reward.float() - baseline - step_penalty * steps.float()).detach()
    entropy = -(logp.exp() * logp).sum(-1)
    return -(adv * chosen).mean() - entropy_coef * entropy.mean(), entropy.mean()
