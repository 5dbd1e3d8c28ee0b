"""LASAR (Latent Adaptive Semantic Aligned Reasoning): a plugin that fills the generative base's hooks.

Phases (paper Sections 2-3, App. E):

1. **Stage 1** (the SFT hook, a cached stage): MiniOneRec's SFT, SID cross-entropy on the packed seqrec
   windows: the same stage-cache entry, so "w/o latent loop" and "MiniOneRec (SFT)" are one model. The
   reasoning markers ``<lat_s>``/``<lat_e>`` then join the vocabulary (new embedding rows;
   :meth:`vocabulary_phase`); the CoT words only join a copy that reads the CoT for the anchors. ``stage1_cot_samples > 0`` is the ablation that adds a causal-LM
   pass over teacher CoT text to Stage 1 (``<rec> history <lat_s> CoT <lat_e> answer``), GREAM's Stage 1.
2. **Anchors**: each training sample's teacher CoT is segmented where adjacent sentences' embeddings
   drop in similarity (:mod:`methods.lasar.segment`); the Stage-1 backbone encodes prompt + segments
   once and the final-layer hidden state at each segment's last token is that step's anchor (cached
   on disk, kept on CPU, moved per batch). The segment count (1..N_max) is the policy head's label.
3. **Stage 2** (:meth:`middle_phases`, cached as a stage): the latent loop (Eq. 3) between ``<lat_s>`` and
   ``<lat_e>`` with N = argmax of the policy head (a 2-layer tanh MLP on h_0; h_N is fed before ``<lat_e>``:
   the answer starts from it); loss = answer CE +
   alpha * step-wise bidirectional KL to the anchors (t <= min(N, segments)) + beta * head CE.
4. **RL** (the shared GRPO through :meth:`prefix` in the ``rollout`` phase, :meth:`completion_logprobs`,
   :meth:`rl_init` and :meth:`rl_extra_terms`): N sampled from the head per prompt at rollout time and
   carried in the rollout's ``aux`` (all beams, the reference and the policy passes share it), terminal KL
   between h_N and the last segment's anchor (weight gamma_KL), REINFORCE on the head with an EMA baseline (in
   the RL state), a step penalty lambda and an entropy bonus eta, weighted by gamma_RF (``reinforce_coef``).
   GRPO's model selection keeps the best validated weights, step 0 included (``rl.keep``).
5. **Inference**: N = argmax per user; the batched variable-N loop on the KV cache; the shared
   constrained beam search continues from that prefix. Per-user N is returned as a stat (the
   runner records its mean and the per-N HR/NDCG table).

Every ablation of the paper is configuration (see ``leaderboard/suites/beauty-lasar.yaml``).
"""
from __future__ import annotations

from bench.generative.cot import REASON_END, REASON_START, CoTMethod, cot_non_sft_fields
from bench.method import MethodInfo
from bench.registry import register
from methods.lasar.anchors import Anchors
from methods.lasar.config import LASARConfig, LatentRLConfig  # noqa: F401  (re-exported)
from methods.lasar.latent import LatentLoop
from methods.lasar.losses import align_distance, bidir_kl, reinforce_loss  # noqa: F401  (re-exported)
from methods.lasar.rl import LatentPrompt, LatentRL  # noqa: F401  (re-exported)
from methods.lasar.stage2 import Stage2

S_TOKEN, E_TOKEN = REASON_START, REASON_END  # the latent region's start and end markers


@register()
class LASAR(LatentLoop, Anchors, Stage2, LatentRL, CoTMethod):
    info = MethodInfo(name="lasar", family="latent", paper="LASAR (this benchmark's paper), 2026",
                      description="latent reasoning between history and SID: two-stage SFT, CoT-anchored "
                                  "bidirectional-KL alignment, adaptive depth policy head, GRPO + terminal KL + "
                                  "REINFORCE", uses_sids=True, needs_text=False)
    Config = LASARConfig
    table4_row = "LASAR"

    def paper_latency_row(self) -> str:
        """The paper's LASAR row times the latent loop: a model without it (the Stage-1-only ablation) has none."""
        return self.table4_row if self.config.latent else ""
    #: fields Stage 1 does not read: every LASAR field but the teacher and the Stage-1 text pass (ablations
    #: and Stage-2/RL settings share the Stage-1 entry, and GREAM shares it too)
    non_sft_fields = cot_non_sft_fields(LASARConfig)
    #: of those, the fields Stage 2 does not read
    non_stage2_fields = {"rl", "decode_batch_size", "reuse_sft"}

    # Stage 1 without the CoT text pass (the paper's); the text-pass row is its own Table-2 row
    _sft = {"latent": True, "two_stage": True, "forced_steps": None, "stage1_cot_samples": 0, "rl": {"enabled": False}}
    _rl = {"latent": True, "two_stage": True, "alignment": "kl", "forced_steps": None}
    paper_tables = {
        "table2_sft_ablation_beauty": ("Table 2: SFT ablations (Beauty)", "beauty", [
            ("Pure SFT (MiniOneRec)", "minionerec", {"rl": {"enabled": False}, "backbone": {"embedding_dropout": 0.0}}),
            (None, "lasar", {"latent": False, "rl": {"enabled": False}}),
            ("+ Latent (w/o align.)", "lasar", {**_sft, "alignment": "none"}),
            ("+ KL Alignment", "lasar", {**_sft, "alignment": "kl"}),
            ("+ Cosine Alignment", "lasar", {**_sft, "alignment": "cosine"}),
            ("+ MSE Alignment", "lasar", {**_sft, "alignment": "mse"}),
            (None, "lasar", {**_sft, "two_stage": False}),
            # rows are only appended (committed results store their row's index): the Stage-1 text-pass ablation
            (None, "lasar", {**{k: v for k, v in _sft.items() if k != "stage1_cot_samples"}, "alignment": "kl",
                             "stage1_cot_samples": 1500})]),
        "table3_rl_ablation_beauty": ("Table 3: RL ablations (Beauty)", "beauty", [
            ("MiniOneRec", "minionerec", {"rl": {"enabled": True}, "backbone": {"embedding_dropout": 0.0}}),
            ("RL w/ latent reasoning", "lasar", {**_rl, "rl": {"enabled": True, "terminal_kl": 0.0, "reinforce": False}}),
            ("+ Terminal KL Alignment", "lasar", {**_rl, "rl": {"enabled": True, "terminal_kl": 1e-5, "reinforce": False}}),
            (None, "lasar", {**_rl, "rl": {"enabled": True, "terminal_kl": 0.0, "reinforce": True}}),
            ("+ REINFORCE (LASAR)", "lasar", {**_rl, "rl": {"enabled": True, "terminal_kl": 1e-5, "reinforce": True}})]),
        "figure4a_force_n_sports_hr10": ("Fig. 4a: forced N vs adaptive (ours: Beauty; the paper's: Sports HR@10)",
                                          "beauty", [
            ("adaptive", "lasar", {**_sft, "alignment": "kl"}),
            (None, "lasar", {**_sft, "alignment": "kl", "forced_steps": 1}),
            (None, "lasar", {**_sft, "alignment": "kl", "forced_steps": 2}),
            ("fixed N=4", "lasar", {**_sft, "alignment": "kl", "forced_steps": 4}),
            (None, "lasar", {**_sft, "alignment": "kl", "forced_steps": 8})]),
    }

    #: settings added with issue 25, at the values the earlier rows ran with ("LASAR v1": h_N not fed, REINFORCE
    #: at weight 1 with the entropy coefficient 0.01 inside it, the last RL weights kept); their spec files state
    #: them, so those rows keep their ids
    late_settings = {"feed_last": False, "rl.reinforce_coef": 1.0, "rl.keep": "last", "rl.valid_every": None}

    demo_priority = 30
    # Stage 1 is MiniOneRec's demo SFT (the same settings: one stage entry, trained by the MiniOneRec row); Stage 2
    # the paper's: answer-only samples and replay measured +0.0076 validation NDCG@10 here, not significant (p 0.07,
    # leaderboard/suites/lasar-options-ml100k.yaml)
    demo_config = {"backbone": {"preset": "tiny"}, "valid_metric": "loss", "cot_samples": 600, "max_steps": 4,
                   "sft": {"epochs": 10, "batch_size": 32, "lr": 5e-3, "patience": 3},
                   "stage2": {"epochs": 4, "batch_size": 32, "lr": 5e-4, "patience": 2},
                   "rl": {"num_generations": 8, "max_prompts": 32, "batch_prompts": 8}}
    smoke_config = {"backbone": {"preset": "tiny"}, "max_train_samples": 64, "valid_max_users": 16,
                    "cot_samples": 48, "max_steps": 3,
                    "sft": {"epochs": 1, "batch_size": 16}, "stage2": {"epochs": 1, "batch_size": 16},
                    "decode_batch_size": 16, "rl": {"num_generations": 4, "max_prompts": 8, "batch_prompts": 4}}

    # ------------------------------------------------------------ tokens, modules, prompt
    def attach_modules(self, model):
        import torch

        d, n = model.config.hidden_size, self.config.max_steps
        with torch.random.fork_rng(devices=[]):  # drawn apart: Stage 1 (MiniOneRec's SFT) sees the same RNG state
            torch.manual_seed(torch.initial_seed())
            head = torch.nn.Sequential(torch.nn.Linear(d, d), torch.nn.Tanh(), torch.nn.Linear(d, n))
        model.policy_head = head
        return {"policy_head": head}

    def describe(self):
        out = super().describe()
        if out:
            out["latent_loop"] = "prompt <lat_s> -> N hidden-state steps on the KV cache -> <lat_e> -> beam search"
        return out
