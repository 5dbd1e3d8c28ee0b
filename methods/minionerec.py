"""MiniOneRec (Kong et al., 2025): SFT on seqrec + SID/text alignment tasks, then GRPO whose
rollouts are the constrained beam search. Either phase can be switched off so the leaderboard can
show SFT-only and SFT+RL rows (``method_config.rl.enabled=false``)."""
from __future__ import annotations

import random

from pydantic import Field

from bench.generative.grpo import GRPOConfig
from bench.generative.config import GenerativeConfig
from bench.generative.method import GenerativeMethod
from bench.generative.prompts import ALIGNMENT_TEMPLATES, COMPACT_ALIGNMENT_TEMPLATES, alignment_examples
from bench.method import MethodInfo
from bench.registry import register


@register()
class MiniOneRec(GenerativeMethod):
    info = MethodInfo(name="minionerec", family="generative", paper="Kong et al., MiniOneRec, 2025",
                      description="SID LLM: SFT (seqrec + alignment) then GRPO with beam-search rollouts",
                      uses_sids=True)
    table4_row = "MiniOneRec"

    class Config(GenerativeConfig):
        alignment_tasks: bool | None = Field(
            None, description="title<->SID and history->title tasks (needs item text); None = on with the paper "
                              "prompt, off with the compact one (measured: see the README)")
        rl: GRPOConfig = GRPOConfig(max_prompts=512, lr=5e-5)

    #: RL model selection came later: a row without it validated once and kept the last weights
    late_settings = {"rl.keep": "last", "rl.valid_every": None}
    # the demo selects on the validation loss (no decode per epoch: it has minutes, not hours)
    demo_priority = 20
    demo_config = {"backbone": {"preset": "tiny"}, "valid_metric": "loss",
                   "sft": {"epochs": 10, "batch_size": 32, "lr": 5e-3, "patience": 3},
                   "rl": {"num_generations": 8, "max_prompts": 32, "batch_prompts": 8}}
    smoke_config = {"backbone": {"preset": "tiny"}, "max_train_samples": 64, "valid_max_users": 16,
                    "sft": {"epochs": 1, "batch_size": 16}, "decode_batch_size": 16,
                    "rl": {"num_generations": 4, "max_prompts": 8, "batch_prompts": 4}}

    def _alignment_on(self) -> bool:
        a = self.config.alignment_tasks
        return self.style == "paper" if a is None else a

    def sft_is_seqrec(self) -> bool:
        return not self._alignment_on()  # then its SFT is the plain recipe (LASAR's Stage 1 shares the entry)

    def uses_item_text(self) -> bool:
        return self._alignment_on()

    def extra_corpus(self, data):
        if self.style == "compact":
            return [t for pool in COMPACT_ALIGNMENT_TEMPLATES.values() for t in pool] if self._alignment_on() else []
        return [f"{i} {x}" for pool in ALIGNMENT_TEMPLATES.values() for i, x in pool]

    def sft_examples(self, data, enc, rng: random.Random):
        examples = self.seqrec_sft_examples(data, enc, rng)
        if self._alignment_on() and any(data.item_text):
            cap = self.config.max_alignment_per_task
            train = data.train_samples(cap, seed=rng.randint(0, 2**31))
            examples += alignment_examples(enc, data.sid, data.item_text, train.histories, train.targets, rng=rng,
                                           max_per_task=cap)
        return examples
