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


def _logprobs_one_by_one(model, prompts, completions, pad_id):
    """Reference: every (prompt, completion) pair encoded on its own, no padding, no cache."""
    rows = []
    for b, prompt in enumerate(prompts):
        for g in range(completions.shape[1]):
            ids = torch.tensor([list(prompt) + completions[b, g].tolist()])
            logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1].float()
            rows.append(torch.log_softmax(logits, -1).gather(1, completions[b, g].unsqueeze(1)).squeeze(1))
    return torch.stack(rows).reshape(completions.shape)


def test_shared_prompt_logprobs_match_separate_encoding_with_gradients():
    from bench.generative.backbone import BackboneConfig, build_backbone
    from bench.generative.grpo import completion_logprobs

    bb = build_backbone(BackboneConfig(preset="tiny"), sid_tokens=[f"<a_{i}>" for i in range(8)], levels=1,
                        codebook_size=8, corpus=["hello world"], seed=0)
    model = bb.model.float().eval()
    V = model.get_input_embeddings().num_embeddings
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(1, V, (n,), generator=g).tolist() for n in (5, 3)]  # unequal: left padding
    completions = torch.randint(1, V, (2, 3, 4), generator=g)
    got = completion_logprobs(model, prompts, completions, bb.pad_id)
    want = _logprobs_one_by_one(model, prompts, completions, bb.pad_id)
    assert got.shape == (2, 3, 4)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    # the gradients agree too (the repeated prompt cache keeps its graph)
    w = torch.randn(2, 3, 4, generator=g)
    grads = []
    for fn in (completion_logprobs, _logprobs_one_by_one):
        model.zero_grad()
        (fn(model, prompts, completions, bb.pad_id) * w).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)
    one = completion_logprobs(model, prompts, completions[:, :, :1], bb.pad_id)  # single-token completions
    torch.testing.assert_close(one, want[:, :, :1], atol=1e-5, rtol=1e-4)
