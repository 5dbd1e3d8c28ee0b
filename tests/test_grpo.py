import math

import pytest
import torch

from bench.generative.grpo import (group_advantages, grpo_token_loss, ndcg_rule_reward, ranking_reward, rule_reward)


def test_reward_table_by_hand():
    items = torch.tensor([[7, 3, 9, 5], [1, 2, 3, 4]])
    target = torch.tensor([9, 8])
    w = [1 / math.log2(i + 2) for i in range(4)]  # 1, 0.6309, 0.5, 0.4307
    s = sum(w)
    assert rule_reward(items, target).tolist() == [[0, 0, 1, 0], [0, 0, 0, 0]]
    nd = ndcg_rule_reward(items, target)
    assert nd[0].tolist() == pytest.approx([-w[0] / s, -w[1] / s, 0.0, -w[3] / s])
    assert nd[1].tolist() == [0.0, 0.0, 0.0, 0.0]  # target absent: no penalty
    assert ranking_reward(items, target)[0].tolist() == pytest.approx([-w[0] / s, -w[1] / s, 1.0, -w[3] / s])


def test_group_advantages_by_hand():
    r = torch.tensor([[1.0, 0.0, 0.0, 0.0], [2.0, 2.0, 2.0, 2.0]])
    a = group_advantages(r, eps=1e-4)
    std = math.sqrt(((0.75 ** 2) + 3 * (0.25 ** 2)) / 3)  # unbiased
    assert a[0].tolist() == pytest.approx([0.75 / (std + 1e-4)] + [-0.25 / (std + 1e-4)] * 3)
    assert a[1].tolist() == [0.0] * 4


def test_group_advantages_ignore_missing_candidates():
    r = torch.tensor([[1.0, 0.0, 5.0]])
    a = group_advantages(r, valid=torch.tensor([[True, True, False]]))
    assert a[0, 2] == 0 and a[0, 0] == pytest.approx(-a[0, 1])


def test_grpo_loss_gradient_direction_and_kl():
    logp = torch.tensor([[-1.0, -2.0], [-1.0, -2.0]], requires_grad=True)
    adv = torch.tensor([1.0, -1.0])
    mask = torch.ones(2, 2)
    loss = grpo_token_loss(logp, logp.detach(), logp.detach(), adv, mask, 0.2, 0.0)
    loss.backward()
    # descending the loss raises log-probs of the positive-advantage sequence, lowers the other
    assert (logp.grad[0] < 0).all() and (logp.grad[1] > 0).all()
    # k3 KL is zero when policy == reference and positive otherwise
    lp = torch.tensor([[-1.0]])
    zero = grpo_token_loss(lp, lp, lp, torch.zeros(1), torch.ones(1, 1), 0.2, 1.0)
    pos = grpo_token_loss(lp, lp, lp - 0.5, torch.zeros(1), torch.ones(1, 1), 0.2, 1.0)
    assert zero.item() == 0.0 and pos.item() == pytest.approx(math.exp(-0.5) + 0.5 - 1)


def test_clipping_stops_gradient_beyond_eps():
    logp = torch.tensor([[0.0]], requires_grad=True)
    old = torch.tensor([[-1.0]])  # ratio e > 1.2 with positive advantage: clipped, no gradient
    grpo_token_loss(logp, old, logp.detach(), torch.tensor([1.0]), torch.ones(1, 1), 0.2, 0.0).backward()
    assert logp.grad.abs().item() == 0.0
