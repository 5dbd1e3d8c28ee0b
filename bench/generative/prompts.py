"""The one prompt (MiniOneRec's, LASAR App. E.2) and the SFT task builders every generative method uses.

Prompts are encoded piecewise (template pieces tokenized once, SIDs mapped straight to token ids),
which is verified against tokenizing the full text once per encoder and falls back to full-text
tokenization for tokenizers where the two differ.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Sequence

ALPACA = ("Below is an instruction that describes a task, paired with an input that provides further context. "
          "Write a response that appropriately completes the request.\n"
          "### Instruction:\n{instruction}\n### User Input:\n{input}\n### Response:\n")
SEQREC_INSTRUCTION = "Can you predict the next possible item that the user may expect?"
SEQREC_INPUT = ("The user has interacted with items {history} in chronological order. "
                "Can you predict the next possible item that the user may expect?")
HISTORY = "{history}"


def seqrec_prompt(history_sids: Sequence[str]) -> str:
    """The exact MiniOneRec / LASAR prompt for history -> next SID."""
    return ALPACA.format(instruction=SEQREC_INSTRUCTION, input=SEQREC_INPUT.format(history=", ".join(history_sids)))


@dataclass
class Example:
    prompt: list[int]
    response: list[int]
    task: str = "seqrec"


class PromptEncoder:
    """Token ids for prompts with a ``{history}`` slot holding SIDs, and for responses."""

    def __init__(self, tokenizer, sid_token_ids, item_codes, sep: str = ", "):
        import numpy as np

        self.tok = tokenizer
        self.eos = tokenizer.eos_token_id
        ids = sid_token_ids.numpy() if hasattr(sid_token_ids, "numpy") else np.asarray(sid_token_ids)
        levels = np.arange(item_codes.shape[1])
        self.item_ids = ids[levels[None, :], item_codes]  # [n_items, M] token ids of every item's SID
        self.sep_text = sep
        self._cache: dict[str, tuple[list[int], list[int]]] = {}
        self.sep = self._encode(sep)
        self.piecewise_ok = True

    def _encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def sid_ids(self, item: int) -> list[int]:
        return self.item_ids[item].tolist()

    def template(self, template: str, history: Sequence[int], sid_text: Callable[[int], str]) -> list[int]:
        if self.piecewise_ok:
            if template not in self._cache:
                pre, _, post = template.partition(HISTORY)
                self._cache[template] = (self._encode(pre), self._encode(post))
                # verify once that piecewise == full-text tokenization for this tokenizer
                full = self._encode(template.replace(HISTORY, self.sep_text.join(sid_text(i) for i in history)))
                if full != self._piecewise(template, history):
                    self.piecewise_ok = False
                    return full
            return self._piecewise(template, history)
        return self._encode(template.replace(HISTORY, self.sep_text.join(sid_text(i) for i in history)))

    def _piecewise(self, template: str, history: Sequence[int]) -> list[int]:
        pre, post = self._cache[template]
        out = list(pre)
        for n, item in enumerate(history):
            if n:
                out += self.sep
            out += self.item_ids[item].tolist()
        return out + post

    def text(self, text: str) -> list[int]:
        return self._encode(text)


# ---------------------------------------------------------------- task builders

SEQREC_TEMPLATE = seqrec_prompt([HISTORY])


def seqrec_examples(enc: PromptEncoder, sid_text, histories, targets, template: str = SEQREC_TEMPLATE) -> list[Example]:
    return [Example(enc.template(template, h, sid_text), enc.sid_ids(t) + [enc.eos], "seqrec")
            for h, t in zip(histories, targets)]


def _alpaca(instruction: str, input_: str) -> str:
    return ALPACA.format(instruction=instruction, input=input_)


ALIGNMENT_TEMPLATES = {
    # item text -> SID
    "item2sid": [("Which item has the following title?", "Title: {title}")],
    # SID -> item text
    "sid2item": [("What is the title of this item?", "Item: {sid}")],
    # history SIDs -> next item's text
    "hist2title": [("Can you predict the title of the next item that the user may expect?",
                    "The user has interacted with items {history} in chronological order. "
                    "What is the title of the next item?")],
}


def alignment_examples(enc: PromptEncoder, sid_text, item_text: list[str], histories, targets,
                       tasks=("item2sid", "sid2item", "hist2title"), templates=ALIGNMENT_TEMPLATES,
                       rng: random.Random | None = None, max_per_task: int | None = None) -> list[Example]:
    """Alignment tasks where item text exists: a template is drawn per example from ``templates``."""
    rng = rng or random.Random(0)
    out: list[Example] = []
    items = [i for i, t in enumerate(item_text) if t]
    title_ids = {}

    def tid(i):
        if i not in title_ids:
            title_ids[i] = enc.text(item_text[i])
        return title_ids[i]

    for task in tasks:
        pool = templates[task]
        if task in ("item2sid", "sid2item"):
            chosen = items if max_per_task is None else rng.sample(items, min(max_per_task, len(items)))
            for i in chosen:
                ins, inp = rng.choice(pool)
                if task == "item2sid":
                    prompt = enc.text(_alpaca(ins, inp.format(title=item_text[i])))
                    out.append(Example(prompt, enc.sid_ids(i) + [enc.eos], task))
                else:
                    tpl = _alpaca(ins, inp.replace("{sid}", HISTORY))
                    out.append(Example(enc.template(tpl, [i], sid_text), tid(i) + [enc.eos], task))
        elif task == "hist2title":
            idx = [n for n, t in enumerate(targets) if item_text[t]]
            if max_per_task is not None:
                idx = rng.sample(idx, min(max_per_task, len(idx)))
            for n in idx:
                ins, inp = rng.choice(pool)
                tpl = _alpaca(ins, inp.replace("{history}", HISTORY))
                out.append(Example(enc.template(tpl, histories[n], sid_text), tid(targets[n]) + [enc.eos], task))
        else:
            raise ValueError(f"unknown alignment task {task!r}")
    return out


def collate(examples: Sequence[Example], pad_id: int, max_len: int | None = None):
    """Left-padded batch: input_ids, attention_mask, position_ids, labels (-100 on prompt and pad)."""
    import torch

    seqs = []
    for ex in examples:
        ids, lab = ex.prompt + ex.response, [-100] * len(ex.prompt) + ex.response
        if max_len and len(ids) > max_len:  # keep the response, cut the oldest prompt tokens
            ids, lab = ids[-max_len:], lab[-max_len:]
        seqs.append((ids, lab))
    width = max(len(s[0]) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, (ids, lab) in enumerate(seqs):
        input_ids[r, width - len(ids):] = torch.tensor(ids)
        labels[r, width - len(ids):] = torch.tensor(lab)
        mask[r, width - len(ids):] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "position_ids": positions(mask), "labels": labels}


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int):
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
        mask[r, width - len(p):] = 1
    return ids, mask


def positions(mask):
    return (mask.cumsum(-1) - 1).clamp(min=0)
