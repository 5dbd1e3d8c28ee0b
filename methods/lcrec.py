"""LC-Rec (Zheng et al., ICDE 2024): multi-task alignment SFT on the shared SIDs, a random
instruction template per example; constrained beam search on the shared prompt at test time."""
from __future__ import annotations

import random

from bench.generative.config import GenerativeConfig
from bench.generative.method import GenerativeMethod, Phase
from bench.generative.training import TrainConfig
from bench.generative.prompts import ALPACA, HISTORY, SEQREC_INPUT, SEQREC_INSTRUCTION, Example, alignment_examples
from bench.method import MethodInfo
from bench.registry import register

# (instruction, input) pools in the spirit of LC-Rec's released templates; {history} holds SIDs.
SEQREC_POOL = [
    (SEQREC_INSTRUCTION, SEQREC_INPUT),
    ("Based on the items the user has interacted with, recommend the next item.",
     "Here is the user's historical interactions: {history}. What is the next item?"),
    ("Given the chronological interaction history, predict the item the user will interact with next.",
     "History: {history}"),
    ("You are a recommender. Using the user's past items, choose the next item to recommend.",
     "The user previously bought {history}. Which item should be recommended next?"),
]
LCREC_TASKS = {
    "item2index": [("Which item has the following title?", "Title: {title}"),
                   ("Find the index of the item described as follows.", "{title}"),
                   ("An item is called: {title}. What is its identifier?", "{title}")],
    "index2item": [("What is the title of this item?", "Item: {sid}"),
                   ("Describe the item with the following identifier.", "{sid}"),
                   ("Tell me the name of item {sid}.", "{sid}")],
    "hist2title": [("Can you predict the title of the next item that the user may expect?",
                    "The user has interacted with items {history} in chronological order. "
                    "What is the title of the next item?"),
                   ("Predict the name of the next item the user will interact with.", "History: {history}")],
}


#: the same pools as short text prompts for the compact style (the seqrec task is the packed
#: history -> SID pass there, which has no template)
LCREC_COMPACT_TASKS = {
    "item2index": ["title : {title} item :", "item named {title} is :", "find : {title} index :"],
    "index2item": ["item : {sid} title :", "name of {sid} :", "describe {sid} :"],
    "hist2title": ["history : {history} next title :", "after {history} next item name :"],
}
_MAPPING = {"item2index": "item2sid", "index2item": "sid2item", "fusionseqrec": "hist2title"}


@register()
class LCRec(GenerativeMethod):
    info = MethodInfo(name="lcrec", family="generative", paper="Zheng et al., LC-Rec, ICDE 2024",
                      description="SID LLM with multi-task alignment SFT (seqrec, item2index, index2item, fusionseqrec)",
                      uses_sids=True)

    class Config(GenerativeConfig):
        tasks: tuple[str, ...] = ("seqrec", "item2index", "index2item", "fusionseqrec")
        # an epoch holds the alignment tasks too (~1.6x the tokens, a 2k-word vocabulary): a shorter
        # schedule fits the same CPU budget (Beauty: ~3.3 min per epoch, medium preset, 1 thread)
        sft: TrainConfig = TrainConfig(epochs=10, lr=2e-3, batch_size=64, patience=5, warmup_ratio=0.02,
                                       max_minutes=38)

    # the demo selects on the validation loss (no decode per epoch) and keeps a 512-word vocabulary: with
    # d64 the output projection over a 2k-word vocabulary is most of an epoch's work
    # SFT epochs chosen on the validation split (NDCG@10, test unread; popularity 0.0173): 6 epochs 0.0190,
    # 10 0.0430, 14 0.0471, 20 0.0531 (the validation loss still falling at 6: the old demo row was under-trained)
    demo_priority = 20
    demo_config = {"backbone": {"preset": "tiny", "max_vocab": 512}, "valid_metric": "loss",
                   "max_alignment_per_task": 300, "sft": {"epochs": 20, "batch_size": 32, "lr": 5e-3, "patience": 3}}
    smoke_config = {"backbone": {"preset": "tiny"}, "max_train_samples": 64, "valid_max_users": 16,
                    "sft": {"epochs": 1, "batch_size": 16}, "decode_batch_size": 16}

    def uses_item_text(self) -> bool:
        return any(t in _MAPPING for t in self.config.tasks)

    def middle_phases(self, data, valid, ctx):
        """On a catalog without item text (Instruments: SIDs only) the alignment tasks have nothing to align:
        SFT was seqrec only. Said in the log and recorded (``training.alignment_tasks``)."""
        if any(data.item_text) or not self.uses_item_text():
            return []

        def note() -> dict:
            ctx.log("lcrec: the dataset has no item text: the alignment tasks (item2sid, sid2item, hist2title) were "
                    "skipped; SFT was seqrec only")
            return {"alignment_tasks": "skipped: the dataset has no item text (SFT was seqrec only)"}

        return [Phase("", note)]

    def extra_corpus(self, data):
        if self.style == "compact":
            return [t for pool in LCREC_COMPACT_TASKS.values() for t in pool]
        return [f"{i} {x}" for i, x in SEQREC_POOL] + [f"{i} {x}" for pool in LCREC_TASKS.values() for i, x in pool]

    def sft_examples(self, data, enc, rng: random.Random):
        unknown = set(self.config.tasks) - {"seqrec", *_MAPPING}
        if unknown:
            raise ValueError(f"lcrec: unknown task(s) {sorted(unknown)}")
        out: list[Example] = []
        if "seqrec" in self.config.tasks:
            if enc.style == "compact":
                out += self.seqrec_sft_examples(data, enc, rng)
            else:
                train = data.train_samples(self.config.max_train_samples, seed=rng.randint(0, 2**31))
                for h, t in zip(train.histories, train.targets):
                    ins, inp = rng.choice(SEQREC_POOL)
                    tpl = ALPACA.format(instruction=ins, input=inp.replace("{history}", HISTORY))
                    out.append(Example(enc.template(tpl, h, data.sid), enc.answer(t), "seqrec"))
        if any(data.item_text):
            tasks = [_MAPPING[t] for t in self.config.tasks if t in _MAPPING]
            source = LCREC_COMPACT_TASKS if enc.style == "compact" else LCREC_TASKS
            pools = {"item2sid": source["item2index"], "sid2item": source["index2item"],
                     "hist2title": source["hist2title"]}
            cap = self.config.max_alignment_per_task
            train = data.train_samples(cap, seed=rng.randint(0, 2**31))
            out += alignment_examples(enc, data.sid, data.item_text, train.histories, train.targets, tasks=tasks,
                                      templates=pools, rng=rng, max_per_task=cap)
        return out
