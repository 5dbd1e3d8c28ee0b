"""One backbone factory: a real pretrained causal LM by name/path, or a Qwen3 preset built from a
config (no download) with a compact tokenizer trained on the run's own text.

Either way the SID tokens (``<a_0>`` ... one per level and code) are added as single tokens and
the embeddings resized, and :attr:`Backbone.sid_token_ids` maps ``[level, code] -> token id``.
"""
from __future__ import annotations

import contextlib
import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field

SPECIAL_TOKENS = ["<pad>", "<eos>", "<unk>"]

# Measured speeds (committed result files, training.sft.seconds / steps; 2 CPU cores, 1 thread, shared):
# `small`, batch 32 of ~170-token prompts: 647 steps in 486 s (0.75 s/step) for lcrec on ml-100k with
# 2 other jobs on the machine; 1,000 steps in 61 min on Beauty (minionerec SFT) with ~5 jobs. A full Beauty epoch
# (~4,100 seqrec steps) is therefore about an hour on a quiet 2-core machine: a session's budget.
PRESETS: dict[str, dict] = {
    "tiny": dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16),
    "small": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=32),
    # compact-prompt CPU default (vocabulary = SID tokens + specials, ~1.5M parameters on Beauty)
    "medium": dict(hidden_size=192, intermediate_size=576, num_hidden_layers=3, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=48),
    "base": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=64),
    # GPU scale (~19.4M parameters on Beauty's SID vocabulary): d512 x 6 layers. Measured on an H200 with
    # embedding dropout 0.2 and attention dropout 0.1: 3.3 min of SFT reached test N@10 0.0335 on Beauty,
    # validation still rising (leaderboard/suites/h200/). Far too slow for a 2-core CPU.
    "large": dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=8,
                  num_key_value_heads=4, head_dim=64),
}


class BackboneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name_or_path: str | None = Field(None, description="HF model id or local folder (e.g. Qwen/Qwen3-0.6B); "
                                                       "None = build the preset from a Qwen3Config")
    preset: Literal["tiny", "small", "medium", "base", "large"] = "small"
    max_vocab: int = Field(16000, ge=100, description="word vocabulary cap of the preset tokenizer")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    attention_dropout: float = Field(0.0, ge=0, lt=1, description="presets: dropout on attention weights")
    embedding_dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the token embeddings while "
                                                                 "training (any backbone; a forward hook)")


@dataclass
class Backbone:
    model: object            # transformers PreTrainedModel (causal LM)
    tokenizer: object        # transformers tokenizer
    sid_token_ids: object    # torch.LongTensor [levels, K]
    source: str              # "preset:small" or the name/path

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def eos_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def save(self, folder: Path) -> None:
        from transformers.utils import logging as hf_logging

        folder.mkdir(parents=True, exist_ok=True)
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # transformers' "Writing model shards" bar: a line of noise per save
        try:
            self.model.save_pretrained(folder)
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        self.tokenizer.save_pretrained(folder)
        (folder / "backbone.json").write_text(json.dumps({"source": self.source}))


def train_tokenizer(corpus: Iterable[str], added_tokens: list[str], max_vocab: int = 16000):
    """A word-level tokenizer (whitespace + punctuation split) trained on ``corpus``; SID and other
    added tokens are single special tokens, so ``<a_1><b_2>`` never splits."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins with spaces
    trainer = trainers.WordLevelTrainer(vocab_size=max_vocab, special_tokens=SPECIAL_TOKENS, min_frequency=1)
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    fast.add_tokens(list(added_tokens), special_tokens=True)
    fast.padding_side = "left"
    return fast


def sid_ids_tensor(tokenizer, levels: int, codebook_size: int):
    import torch

    from bench.sids import sid_token

    ids = [[tokenizer.convert_tokens_to_ids(sid_token(l, c)) for c in range(codebook_size)] for l in range(levels)]
    t = torch.tensor(ids, dtype=torch.long)
    unk = tokenizer.unk_token_id
    if unk is not None and (t == unk).any():
        raise ValueError("some SID tokens are not in the tokenizer vocabulary")
    return t


def build_backbone(cfg: BackboneConfig, *, sid_tokens: list[str], levels: int, codebook_size: int,
                   corpus: Iterable[str] = (), extra_tokens: list[str] = (), seed: int = 0) -> Backbone:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    dtype = getattr(torch, cfg.dtype)
    added = list(sid_tokens) + list(extra_tokens)
    if cfg.name_or_path:
        tokenizer = AutoTokenizer.from_pretrained(cfg.name_or_path)
        tokenizer.add_tokens(added, special_tokens=True)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        with _hf_quiet(warnings=True):  # its "Loading weights" bar: noise in a log, and --no-progress means none
            model = AutoModelForCausalLM.from_pretrained(cfg.name_or_path, dtype=dtype)
        model.resize_token_embeddings(len(tokenizer))
        # instruct checkpoints ship sampling defaults that silently cut beams: we decode ourselves
        model.generation_config.do_sample = False
        source = cfg.name_or_path
    else:
        tokenizer = train_tokenizer(corpus, added, cfg.max_vocab)
        torch.manual_seed(seed)
        config = Qwen3Config(vocab_size=len(tokenizer), tie_word_embeddings=True, max_position_embeddings=1024,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                             bos_token_id=tokenizer.eos_token_id, **PRESETS[cfg.preset])
        config.attention_dropout = cfg.attention_dropout
        model = Qwen3ForCausalLM(config).to(dtype)
        source = f"preset:{cfg.preset}"
    model.config.use_cache = True
    return Backbone(model, tokenizer, sid_ids_tensor(tokenizer, levels, codebook_size), source)


@contextlib.contextmanager
def _hf_quiet(*, warnings: bool):
    """transformers without its progress bars (and, ``warnings=False``, errors only) inside the block."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    if not warnings:
        hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def add_embedding_dropout(model, p: float) -> None:
    """Dropout on the input embeddings' output in training mode (a forward hook, so it works for any
    causal LM and is inert in eval mode). Idempotent."""
    import torch.nn.functional as F

    emb = model.get_input_embeddings()
    if p <= 0 or getattr(emb, "_reasonrec_dropout", None) == p:
        return
    if getattr(emb, "_reasonrec_hook", None) is not None:
        emb._reasonrec_hook.remove()
    emb._reasonrec_hook = emb.register_forward_hook(lambda m, args, out: F.dropout(out, p, m.training))
    emb._reasonrec_dropout = p


def load_backbone(folder: Path, levels: int, codebook_size: int) -> Backbone:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "left"
    # a method's attached modules (a policy head) are saved with the model and restored by the method
    # from extra_modules.pt; transformers reports them as unexpected keys: quiet, not an error
    # (and its "Loading weights" bar, a line of noise per load: a saved run model loads in milliseconds)
    with _hf_quiet(warnings=False):
        model = AutoModelForCausalLM.from_pretrained(folder)
    source = json.loads((folder / "backbone.json").read_text())["source"]
    return Backbone(model, tokenizer, sid_ids_tensor(tokenizer, levels, codebook_size), source)


def extend_vocabulary(bb: Backbone, *, corpus: Iterable[str] = (), special: list[str] = (), max_vocab: int = 16000,
                      seed: int = 0) -> Backbone:
    """``bb`` with more tokens: the words of ``corpus`` (a preset's word-level tokenizer only; a pretrained
    tokenizer already splits any text) and ``special`` tokens, appended after every existing id (no id moves:
    a trained model keeps its meaning), the new embedding rows drawn from the old rows' mean and covariance
    (transformers' mean resizing) under ``seed``. A no-op returns ``bb``. Used after a shared SFT stage that
    was trained without them (LASAR's Stage 1 is MiniOneRec's SFT: its reasoning markers and CoT words join
    the vocabulary after it)."""
    import torch
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = bb.tokenizer
    have = tok.get_vocab()
    words: list[str] = []
    if bb.source.startswith("preset:") and corpus:
        learned = train_tokenizer(corpus, [], max_vocab).backend_tokenizer.get_vocab()
        words = [w for w, _ in sorted(learned.items(), key=lambda kv: kv[1]) if w not in have]
    special = [s for s in special if s not in have]
    if not words and not special:
        return bb
    if words:
        spec = json.loads(tok.backend_tokenizer.to_str())
        if spec["model"]["type"] != "WordLevel":
            raise ValueError(f"extend_vocabulary: a preset tokenizer is word-level, got {spec['model']['type']}")
        start = len(tok)
        # the added tokens (SIDs, markers) enter the word-level vocabulary at their ids: loading assigns an added
        # token that is not in it the next free id, which would move them
        spec["model"]["vocab"].update({a["content"]: a["id"] for a in spec["added_tokens"]})
        spec["model"]["vocab"].update({w: start + i for i, w in enumerate(words)})
        new = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), pad_token="<pad>",
                                      eos_token="<eos>", unk_token="<unk>")
        new.padding_side = "left"
    else:
        new = copy.deepcopy(tok)
    new.add_tokens(special, special_tokens=True)
    if any(new.convert_tokens_to_ids(t) != i for t, i in have.items()):
        raise AssertionError("extend_vocabulary moved an existing token id")
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its note on mean resizing, once per call: the docstring says it
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            bb.model.resize_token_embeddings(len(new), mean_resizing=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    return Backbone(bb.model, new, bb.sid_token_ids, bb.source)


# ---------------------------------------------------------------- encoder-decoders (TIGER)

#: T5 sizes for SID-to-SID encoder-decoders. ``tiger``: the TIGER paper's (4 + 4 layers, 6 heads of 64, MLP
#: 1024, model dim 128, dropout 0.1); ``cpu``: a 2 + 2-layer model that trains on a 2-core CPU in an hour;
#: ``small`` (d 64, 2 + 2 layers): the ml-100k demo's (``tiny``, d 32 and one layer each, stays near popularity there).
SEQ2SEQ_PRESETS: dict[str, dict] = {
    "tiny": dict(d_model=32, d_kv=16, num_heads=2, d_ff=64, num_layers=1, num_decoder_layers=1),
    "small": dict(d_model=64, d_kv=16, num_heads=4, d_ff=256, num_layers=2, num_decoder_layers=2),
    "cpu": dict(d_model=128, d_kv=32, num_heads=4, d_ff=512, num_layers=2, num_decoder_layers=2),
    "tiger": dict(d_model=128, d_kv=64, num_heads=6, d_ff=1024, num_layers=4, num_decoder_layers=4),
}


def build_seq2seq(preset: str, *, levels: int, codebook_size: int, dropout: float = 0.1, seed: int = 0):
    """A T5 encoder-decoder over the SID vocabulary (:mod:`bench.generative.seq2seq` ids), from a config
    (random weights, ``seed``)."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    from bench.generative.seq2seq import EOS, FIRST_SID, PAD

    if preset not in SEQ2SEQ_PRESETS:
        raise ValueError(f"unknown encoder-decoder preset {preset!r}; presets: {', '.join(SEQ2SEQ_PRESETS)}")
    config = T5Config(vocab_size=FIRST_SID + levels * codebook_size, dropout_rate=dropout, pad_token_id=PAD,
                      eos_token_id=EOS, decoder_start_token_id=PAD, feed_forward_proj="relu",
                      tie_word_embeddings=True, **SEQ2SEQ_PRESETS[preset])
    torch.manual_seed(seed)
    return T5ForConditionalGeneration(config)


def save_seq2seq(model, folder: Path) -> None:
    with _hf_quiet(warnings=True):  # its "Writing model shards" bar: a line of noise per save
        model.save_pretrained(folder)


def load_seq2seq(folder: Path):
    from transformers import T5ForConditionalGeneration

    with _hf_quiet(warnings=False):
        return T5ForConditionalGeneration.from_pretrained(folder)
