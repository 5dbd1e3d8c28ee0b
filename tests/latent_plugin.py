"""A LASAR-shaped plugin skeleton that fills every hook of the generative base and overrides no core
method (fit, recommend, _grpo, save, load): proof that a latent-reasoning method is a plugin.

- an extra special token (``<think>``) closes the prompt;
- a policy head (a linear map of the last hidden state) is an attached module: trained, saved and
  reloaded with the backbone;
- ``prefix`` (every phase alike here): prompt + ``<think>``, then a variable number of latent steps per user
  (0..3, a function of the history length), finished rows masked — what ranking, validation and GRPO
  rollouts decode from; the step count goes back as ``aux["per_user"]["latent_steps"]``;
- ``completion_logprobs``: from the same latent prefix with grad (GRPO reaches the head);
- ``sft_loss`` returns named components; ``rl_extra_terms`` adds a term that sees the rollout;
- ``param_groups``: the head trains with its own learning rate.
"""
from __future__ import annotations

from bench.generative.grpo import GRPOConfig
from bench.generative.config import GenerativeConfig
from bench.generative.method import GenerativeMethod
from bench.generative.prompts import Example
from bench.generative.training import causal_lm_loss
from bench.method import MethodInfo

THINK = "<think>"


class LatentToy(GenerativeMethod):
    info = MethodInfo(name="latent-toy", family="latent", paper="-", description="hook coverage test plugin",
                      uses_sids=True)

    class Config(GenerativeConfig):
        max_latent_steps: int = 3
        head_lr_scale: float = 10.0
        rl: GRPOConfig = GRPOConfig(num_generations=4, max_prompts=8, batch_prompts=4, updates_per_rollout=2)

    smoke_config = {"backbone": {"preset": "tiny"}, "pack_seqrec": False, "max_train_samples": 64,
                    "valid_max_users": 16, "sft": {"epochs": 1, "batch_size": 16}, "decode_batch_size": 16}

    calls: dict = {}

    def _count(self, hook: str) -> None:
        LatentToy.calls[hook] = LatentToy.calls.get(hook, 0) + 1

    # ---------------------------------------------------------------- hooks
    def extra_special_tokens(self):
        self._count("extra_special_tokens")
        return [*super().extra_special_tokens(), THINK]

    def attach_modules(self, model):
        import torch

        self._count("attach_modules")
        d = model.config.hidden_size
        head = torch.nn.Linear(d, d)
        model.latent_head = head
        return {"latent_head": head}

    def sft_examples(self, data, enc, rng):
        self._count("sft_examples")
        think = self.bb.tokenizer.convert_tokens_to_ids(THINK)
        return [Example(e.prompt + [think], e.response, e.task) for e in self.seqrec_sft_examples(data, enc, rng)]

    def sft_loss(self, model, batch):
        self._count("sft_loss")
        lm = causal_lm_loss(model, batch)
        l2 = 1e-3 * model.latent_head.weight.pow(2).mean()
        return {"loss": lm + l2, "lm": lm, "head_l2": l2}

    def steps(self, history) -> int:
        return len(history) % (self.config.max_latent_steps + 1)

    def prefix(self, model, histories, phase, *, grad=False, given=None, state=None):
        import torch

        from bench.generative.decoding import extend_prefix, prefill
        from bench.generative.prompts import left_pad

        self._count("prefix")
        think = self.bb.tokenizer.convert_tokens_to_ids(THINK)
        ids, mask = left_pad([[*self.prompt(h), think] for h in histories], self.bb.pad_id)
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            state = prefill(model, ids.to(self.device), mask.to(self.device), grad=grad, hidden=True)
            n = torch.tensor([self.steps(h) for h in histories], device=self.device)
            head = getattr(model, "module", model).latent_head
            for t in range(int(n.max()) if len(histories) else 0):
                state = extend_prefix(model, state, head(state.last_hidden), active=n > t)
        return state, {"per_user": {"latent_steps": n}}

    def completion_logprobs(self, model, histories, tokens, given=None):
        self._count("completion_logprobs")
        return super().completion_logprobs(model, histories, tokens, given)

    def rl_extra_terms(self, model, rollout, logp, aux, state):
        self._count("rl_extra_terms")
        # a stand-in for LASAR's terminal KL: it sees the rollout's reference log-probs
        return {"terminal_kl": 0.01 * ((logp - rollout.ref_logp.to(logp.device)) ** 2).mean()}

    def param_groups(self, model, stage):
        self._count(f"param_groups_{stage}")
        head = list(model.latent_head.parameters())
        ids = {id(p) for p in head}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
        lr = (self.config.sft if stage == "sft" else self.config.rl).lr
        return [{"params": rest}, {"params": head, "lr": lr * self.config.head_lr_scale}]
