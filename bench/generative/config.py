"""The settings every SID-generating LLM method shares (:class:`GenerativeConfig`: backbone, prompt style, SFT
budget, model selection, decoding); each method's ``Config`` extends it with its own
(:class:`bench.generative.method.GenerativeMethod` reads it)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from bench.generative.backbone import BackboneConfig
from bench.generative.training import TrainConfig
from bench.method import MethodConfig


class GenerativeConfig(MethodConfig):
    """Defaults are sized for a 2-core CPU: a config-built backbone (``medium`` preset) reading the
    compact prompt, packed seqrec SFT, trained until the validation NDCG@10 stops improving (or the
    ``sft.max_minutes`` budget). With a pretrained LM (``backbone.name_or_path: Qwen/Qwen3-0.6B``)
    the prompt style becomes the paper's."""

    backbone: BackboneConfig = BackboneConfig(preset="medium", max_vocab=2048)
    prompt_style: Literal["auto", "paper", "compact"] = Field(
        "auto", description="auto = paper for a pretrained backbone (name_or_path), compact for a preset")
    pack_seqrec: bool | None = Field(
        None, description="one causal pass per user window (compact style only); None = on for compact")
    # cosine over 18 epochs (~1.8 min each on Beauty, medium preset, 1 thread); early stopping on the
    # validation NDCG@10 (patience 5: on 1,000 users it moved by +-0.004 between epochs while the
    # validation loss still fell steadily, and patience 3 would have stopped at epoch 6) and a
    # wall-clock budget guard
    sft: TrainConfig = TrainConfig(epochs=18, lr=2e-3, batch_size=64, patience=5, warmup_ratio=0.02,
                                   max_minutes=38)
    max_train_samples: int | None = Field(None, ge=1, description="cap on seqrec training examples (windows when "
                                                                  "packed, prefixes otherwise; random subset)")
    max_alignment_per_task: int | None = Field(3000, ge=1, description="cap on each alignment task's examples")
    max_text_tokens: int = Field(48, ge=4, description="item text longer than this is cut (alignment tasks)")
    valid_metric: Literal["protocol", "loss"] = Field(
        "protocol", description="SFT model selection: 'protocol' = the run's selection metric (RunSpec.selection, "
                                "NDCG@10 by default) of the constrained decoder through FitContext.validate, as every "
                                "method; 'loss' = the SFT loss on the same users (cheaper: no decoding)")
    valid_max_users: int = Field(2000, ge=1, description="fixed validation subset (decoding is expensive)")
    valid_beam_width: int = Field(20, ge=10, description="beam width of the validation decode")
    max_prompt_tokens: int = Field(512, ge=16, description="the paper's max sequence length")
    decode_batch_size: int = Field(64, ge=1, description="users per beam-search batch")
    reuse_sft: bool = Field(True, description="reuse an identical SFT stage from the stage cache "
                                              "(bench.generative.stages); false always trains")
