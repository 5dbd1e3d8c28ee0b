"""ReaRec (Tang et al., "Think Before Recommend", 2025): latent reasoning steps on a SASRec-style encoder.

A RecBole custom model trained by the same RecBole trainer, selection protocol, resume and evaluator as
the ``sasrec`` row (:mod:`bench.recbole_route`). After the causal pass over the history, ``reason_steps``
(K) more positions are appended one at a time: each takes the previous position's last-layer hidden
state plus a reasoning-position embedding as its input and attends to everything before it through a
per-layer KV cache. The encoder's outputs at the last item and at the K reasoning positions form
``[B, K+1, d]``; items are scored by a dot product with the item embedding table divided by ``tau``.

- ``variant: erl`` (Ensemble Reasoning Learning): the user representation is the mean of the K+1 outputs;
  loss = CE on its logits - ``kl_weight`` x the mean pairwise KL between the K+1 per-step distributions
  (diverse steps; the second distribution of each pair is a stop-gradient, as released).
- ``variant: prl`` (Progressive Reasoning Learning): the user representation is the last step's output;
  loss = CE(last step, tau) + ``pl_weight`` x mean_k CE(step k, tau x alpha^(K-k)) (earlier steps at higher
  temperature) + ``cl_weight`` x InfoNCE between the clean last reasoning state and one computed with
  Gaussian noise (``noise_std``) added to every fed-back state.

During the first ``warmup_epochs`` epochs both variants train on their CE terms only (no KL, no noise,
no contrastive term); after it, the full losses. (The public code crashes at exactly these two points:
ERL reads an unset noise factor after warm-up, PRL an unbound contrastive loss during it; here the
terms are defined in both phases and a test trains through both.)

Training routes. ``packed: true`` (default): user windows, one causal pass over a window's items for
all its prefixes, then each target position's K reasoning steps on its own view of that pass's KV cache
(its items j <= i); a user's first ``max_history + 1`` items form one window and
every later target its own window of the ``max_history`` items before it, so each target sees exactly
the history RecBole's per-prefix sample gives it (outputs and losses equal, tested). ``packed: false``:
RecBole's trainer, one sample per prefix. The only difference between the two: PRL's InfoNCE negatives
are the other samples of the batch, and a packed batch holds several prefixes of one user, which are
masked out of each other's negatives (near-copies of the positive).

Differences from the released code, by choice: positions are counted from the first item as in SASRec
(so ``reason_steps: 0`` is exactly RecBole's SASRec scoring / tau, tested); the fed-back token passes
through the same LayerNorm and dropout as an item token; the history cap is the benchmark's
``max_history`` (20 on Beauty, one protocol for every method), not 50; PRL's InfoNCE contrasts the last
reasoning state of the clean and the noisy view (one direction, temperature ``tau``); ERL adds no noise
(the released code reads an unset noise factor after warm-up: one of its two crashes); selection uses
the benchmark's protocol (NDCG@10 on the validation users), not NDCG@20.
"""
from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from bench.method import MethodInfo
from bench.registry import register
from bench.packed import target_mask
from bench.recbole_config import TransformerConfig, transformer_params
from bench.recbole_route import RecBoleMethod


def _model_class():
    """The RecBole model class (built lazily: importing RecBole is slow and only needed to train)."""
    import torch
    from recbole.model.abstract_recommender import SequentialRecommender
    from recbole.utils import InputType
    from torch import nn

    class Block(nn.Module):
        """RecBole's TransformerLayer (post-LN attention + feed-forward), with a KV cache."""

        def __init__(self, d, heads, inner, dropout, attn_dropout, eps):
            super().__init__()
            self.heads, self.dh = heads, d // heads
            self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
            self.dense, self.ln1 = nn.Linear(d, d), nn.LayerNorm(d, eps=eps)
            self.ff1, self.ff2, self.ln2 = nn.Linear(d, inner), nn.Linear(inner, d), nn.LayerNorm(d, eps=eps)
            self.attn_drop, self.drop = nn.Dropout(attn_dropout), nn.Dropout(dropout)

        def _split(self, x):
            return x.view(x.shape[0], x.shape[1], self.heads, self.dh).transpose(1, 2)

        def forward(self, x, allowed, cache=None):
            """x [B, T, d]; allowed [B, 1, T, S] (S = cached + T keys); returns (out, (K, V))."""
            q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
            if cache is not None:
                k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
            att = q @ k.transpose(-1, -2) / math.sqrt(self.dh)
            att = att + (~allowed).to(att.dtype) * -10000.0  # RecBole's additive mask
            ctx = self.attn_drop(torch.softmax(att, -1)) @ v
            ctx = ctx.transpose(1, 2).reshape(x.shape)
            h = self.ln1(self.drop(self.dense(ctx)) + x)
            f = self.drop(self.ff2(nn.functional.gelu(self.ff1(h))))
            return self.ln2(f + h), (k, v)

    class ReaRecModel(SequentialRecommender):
        input_type = InputType.POINTWISE

        def __init__(self, config, dataset):
            super().__init__(config, dataset)
            d = config["hidden_size"]
            self.K, self.variant, self.tau = config["reason_steps"], config["variant"], config["tau"]
            self.kl_weight, self.pl_weight, self.alpha = config["kl_weight"], config["pl_weight"], config["alpha"]
            self.cl_weight, self.noise_std = config["cl_weight"], config["noise_std"]
            self.warmup_epochs, self.epoch = config["warmup_epochs"], 0
            eps = config["layer_norm_eps"]
            self.item_embedding = nn.Embedding(self.n_items, d, padding_idx=0)
            self.position_embedding = nn.Embedding(self.max_seq_length, d)
            self.reason_embedding = nn.Embedding(max(self.K, 1), d)
            self.layers = nn.ModuleList([Block(d, config["n_heads"], config["inner_size"],
                                               config["hidden_dropout_prob"], config["attn_dropout_prob"], eps)
                                         for _ in range(config["n_layers"])])
            self.LayerNorm, self.dropout = nn.LayerNorm(d, eps=eps), nn.Dropout(config["hidden_dropout_prob"])
            self.apply(self._init)

        @staticmethod
        def _init(m):  # RecBole's SASRec initialisation
            if isinstance(m, (nn.Linear, nn.Embedding)):
                m.weight.data.normal_(0.0, 0.02)
            elif isinstance(m, nn.LayerNorm):
                m.bias.data.zero_()
                m.weight.data.fill_(1.0)
            if isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.data.zero_()

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

        @property
        def warm(self) -> bool:
            return self.epoch < self.warmup_epochs

        # ------------------------------------------------------------ encoder
        def _inputs(self, item_seq, item_seq_len):
            """Left-pad (RecBole pads on the right) so every row's last item is at L-1 and the reasoning
            positions follow it; positions count from each row's first item, as in SASRec."""
            L = item_seq.shape[1]
            src = torch.arange(L, device=item_seq.device).unsqueeze(0) - (L - item_seq_len).unsqueeze(1)
            real = src >= 0
            seq = torch.where(real, item_seq.gather(1, src.clamp(min=0)), torch.zeros_like(item_seq))
            x = self.item_embedding(seq) + self.position_embedding(src.clamp(min=0))
            return self.dropout(self.LayerNorm(x)), real

        def _thought(self, h, k):
            return self.dropout(self.LayerNorm(h + self.reason_embedding.weight[k]))[:, None]

        def encode_items(self, item_seq, item_seq_len):
            """The causal pass over the history: (output at the last item, per-layer KV cache, key mask)."""
            x, real = self._inputs(item_seq, item_seq_len)
            L = x.shape[1]
            allowed = (real.unsqueeze(1) & torch.ones(L, L, dtype=torch.bool, device=x.device).tril()).unsqueeze(1)
            caches = []
            for layer in self.layers:
                x, kv = layer(x, allowed, None)
                caches.append(kv)
            return x[:, -1], caches, real

        def reason(self, h, caches, keys, noise: float = 0.0):
            """K reasoning steps from the item pass's cache: [B, K+1, d] (the item output first)."""
            outs, caches = [h], list(caches)
            one = torch.ones(len(h), 1, dtype=torch.bool, device=h.device)
            for k in range(self.K):
                if noise:
                    h = h + noise * torch.randn_like(h)
                t = self._thought(h, k)
                keys = torch.cat([keys, one], 1)
                for i, layer in enumerate(self.layers):
                    t, caches[i] = layer(t, keys[:, None, None, :], caches[i])
                h = t[:, -1]
                outs.append(h)
            return torch.stack(outs, 1)

        def encode(self, item_seq, item_seq_len):
            return self.reason(*self.encode_items(item_seq, item_seq_len))

        def encode_packed(self, windows, lengths, has_target):
            """The step outputs of every target position of right-padded windows [B, T] at once:
            ``[N, K+1, d]`` for the N positions ``has_target`` marks (row-major), where the output for
            (b, i) is what :meth:`encode` gives for the history ``windows[b, :i+1]`` (tested). One causal
            pass over the items serves every position of a window; each target position then runs the K
            reasoning steps of :meth:`reason` on its own view of that pass's KV cache (its items j <= i).
            Also returns that view, for a second (noisy) reasoning pass."""
            B, T = windows.shape
            dev = windows.device
            pos = torch.arange(T, device=dev)
            real = pos.unsqueeze(0) < lengths.unsqueeze(1)
            x = self.dropout(self.LayerNorm(self.item_embedding(windows) + self.position_embedding(pos)))
            causal = (real.unsqueeze(1) & torch.ones(T, T, dtype=torch.bool, device=dev).tril()).unsqueeze(1)
            caches = []
            for layer in self.layers:
                x, kv = layer(x, causal, None)
                caches.append(kv)
            rows, at = has_target.nonzero(as_tuple=True)
            view = (x[rows, at], [(k[rows], v[rows]) for k, v in caches], causal[rows, 0, at])
            return self.reason(*view), view

        def encode_uncached(self, item_seq, item_seq_len):
            """The same outputs recomputed from scratch at every step (no KV cache): for tests."""
            base, real = self._inputs(item_seq, item_seq_len)
            B = len(base)
            inputs, keys, outs = base, real, []
            for k in range(self.K + 1):
                T = inputs.shape[1]
                allowed = (keys.unsqueeze(1) & torch.ones(T, T, dtype=torch.bool, device=base.device).tril()).unsqueeze(1)
                x = inputs
                for layer in self.layers:
                    x, _ = layer(x, allowed, None)
                h = x[:, -1]
                outs.append(h)
                if k < self.K:
                    inputs = torch.cat([inputs, self._thought(h, k)], 1)
                    keys = torch.cat([keys, torch.ones(B, 1, dtype=torch.bool, device=base.device)], 1)
            return torch.stack(outs, 1)

        def user_repr(self, outs):
            return outs.mean(1) if self.variant == "erl" else outs[:, -1]

        def logits(self, h, tau=None):
            # h / tau before the product: the [N, d] side is divided, not the [N, n_items] scores
            return (h / (tau or self.tau)) @ self.item_embedding.weight.T

        def forward(self, item_seq, item_seq_len):
            return self.user_repr(self.encode(item_seq, item_seq_len))

        # ------------------------------------------------------------ losses
        def loss_terms(self, item_seq, item_seq_len, target) -> dict:
            h0, caches, keys = self.encode_items(item_seq, item_seq_len)
            outs = self.reason(h0, caches, keys)
            return self.terms(outs, target, lambda: self.reason(h0, caches, keys, noise=self.noise_std)[:, -1])

        def packed_terms(self, windows, lengths, first=None) -> dict:
            """The losses of the prefixes of every window: the target at window position t >= ``first``
            (per row; default 1: every item but the first) is predicted from positions 0..t-1."""
            inputs, n_in = windows[:, :-1], lengths - 1  # a window's last item is only a target
            first = torch.ones_like(lengths) if first is None else first
            has_target = target_mask(lengths, first, inputs.shape[1])
            outs, view = self.encode_packed(inputs, n_in, has_target)
            target = windows[:, 1:][has_target]
            groups = torch.arange(len(windows), device=windows.device).unsqueeze(1).expand_as(has_target)[has_target]
            return self.terms(outs, target, lambda: self.reason(*view, noise=self.noise_std)[:, -1], groups)

        def terms(self, outs, target, noisy, groups=None) -> dict:
            """The variant's loss terms from the step outputs [N, K+1, d] of N samples; ``noisy()`` gives the
            last reasoning state of a noisy view (PRL's contrastive term). ``groups``: samples of one group
            (one user window, packed) are not each other's InfoNCE negatives: in a per-prefix batch the
            negatives are other users' prefixes, and a window's neighbouring prefixes are near-copies."""
            F = nn.functional
            terms = {}
            if self.variant == "erl":
                if self.K and not self.warm and self.kl_weight:
                    step_logits = self.logits(outs)  # [N, K+1, n_items]
                    # scores are linear in h: the mean representation's logits are the mean of the steps'
                    terms["ce"] = F.cross_entropy(step_logits.mean(1), target)
                    terms["kl"] = -self.kl_weight * pairwise_kl(torch.log_softmax(step_logits, -1)).mean()
                else:
                    terms["ce"] = F.cross_entropy(self.logits(outs.mean(1)), target)
                return terms
            terms["ce"] = F.cross_entropy(self.logits(outs[:, -1]), target)
            if self.K and self.pl_weight:
                pl = sum(F.cross_entropy(self.logits(outs[:, k], self.tau * self.alpha ** (self.K - k)), target)
                         for k in range(self.K)) / self.K  # the mean over the K earlier steps, as released
                terms["progressive"] = self.pl_weight * pl
            if self.K and not self.warm and self.cl_weight:
                a, b = F.normalize(outs[:, -1], dim=-1), F.normalize(noisy(), dim=-1)
                sim = a @ b.T / self.tau
                if groups is not None:
                    same = (groups.unsqueeze(0) == groups.unsqueeze(1)) & ~torch.eye(len(a), dtype=torch.bool,
                                                                                     device=a.device)
                    sim = sim.masked_fill(same, float("-inf"))
                terms["contrastive"] = self.cl_weight * F.cross_entropy(sim, torch.arange(len(a), device=a.device))
            return terms

        def calculate_loss(self, interaction):
            terms = self.loss_terms(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN],
                                    interaction[self.POS_ITEM_ID])
            return sum(terms.values())

        def predict(self, interaction):
            h = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
            return (h * self.item_embedding(interaction[self.ITEM_ID])).sum(-1) / self.tau

        def full_sort_predict(self, interaction):
            return self.logits(self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]))

    return ReaRecModel


_MODEL = None


def rearec_model_class():
    global _MODEL
    if _MODEL is None:
        _MODEL = _model_class()
        _MODEL.__name__ = "ReaRec"
    return _MODEL


@register()
class ReaRec(RecBoleMethod):
    info = MethodInfo(name="rearec", family="latent", paper="Tang et al., 2025 (ReaRec)",
                      description="SASRec-style encoder + K KV-cached latent reasoning steps (ERL or PRL)")
    demo_priority = 10
    # epochs chosen on the validation split (`run --demo ReaRec-PRL --set eval.split=valid --set method_config.epochs=6`:
    # NDCG@10 by epoch 0.0280, 0.0436, 0.0597, 0.0567, 0.0494; with 2 the test row sat at popularity level); the
    # best epoch's weights are kept
    demo_config = {"epochs": 4, "hidden_size": 64, "inner_size": 128, "batch_size": 512}
    demo_rows = {"ReaRec-ERL": {"variant": "erl"}, "ReaRec-PRL": {"variant": "prl"}}
    smoke_config = {"epochs": 2, "batch_size": 256, "hidden_size": 32, "inner_size": 64, "warmup_epochs": 1}

    class Config(TransformerConfig):
        variant: Literal["erl", "prl"] = Field("erl", description="ERL: mean of the K+1 outputs; PRL: the last")
        reason_steps: int = Field(2, ge=0, le=16, description="K latent reasoning steps")
        hidden_size: int = 256
        inner_size: int = 300
        tau: float = Field(0.07, gt=0, description="score temperature: logits = h . E / tau")
        kl_weight: float = Field(0.05, ge=0, description="ERL: weight of the (subtracted) pairwise step KL")
        pl_weight: float = Field(1.0, ge=0, description="PRL: weight of the earlier steps' annealed CE")
        alpha: float = Field(5.0, gt=0, description="PRL: step k's temperature is tau x alpha^(K-k)")
        cl_weight: float = Field(0.1, ge=0, description="PRL: weight of the clean/noisy InfoNCE")
        noise_std: float = Field(0.01, ge=0, description="PRL: Gaussian noise on the fed-back states (contrastive view)")
        warmup_epochs: int = Field(1, ge=0, description="epochs on the CE terms only, before the KL / contrastive terms")
        packed: bool = Field(True, description="train on user windows, every prefix in one pass (SASRec's trick, with "
                                               "K reasoning tokens per position; the same samples and losses, "
                                               "tested); false = RecBole's trainer on one sample per prefix")

    @property
    def recbole_model(self):
        return rearec_model_class()

    def packed_loss(self, model, windows, lengths, first):
        return sum(model.packed_terms(windows, lengths, first).values())

    def model_params(self):
        c = self.config
        return {**transformer_params(c), "variant": c.variant, "reason_steps": c.reason_steps, "tau": c.tau,
                "kl_weight": c.kl_weight, "pl_weight": c.pl_weight, "alpha": c.alpha, "cl_weight": c.cl_weight,
                "noise_std": c.noise_std, "warmup_epochs": c.warmup_epochs}

    def describe(self):
        return {**super().describe(), "variant": self.config.variant, "reason_steps": self.config.reason_steps}


def pairwise_kl(logp):
    """Mean KL(p_i || sg(p_j)) over the ordered pairs i != j of the K+1 step distributions, per sample:
    ``logp`` [N, n, V] -> [N]. Sum_{i,j} KL(p_i || p_j) = n sum_i <p_i, log p_i> - <sum_i p_i, sum_j log p_j>
    (the i = j terms are 0 on both sides): two elementwise passes instead of an [N, n, n] batched product over
    the catalog (tested against the pairwise definition). The second argument is a stop-gradient, as in the
    released code (``F.kl_div`` on detached log-probabilities): the value is the plain pairwise KL, but only
    the first distribution of each pair is pushed away. With gradients through both sides the subtracted KL
    has no bound and wins over the CE: measured on Beauty, ERL's loss fell from 5.6 to -3.9 in one epoch after
    warm-up while validation NDCG@10 fell from 0.0069 to 0.0040."""
    p, n = logp.exp(), logp.shape[1]
    total = n * (p * logp).sum((1, 2)) - (p.sum(1) * logp.detach().sum(1)).sum(-1)
    return total / (n * (n - 1))
