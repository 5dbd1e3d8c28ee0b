"""MiniOneRec (Kong et al., 2025): SFT on seqrec + SID/text alignment tasks, then GRPO whose
rollouts are the constrained beam search. Either phase can be switched off so the leaderboard can
show SFT-only and SFT+RL rows (``method_config.rl.enabled=false``)."""
from __future__ import annotations

import random

from pydantic import Field

from bench.generative.grpo import GRPOConfig
from bench.generative.method import GenerativeConfig, GenerativeMethod
from bench.generative.prompts import ALIGNMENT_TEMPLATES, alignment_examples, seqrec_examples
from bench.method import MethodInfo
from bench.registry import register


@register()
class MiniOneRec(GenerativeMethod):
    info = MethodInfo(name="minionerec", family="generative", paper="Kong et al., MiniOneRec, 2025",
                      description="SID LLM: SFT (seqrec + alignment) then GRPO with beam-search rollouts",
                      uses_sids=True)

    class Config(GenerativeConfig):
        alignment_tasks: bool = Field(True, description="title<->SID and history->title tasks (needs item text)")
        rl: GRPOConfig = GRPOConfig(max_prompts=256)

    demo_config = {"backbone": {"preset": "tiny"}, "max_train_samples": 2000, "max_alignment_per_task": 500,
                   "valid_max_users": 64,
                   "sft": {"epochs": 1, "batch_size": 32, "lr": 1e-3},
                   "rl": {"num_generations": 8, "max_prompts": 32, "batch_prompts": 8}}
    smoke_config = {"backbone": {"preset": "tiny"}, "max_train_samples": 64, "valid_max_users": 16,
                    "sft": {"epochs": 1, "batch_size": 16}, "decode_batch_size": 16,
                    "rl": {"num_generations": 4, "max_prompts": 8, "batch_prompts": 4}}

    def extra_corpus(self):
        return [f"{i} {x}" for pool in ALIGNMENT_TEMPLATES.values() for i, x in pool]

    def sft_examples(self, data, enc, rng: random.Random):
        train = data.train_samples(self.config.max_train_samples, seed=rng.randint(0, 2**31))
        examples = seqrec_examples(enc, data.sid, train.histories, train.targets)
        if self.config.alignment_tasks and any(data.item_text):
            examples += alignment_examples(enc, data.sid, data.item_text, train.histories, train.targets, rng=rng,
                                           max_per_task=self.config.max_alignment_per_task)
        return examples
