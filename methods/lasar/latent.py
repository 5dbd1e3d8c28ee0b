"""The latent loop (Eq. 3) and LASAR's decoding prefix: prompt, ``<lat_s>``, N hidden-state steps on the KV
cache, ``<lat_e>``; which N each phase uses (:meth:`LatentLoop.prefix`)."""
from __future__ import annotations

from bench.generative.cot import REASON_END

E_TOKEN = REASON_END  # the latent region's end marker


class LatentLoop:
    """Mixin of :class:`methods.lasar.method.LASAR`: the ``prefix`` hook and the loop it runs."""

    def latent_on(self, phase: str) -> bool:
        """The latent loop is used in ``phase``: not in the no-latent ablation, and not in Stage 1's model
        selection (``sft-valid``: Stage 1 trains the plain prompt)."""
        return self.config.latent and phase != "sft-valid"

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
        """Prompt (ending in ``<lat_s>``, whose final hidden state is h_0) -> N_i latent steps (Eq. 3: step t's
        input embedding is h_{t-1}, its final hidden state h_t; rows that finished are masked) -> with
        ``feed_last`` h_N as one more input (the answer starts from it) -> ``<lat_e>``. Returns the prefix state
        to decode from and ``aux``: h_0, the head's logits, N, the step states h_1..h_N [B, max N, d] (past a row's N:
        not its latent states; every reader masks them) and h_N (each row's own last step)."""
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
            n_max = int(steps.max()) if len(histories) else 0
            feed_last = self.config.feed_last
            for t in range(n_max + int(feed_last and n_max > 0)):
                x = state.last_hidden
                if scale is not None:
                    x = x * (scale / x.norm(dim=-1, keepdim=True).clamp(min=1e-6))
                # step t feeds h_t (t < N); with feed_last, t = N feeds h_N, the answer's start
                state = extend_prefix(model, state, x, active=(steps >= t) if feed_last else (steps > t))
                if t < n_max:
                    hiddens.append(state.last_hidden)
            hid = torch.stack(hiddens, 1) if hiddens else h0.new_zeros(len(histories), 0, h0.shape[-1])
            h_n = hid[torch.arange(len(histories), device=hid.device), steps - 1] if n_max else h0
            e = core.get_input_embeddings()(torch.full((len(histories),), self._tok(E_TOKEN), device=self.device))
            state = extend_prefix(model, state, e, active=torch.ones_like(steps, dtype=torch.bool))
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
