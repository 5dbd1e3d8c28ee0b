"""The one prompt module: two prompt styles and the SFT task builders every generative method uses.

- ``paper``: MiniOneRec's / LASAR's App. E.2 prompt verbatim (an English Alpaca template around the
  history's SIDs), the answer SID then end-of-sequence. The default for a pretrained backbone,
  which can read the English.
- ``compact``: a start token, the history's SID tokens, the answer SID (no end token: the decoder
  stops after the SID's levels). The default for backbones built from a config, which cannot use
  English template text. One causal pass over a user's whole window then supervises every item
  (:func:`packed_seqrec_examples`).

The seam for reasoning methods is explicit in both: :meth:`PromptEncoder.seqrec` takes ``middle``
tokens placed between the history and the answer (LASAR's latent slots, GREAM's CoT text).

Paper prompts are encoded piecewise (template pieces tokenized once, SIDs mapped straight to token
ids), which is verified against tokenizing the full text once per encoder and falls back to
full-text tokenization for tokenizers where the two differ.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

PromptStyle = Literal["paper", "compact"]
START_TOKEN = "<rec>"  # the compact style's start token (an added special token)

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

    def __init__(self, tokenizer, sid_token_ids, item_codes, sep: str = ", ", style: PromptStyle = "paper",
                 sid_text: Callable[[int], str] | None = None, max_text_tokens: int | None = None):
        import numpy as np

        if style not in ("paper", "compact"):
            raise ValueError(f"prompt style must be 'paper' or 'compact', got {style!r}")
        self.style = style
        self.tok = tokenizer
        self.start = None
        if style == "compact":
            self.start = tokenizer.convert_tokens_to_ids(START_TOKEN)
            if self.start is None or self.start == tokenizer.unk_token_id:
                raise ValueError(f"the compact prompt style needs the {START_TOKEN} token in the tokenizer "
                                 "(build_backbone adds it when asked for extra_tokens=[START_TOKEN])")
        self._sid_text = sid_text
        self.max_text_tokens = max_text_tokens
        self.eos = tokenizer.eos_token_id
        ids = sid_token_ids.numpy() if hasattr(sid_token_ids, "numpy") else np.asarray(sid_token_ids)
        levels = np.arange(item_codes.shape[1])
        self.codes = np.asarray(item_codes)
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

    # ------------------------------------------------------------ the two styles
    def seqrec(self, history: Sequence[int], middle: Sequence[int] = ()) -> list[int]:
        """The history -> next item prompt in this encoder's style; ``middle`` (latent slots, CoT
        text) sits between the history and the answer."""
        if self.style == "compact":
            return [self.start, *self.item_ids[list(history)].reshape(-1).tolist(), *middle]
        return self.template(SEQREC_TEMPLATE, history, self._sid_fn()) + list(middle)

    def answer(self, item: int) -> list[int]:
        """The response for an item: its SID tokens (+ end-of-sequence in the paper style)."""
        return self.sid_ids(item) + ([] if self.style == "compact" else [self.eos])

    def text_answer(self, text: str) -> list[int]:
        ids = self._encode(text)
        if self.max_text_tokens:
            ids = ids[:self.max_text_tokens]
        return ids + [self.eos]

    def task_prompt(self, template, history: Sequence[int] = (), **fields) -> list[int]:
        """An alignment-task prompt. ``template``: ``(instruction, input)`` in the paper style (Alpaca),
        a short text in the compact style (start token + text); ``{history}`` holds SIDs, other
        ``{fields}`` are filled as text."""
        if self.style == "compact":
            text = template if isinstance(template, str) else template[1]
            pre, slot, post = text.format(**fields, history=HISTORY, sid=HISTORY).partition(HISTORY)
            ids = [self.start, *self._clip(self._encode(pre))]
            if slot:
                ids += self.item_ids[list(history)].reshape(-1).tolist()
            return ids + self._encode(post)
        ins, inp = template
        tpl = ALPACA.format(instruction=ins, input=inp.format(**fields, history=HISTORY, sid=HISTORY))
        if HISTORY not in tpl:  # a text-only prompt (item2sid): not worth a template cache entry
            return self._encode(tpl)
        return self.template(tpl, history, self._sid_fn())

    def _clip(self, ids: list[int]) -> list[int]:
        return ids[:self.max_text_tokens] if self.max_text_tokens else ids

    def _sid_fn(self):
        if self._sid_text is not None:
            return self._sid_text
        from bench.sids import sid_string

        return lambda i: sid_string(self.codes[i])


# ---------------------------------------------------------------- task builders

SEQREC_TEMPLATE = seqrec_prompt([HISTORY])


def seqrec_examples(enc: PromptEncoder, sid_text, histories, targets, template: str | None = None) -> list[Example]:
    """One example per (history, target) in the encoder's style (``template``: another paper-style
    template with a ``{history}`` slot)."""
    if template is not None and enc.style == "paper":
        return [Example(enc.template(template, h, sid_text), enc.answer(t), "seqrec") for h, t in zip(histories, targets)]
    return [Example(enc.seqrec(h), enc.answer(t), "seqrec") for h, t in zip(histories, targets)]


def training_windows(sequences: Sequence[Sequence[int]], max_history: int) -> list[list[int]]:
    """Each training sequence cut into windows of up to ``max_history + 1`` items that overlap by one
    item, so every item but a user's first is a target exactly once, with a history inside the cap."""
    out = []
    for seq in sequences:
        seq = list(seq)
        if len(seq) < 2:
            continue
        start = 0
        while start < len(seq) - 1:
            out.append(seq[start:start + max_history + 1])
            start += max_history
    return out


def packed_seqrec_examples(enc: PromptEncoder, windows: Sequence[Sequence[int]]) -> list[Example]:
    """Compact style: a window ``i_1 .. i_n`` as one example, start token + SID(i_1) as the prompt and
    SID(i_2) .. SID(i_n) as the response. One causal pass gives every SID token of items 2..n the
    loss it would get as the answer of the prefix before it (the same supervision as the n - 1
    per-prefix examples, tested equal), at a fraction of the tokens."""
    if enc.style != "compact":
        raise ValueError("packed seqrec examples need the compact prompt style (the paper prompt puts English "
                         "text between history and answer, so a window cannot be one causal pass)")
    out = []
    for w in windows:
        ids = enc.item_ids[list(w)].reshape(-1).tolist()
        m = enc.item_ids.shape[1]
        out.append(Example([enc.start, *ids[:m]], ids[m:], "seqrec"))
    return out


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
#: the same tasks as short text prompts for the compact style (after the start token)
COMPACT_ALIGNMENT_TEMPLATES = {
    "item2sid": ["title : {title} item :"],
    "sid2item": ["item : {sid} title :"],
    "hist2title": ["history : {history} next title :"],
}


def alignment_examples(enc: PromptEncoder, sid_text, item_text: list[str], histories, targets,
                       tasks=("item2sid", "sid2item", "hist2title"), templates=None,
                       rng: random.Random | None = None, max_per_task: int | None = None) -> list[Example]:
    """Alignment tasks where item text exists: a template is drawn per example from ``templates``
    (default: the encoder style's pool)."""
    rng = rng or random.Random(0)
    if templates is None:
        templates = COMPACT_ALIGNMENT_TEMPLATES if enc.style == "compact" else ALIGNMENT_TEMPLATES
    out: list[Example] = []
    items = [i for i, t in enumerate(item_text) if t]
    answers: dict[int, list[int]] = {}

    def text_answer(i):
        if i not in answers:
            answers[i] = enc.text_answer(item_text[i])
        return answers[i]

    for task in tasks:
        if task not in templates:
            raise ValueError(f"unknown alignment task {task!r} (known: {', '.join(sorted(templates))})")
        pool = templates[task]
        if task in ("item2sid", "sid2item"):
            chosen = items if max_per_task is None else rng.sample(items, min(max_per_task, len(items)))
            for i in chosen:
                tpl = rng.choice(pool)
                if task == "item2sid":
                    out.append(Example(enc.task_prompt(tpl, title=item_text[i]), enc.answer(i), task))
                else:
                    out.append(Example(enc.task_prompt(tpl, [i]), text_answer(i), task))
        elif task == "hist2title":
            idx = [n for n, t in enumerate(targets) if item_text[t]]
            if max_per_task is not None:
                idx = rng.sample(idx, min(max_per_task, len(idx)))
            for n in idx:
                out.append(Example(enc.task_prompt(rng.choice(pool), histories[n]), text_answer(targets[n]), task))
        else:
            raise ValueError(f"unknown alignment task {task!r}")
    return out


def collate(examples: Sequence[Example], pad_id: int, max_len: int | None = None):
    """Left-padded batch: input_ids, attention_mask, position_ids, labels (-100 on prompt and pad)."""
    import torch

    seqs = []
    for ex in examples:
        prompt, response = ex.prompt, ex.response
        if max_len and len(prompt) + len(response) > max_len:
            # keep the response (cut to max_len - 1 if it alone is longer: a label needs a token before
            # it), then the newest prompt tokens
            response = response[:max_len - 1]
            prompt = prompt[len(prompt) - (max_len - len(response)):]
        ids, lab = prompt + response, [-100] * len(prompt) + response
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
