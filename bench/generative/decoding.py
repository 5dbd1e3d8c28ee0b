"""Trie-constrained beam search over SIDs, batched over users x beams.

One prefill per user (the prompt is never copied per beam before it is encoded), then one
single-token forward per remaining SID level for all users x beams at once, with the KV cache
reused and reordered. Masks come from the SID trie's dense per-level tables as tensors: no
per-beam Python. It can start from any prefix state (a KV cache plus the logits that predict the
first SID token), so latent-reasoning methods call it after their loop and CoT methods after
their generated text. Beams are ranked by joint log-probability (full-vocabulary log-softmax).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from bench.generative.prompts import left_pad, positions


@dataclass
class PrefixState:
    """Where decoding starts: a KV cache for B sequences and the logits for the first SID token.

    Decoding never changes a state (it can be decoded twice, e.g. for the test ranking and a GRPO
    rollout); :func:`extend_prefix` appends to it (latent steps) and returns the extended state.
    Masked slots may sit anywhere (left padding, or the latent steps of rows that stopped early)."""

    cache: object                 # transformers Cache with batch B
    last_logits: torch.Tensor     # [B, V]
    attention_mask: torch.Tensor  # [B, T] (1 = attend)
    next_position: torch.Tensor   # [B] position id of the next token
    last_hidden: torch.Tensor | None = None  # [B, d] final-layer hidden state of each row's last real token


@dataclass
class BeamResult:
    items: torch.Tensor   # [B, W] item ids, -1 where fewer than W items exist (or invalid, unconstrained)
    scores: torch.Tensor  # [B, W] joint log-probabilities, descending; -inf where items == -1
    codes: torch.Tensor   # [B, W, M] generated codes


class TrieTensors:
    """The trie tables as tensors on the model's device (built once per method)."""

    def __init__(self, trie, sid_token_ids: torch.Tensor, device=None):
        self.child = [c.to(device) for c in trie.to_torch()]
        self.sid_token_ids = sid_token_ids.to(device)
        self.levels, self.codebook_size = len(self.child), trie.codebook_size

    def to(self, device):
        self.child = [c.to(device) for c in self.child]
        self.sid_token_ids = self.sid_token_ids.to(device)
        return self


def _beam_prefix_layer_class():
    from transformers.cache_utils import CacheLayerMixin

    class BeamPrefixLayer(CacheLayerMixin):
        """A preallocated KV layer for beam decoding after a shared prompt.

        The prompt's keys/values are broadcast into ``[B * beams, H, T + extra, D]`` once. Each decode
        step writes the (re-fed) generated tokens in place at positions ``T..T+n-1``: no per-step
        concatenation, and no beam reordering, since every step re-feeds each beam's whole generated
        prefix (at most M - 1 tokens). The whole contiguous buffer is returned (a strided view would
        be copied by the attention kernel at every step); the caller's attention mask marks the
        unwritten slots as padding, and they are zero-initialised so they can never inject NaN."""

        is_sliding = False
        is_croppable = False
        is_compileable = False

        def __init__(self, keys: torch.Tensor, values: torch.Tensor, beams: int, extra: int):
            B, H, T, D = keys.shape
            self.prompt_len = T
            self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
            bk = keys.new_zeros(B, beams, H, T + extra, D)
            bv = values.new_zeros(B, beams, H, T + extra, D)
            bk[:, :, :, :T] = keys.unsqueeze(1)
            bv[:, :, :, :T] = values.unsqueeze(1)
            self.buf_k, self.buf_v = bk.view(B * beams, H, T + extra, D), bv.view(B * beams, H, T + extra, D)
            self.rewind()

        def _set_length(self, n: int) -> None:
            self.length = n
            self.keys, self.values = self.buf_k, self.buf_v

        def update(self, key_states, value_states, *args, **kwargs):
            n, s = key_states.shape[-2], self.length
            self.buf_k[:, :, s:s + n] = key_states
            self.buf_v[:, :, s:s + n] = value_states
            self._set_length(s + n)
            return self.buf_k, self.buf_v

        def rewind(self) -> None:
            self._set_length(self.prompt_len)

        def lazy_initialization(self, *args, **kwargs) -> None:
            pass

        def get_seq_length(self) -> int:
            return self.length

        def get_mask_sizes(self, query_length, *args) -> tuple[int, int]:
            return self.buf_k.shape[2], 0  # attention always spans the whole buffer

        def get_max_length(self) -> int:
            return -1

    return BeamPrefixLayer


def _beam_prefix_cache(cache, beams: int, extra: int):
    """A copy of a prefilled DynamicCache whose layers are preallocated beam layers (the given cache is
    left untouched, so its state can be decoded again); None if unsupported."""
    import copy

    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    if not layers or not all(type(layer) is DynamicLayer and layer.is_initialized for layer in layers):
        return None
    layer_cls = _beam_prefix_layer_class()
    beam_cache = copy.copy(cache)
    beam_cache.layers = [layer_cls(layer.keys, layer.values, beams, extra) for layer in layers]
    return beam_cache


@contextlib.contextmanager
def native_gqa():
    """Let SDPA handle grouped-query attention natively even with a mask. By default transformers
    then falls back to ``repeat_kv``, which copies the whole KV cache per layer per step (measured:
    most of the decode time on CPU). Scoped to our own forward calls."""
    old = os.environ.get("TRANSFORMERS_SDPA_FORCE_GQA")
    os.environ["TRANSFORMERS_SDPA_FORCE_GQA"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TRANSFORMERS_SDPA_FORCE_GQA", None)
        else:
            os.environ["TRANSFORMERS_SDPA_FORCE_GQA"] = old


_CACHE_ARG: dict[type, str] = {}


def with_cache(model, cache) -> dict:
    """The forward keyword for a KV cache: ``cache`` in newer transformers (``past_key_values`` is
    deprecated there and warns on every call), ``past_key_values`` in older ones (5.17 on the GPU image)."""
    import inspect

    core = getattr(model, "module", model)
    name = _CACHE_ARG.get(type(core))
    if name is None:
        name = "cache" if "cache" in inspect.signature(core.forward).parameters else "past_key_values"
        _CACHE_ARG[type(core)] = name
    return {name: cache}


def output_cache(out):
    """The KV cache a forward returned (``cache`` or, in older transformers, ``past_key_values``)."""
    return out["cache"] if "cache" in out else out.past_key_values


def prefill(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, grad: bool = False,
            hidden: bool = False) -> PrefixState:
    """Encode left-padded prompts into a :class:`PrefixState`. ``grad``: keep the graph (log-probs
    from a differentiable prefix); ``hidden``: also return the last hidden state (latent loops)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=getattr(model, "module", model).config)
    with torch.set_grad_enabled(grad and torch.is_grad_enabled()), native_gqa():
        out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions(attention_mask),
                    **with_cache(model, cache), use_cache=True, logits_to_keep=1, output_hidden_states=hidden)
    return PrefixState(output_cache(out), out.logits[:, -1], attention_mask, attention_mask.sum(-1),
                       out.hidden_states[-1][:, -1] if hidden else None)


def extend_prefix(model, state: PrefixState, inputs_embeds: torch.Tensor, active: torch.Tensor) -> PrefixState:
    """One latent step: append ``inputs_embeds`` [B, d] as a new position of every *active* row.
    Inactive rows (finished latent loops) get a masked slot and keep their logits, hidden state and
    position, so rows with different numbers of steps decode batched exactly as one by one.
    Differentiable when called with grad enabled. The state's cache is appended to (use the returned
    state; decode the old one before extending if both are needed)."""
    B = inputs_embeds.shape[0]
    active = active.to(inputs_embeds.device).bool()
    mask = torch.cat([state.attention_mask, active.long().unsqueeze(1).to(state.attention_mask.dtype)], 1)
    with native_gqa():
        out = model(inputs_embeds=inputs_embeds.view(B, 1, -1), attention_mask=mask,
                    position_ids=state.next_position.view(B, 1), **with_cache(model, state.cache), use_cache=True,
                    output_hidden_states=True)
    a = active.view(B, 1)
    logits = torch.where(a, out.logits[:, -1], state.last_logits)
    hidden = out.hidden_states[-1][:, -1]
    if state.last_hidden is not None:
        hidden = torch.where(a, hidden, state.last_hidden)
    return PrefixState(output_cache(out), logits, mask, state.next_position + active.long(), hidden)


@torch.no_grad()
def constrained_beam_search(model, trie: TrieTensors, *, prompts: list[list[int]] | None = None, pad_id: int = 0,
                            prefix: PrefixState | None = None, beam_width: int = 50,
                            constrained: bool = True, shared_prefix: bool = True) -> BeamResult:
    """Top ``beam_width`` SIDs per sequence by joint log-probability; with ``constrained`` every
    output is a real item. Give either ``prompts`` (token id lists) or a ``prefix`` state.

    ``shared_prefix`` (default) decodes with a preallocated cache and re-fed beam prefixes (no
    concatenation, no reorder); ``False`` uses the plain expand-and-reorder DynamicCache route,
    which also serves caches of other layer types. Both give the same result."""
    device = next(model.parameters()).device
    if prefix is None:
        if prompts is None:
            raise ValueError("give prompts or a prefix state")
        ids, mask = left_pad(prompts, pad_id)
        prefix = prefill(model, ids.to(device), mask.to(device))
    cache, mask = prefix.cache, prefix.attention_mask
    B, K, L = mask.shape[0], trie.codebook_size, trie.levels
    rows = torch.arange(B, device=device)

    def level_logprobs(logits, level):  # [N, V] -> [N, K]
        return torch.log_softmax(logits.float(), -1).index_select(1, trie.sid_token_ids[level])

    # level 0: every user starts at the root
    lp = level_logprobs(prefix.last_logits, 0)                              # [B, K]
    if constrained:
        lp = lp.masked_fill(trie.child[0][0] < 0, -torch.inf)
    w = min(beam_width, K)
    scores, code = lp.topk(w, dim=1)                                        # [B, w]
    node = trie.child[0][0][code].long()                                    # [B, w]
    shared = _beam_prefix_cache(cache, beam_width, L - 1) if shared_prefix and L > 1 else None
    if shared is not None and w < beam_width:  # fixed B x beam_width rows: pad with dead beams
        pad = beam_width - w
        scores = torch.cat([scores, scores.new_full((B, pad), -torch.inf)], 1)
        code = torch.cat([code, code.new_zeros(B, pad)], 1)
        node = torch.cat([node, node.new_full((B, pad), -1)], 1)
        w = beam_width
    codes = code.unsqueeze(-1)
    pos0 = prefix.next_position.repeat_interleave(w, 0)
    mask = mask.repeat_interleave(w, 0)
    if shared is None:
        import copy

        cache = copy.deepcopy(cache)  # the caller's state stays decodable
        cache.batch_repeat_interleave(w)
        pos = pos0
    for level in range(1, L):
        if shared is not None:  # re-feed each beam's generated prefix at fixed positions
            for layer in shared.layers:
                layer.rewind()
            tokens = trie.sid_token_ids[torch.arange(level, device=device), codes].reshape(B * w, level)
            # unwritten buffer slots are marked as padding: with an all-ones mask transformers would
            # drop the mask for a one-token query and attend to them
            step_mask = torch.cat([mask, mask.new_ones(mask.shape[0], level), mask.new_zeros(mask.shape[0], L - 1 - level)], 1)
            step_pos = pos0.unsqueeze(1) + torch.arange(level, device=device)
            with native_gqa():
                out = model(input_ids=tokens, attention_mask=step_mask, position_ids=step_pos,
                            **with_cache(model, shared), use_cache=True, logits_to_keep=1)
        else:
            tokens = trie.sid_token_ids[level - 1][codes[:, :, -1]].reshape(-1, 1)  # [B*w, 1]
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1)
            with native_gqa():
                out = model(input_ids=tokens, attention_mask=mask, position_ids=pos.unsqueeze(1),
                            **with_cache(model, cache), use_cache=True)
            pos = pos + 1
        lp = level_logprobs(out.logits[:, -1], level).view(B, w, K)
        table = trie.child[level]
        valid_node = node >= 0
        if constrained:
            allowed = (table[node.clamp(min=0)] >= 0) & valid_node.unsqueeze(-1)
            lp = lp.masked_fill(~allowed, -torch.inf)
        cand = (scores.unsqueeze(-1) + lp).view(B, w * K)
        new_w = min(beam_width, w * K)
        scores, idx = cand.topk(new_w, dim=1)
        origin, code = idx // K, idx % K
        parent = node.gather(1, origin)
        node = torch.where(parent >= 0, table[parent.clamp(min=0), code], torch.full_like(parent, -1)).long()
        codes = torch.cat([codes.gather(1, origin.unsqueeze(-1).expand(-1, -1, codes.shape[-1])),
                           code.unsqueeze(-1)], -1)
        if shared is None and level < L - 1:  # the last level needs no further forward pass
            flat = (rows.unsqueeze(1) * w + origin).reshape(-1)
            cache.reorder_cache(flat)
            mask, pos = mask.index_select(0, flat), pos.index_select(0, flat)
        if shared is not None and new_w < w:  # keep B x beam_width rows
            pad = w - new_w
            scores = torch.cat([scores, scores.new_full((B, pad), -torch.inf)], 1)
            node = torch.cat([node, node.new_full((B, pad), -1)], 1)
            codes = torch.cat([codes, codes.new_zeros(B, pad, codes.shape[-1])], 1)
            new_w = w
        w = new_w
    items = torch.where(torch.isfinite(scores), node, torch.full_like(node, -1))
    keep = min(beam_width, items.shape[1])
    return BeamResult(items[:, :keep], scores[:, :keep], codes[:, :keep])


# ---------------------------------------------------------------- reference routes (tests, benchmark)

@torch.no_grad()
def exhaustive_scores(model, trie_codes: torch.Tensor, sid_token_ids: torch.Tensor, prompt: list[int]) -> torch.Tensor:
    """Joint log-probability of every catalog item's SID after ``prompt`` (teacher forcing)."""
    n, L = trie_codes.shape
    device = next(model.parameters()).device
    levels = torch.arange(L)
    sid_tokens = sid_token_ids[levels.unsqueeze(0), trie_codes]             # [n, L]
    ids = torch.cat([torch.tensor(prompt).expand(n, -1), sid_tokens], 1).to(device)
    logits = model(input_ids=ids).logits[:, len(prompt) - 1:-1].float()     # predicts each SID token
    lp = torch.log_softmax(logits, -1).gather(-1, sid_tokens.to(device).unsqueeze(-1)).squeeze(-1)
    return lp.sum(-1)


def hf_constrained_generate(model, trie_codes, sid_token_ids, prompts: list[list[int]], pad_id: int,
                            beam_width: int = 50, constrained: bool = True):
    """MiniOneRec's route: HF ``generate(num_beams=W, prefix_allowed_tokens_fn=...)`` with a Python
    dict trie. Returns item ids [B, W] (-1 for an invalid SID). For the decode benchmark."""
    L = trie_codes.shape[1]
    tok = sid_token_ids.tolist()
    children: dict[tuple, set] = {}
    item_of: dict[tuple, int] = {}
    for item, row in enumerate(trie_codes.tolist()):
        path = tuple(tok[l][c] for l, c in enumerate(row))
        item_of[path] = item
        for l in range(L):
            children.setdefault(path[:l], set()).add(path[l])
    children = {k: sorted(v) for k, v in children.items()}
    all_sid = [t for level in tok for t in level]

    ids, mask = left_pad(prompts, pad_id)
    T = ids.shape[1]

    def allowed(batch_id, sent):  # with input_ids, HF passes prompt + generated tokens
        return children.get(tuple(sent[T:].tolist()), [pad_id]) if constrained else all_sid

    device = next(model.parameters()).device
    out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), num_beams=beam_width,
                         num_return_sequences=beam_width, max_new_tokens=L, min_new_tokens=L, do_sample=False,
                         prefix_allowed_tokens_fn=allowed, pad_token_id=pad_id, early_stopping=True,
                         length_penalty=0.0, top_k=None, top_p=None, temperature=None)
    gen = out[:, T:]
    items = [item_of.get(tuple(r), -1) for r in gen.tolist()]
    return torch.tensor(items).view(len(prompts), beam_width)
