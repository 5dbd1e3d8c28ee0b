"""Encoder-decoder models (TIGER-style: history SIDs in the encoder, the next item's SID from the decoder)
behind the one trie-constrained beam search.

The beam search drives a causal LM through a KV cache. An encoder-decoder fits that contract through
:class:`DecoderView`, a module whose ``forward`` takes the next decoder tokens and a :class:`Seq2SeqCache`
(the encoder's output and each row's decoder tokens so far): it appends the tokens and runs the decoder
over them with cross-attention to the encoder output. The decoder is re-run over its whole (at most
``levels`` tokens long) input at each level instead of caching keys and values: a SID is 3-5 tokens, so
this costs little and keeps the view independent of the encoder-decoder cache classes of each
transformers release. The beam search's plain route (``shared_prefix=False``) repeats and reorders the
cache per beam through the two methods a transformers cache offers for it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

#: token ids of an encoder-decoder's SID vocabulary (no word tokenizer: inputs are SIDs only)
PAD, EOS, FIRST_SID = 0, 1, 2


def sid_token_ids(levels: int, codebook_size: int) -> torch.Tensor:
    """``[levels, K]`` token id of code c at level l: ``FIRST_SID + l * K + c``."""
    return FIRST_SID + torch.arange(levels * codebook_size).view(levels, codebook_size)


def encoder_inputs(histories: list[list[int]], codes: torch.Tensor, sid_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded encoder ids ``[B, S]`` and mask: each history's items as their SID tokens, then EOS."""
    levels = sid_ids.shape[0]
    rows = [sid_ids[torch.arange(levels).unsqueeze(0), codes[torch.as_tensor(h, dtype=torch.long)]].reshape(-1).tolist()
            + [EOS] for h in histories]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    return ids, mask


@dataclass
class Seq2SeqCache:
    """What the decoder needs per row: the encoder's output and mask, and the decoder tokens so far."""

    encoded: torch.Tensor        # [B, S, d]
    encoder_mask: torch.Tensor   # [B, S]
    tokens: torch.Tensor         # [B, t] decoder input ids (the start token first)

    def __deepcopy__(self, memo):  # the beam search copies the caller's state; nothing is changed in place
        return Seq2SeqCache(self.encoded, self.encoder_mask, self.tokens)

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.encoded = self.encoded.repeat_interleave(repeats, 0)
        self.encoder_mask = self.encoder_mask.repeat_interleave(repeats, 0)
        self.tokens = self.tokens.repeat_interleave(repeats, 0)

    def reorder_cache(self, index: torch.Tensor) -> None:
        self.encoded = self.encoded.index_select(0, index)
        self.encoder_mask = self.encoder_mask.index_select(0, index)
        self.tokens = self.tokens.index_select(0, index)


class _Out(dict):
    """The two things the beam search reads from a forward: ``logits`` and the cache."""

    @property
    def logits(self):
        return self["logits"]


class DecoderView(torch.nn.Module):
    """An encoder-decoder (transformers ``T5ForConditionalGeneration``) seen as the causal LM the beam search
    drives; ``prefix`` encodes histories into the state decoding starts from."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache: Seq2SeqCache | None = None,
                use_cache: bool = True, logits_to_keep: int | None = None, **_):
        cache.tokens = torch.cat([cache.tokens, input_ids.to(cache.tokens.device)], 1)
        out = self.model(encoder_outputs=(cache.encoded,), attention_mask=cache.encoder_mask,
                         decoder_input_ids=cache.tokens, use_cache=False)
        return _Out(logits=out.logits[:, -1:], cache=cache)

    def prefix(self, enc_ids: torch.Tensor, enc_mask: torch.Tensor):
        """The :class:`~bench.generative.decoding.PrefixState` after the decoder's start token."""
        from bench.generative.decoding import PrefixState

        encoded = self.model.get_encoder()(input_ids=enc_ids, attention_mask=enc_mask).last_hidden_state
        start = torch.full((enc_ids.shape[0], 1), self.model.config.decoder_start_token_id, dtype=torch.long,
                           device=enc_ids.device)
        logits = self.model(encoder_outputs=(encoded,), attention_mask=enc_mask, decoder_input_ids=start,
                            use_cache=False).logits[:, -1]
        B = enc_ids.shape[0]
        ones = torch.ones((B, 1), dtype=torch.long, device=enc_ids.device)
        return PrefixState(Seq2SeqCache(encoded, enc_mask, start), logits, ones, ones.sum(-1))
