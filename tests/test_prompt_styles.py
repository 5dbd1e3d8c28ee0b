"""Prompt styles, packed seqrec SFT, length buckets and the SFT stage cache."""
import random

import numpy as np
import pytest
import torch

from bench.generative.backbone import BackboneConfig, build_backbone
from bench.generative.prompts import (START_TOKEN, Example, PromptEncoder, collate, packed_seqrec_examples,
                                      seqrec_examples, training_windows)
from bench.generative.batches import LengthBuckets
from bench.generative.training import causal_lm_loss
from bench.method import FitContext
from bench.registry import REGISTRY
from bench.sids import sid_token

CODES = np.array([[1, 2, 3], [0, 0, 1], [4, 4, 4], [2, 1, 0], [3, 3, 3], [0, 4, 2], [1, 1, 1]])


@pytest.fixture(scope="module")
def compact():
    toks = [sid_token(l, c) for l in range(3) for c in range(5)]
    bb = build_backbone(BackboneConfig(preset="tiny"), sid_tokens=toks, levels=3, codebook_size=5, corpus=[],
                        extra_tokens=[START_TOKEN], seed=0)
    return bb, PromptEncoder(bb.tokenizer, bb.sid_token_ids, CODES, style="compact")


def _sid(bb, item):
    return bb.sid_token_ids[torch.arange(3), torch.tensor(CODES[item])].tolist()


def test_compact_prompt_is_start_history_sids_then_answer(compact):
    bb, enc = compact
    start = bb.tokenizer.convert_tokens_to_ids(START_TOKEN)
    assert enc.seqrec([2, 0]) == [start, *_sid(bb, 2), *_sid(bb, 0)]
    assert enc.answer(1) == _sid(bb, 1)  # no end token: the decoder stops after the SID's levels
    # the seam for reasoning methods: tokens between history and answer
    assert enc.seqrec([2], middle=[7, 8]) == [start, *_sid(bb, 2), 7, 8]
    # no English: every prompt token is the start token or a SID token
    sid_ids = set(bb.sid_token_ids.flatten().tolist())
    assert all(t in sid_ids for t in enc.seqrec([3, 4, 5])[1:])


def test_compact_needs_its_start_token():
    toks = [sid_token(l, c) for l in range(3) for c in range(5)]
    bb = build_backbone(BackboneConfig(preset="tiny"), sid_tokens=toks, levels=3, codebook_size=5, corpus=[], seed=0)
    with pytest.raises(ValueError, match="<rec>"):
        PromptEncoder(bb.tokenizer, bb.sid_token_ids, CODES, style="compact")


def test_training_windows_cover_every_target_once():
    seq = list(range(7))
    assert training_windows([seq], 3) == [[0, 1, 2, 3], [3, 4, 5, 6]]
    assert training_windows([[5]], 3) == []  # nothing to predict
    assert training_windows([list(range(8))], 3) == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7]]
    targets = [t for w in training_windows([list(range(30))], 20) for t in w[1:]]
    assert targets == list(range(1, 30))


def test_packed_loss_equals_mean_of_per_prefix_losses(compact):
    """One causal pass over a window == the n - 1 prefix examples it replaces (same weights),
    also batched with left padding against windows of other lengths."""
    bb, enc = compact
    torch.manual_seed(0)
    model = bb.model.eval()
    windows = [[0, 1, 2, 3, 4], [5, 6], [2, 4, 6, 1]]
    packed = packed_seqrec_examples(enc, windows)
    assert packed[0].prompt == enc.seqrec([0]) and packed[0].response == sum((_sid(bb, i) for i in [1, 2, 3, 4]), [])
    prefixes = [(w[:n], w[n]) for w in windows for n in range(1, len(w))]
    per_prefix = seqrec_examples(enc, None, [h for h, _ in prefixes], [t for _, t in prefixes])
    with torch.no_grad():
        one_by_one = [float(causal_lm_loss(model, collate([e], bb.pad_id))) for e in per_prefix]
        batched = float(causal_lm_loss(model, collate(packed, bb.pad_id)))
        singles = [float(causal_lm_loss(model, collate([e], bb.pad_id))) for e in packed]
    # every prefix has the same number (3) of SID tokens: the token mean is the mean of the prefix losses
    assert batched == pytest.approx(np.mean(one_by_one), rel=1e-5)
    sizes = [len(w) - 1 for w in windows]
    assert np.average(singles, weights=sizes) == pytest.approx(np.mean(one_by_one), rel=1e-5)


def test_packed_examples_refuse_the_paper_style(compact):
    bb, _ = compact
    enc = PromptEncoder(bb.tokenizer, bb.sid_token_ids, CODES, style="paper")
    with pytest.raises(ValueError, match="compact"):
        packed_seqrec_examples(enc, [[0, 1]])


def test_length_buckets_are_a_deterministic_permutation():
    lengths = [random.Random(i).randint(1, 50) for i in range(1000)]
    b = LengthBuckets(lengths, batch_size=16, seed=3, chunk=8)
    b.set_epoch(0)
    first = list(b)
    flat = [i for batch in first for i in batch]
    assert sorted(flat) == list(range(1000)) and len(first) == len(b)
    spread = np.mean([max(lengths[i] for i in x) - min(lengths[i] for i in x) for x in first])
    assert spread < 10  # similar lengths share a batch (128-example chunks: ~6; random batches: ~45)
    assert list(b) == first
    b.set_epoch(1)
    assert list(b) != first


def test_long_item_text_keeps_a_label_position():
    """A response longer than max_len is cut, never the whole prompt (the loss needs a token before it)."""
    batch = collate([Example([1, 2, 3], list(range(10, 30)))], pad_id=0, max_len=8)
    assert batch["input_ids"].shape[1] == 8
    assert batch["labels"][0, 0] == -100 and (batch["labels"][0, 1:] != -100).all()


# ---------------------------------------------------------------- methods in both styles

def _fit(name, data, tmp_path, log=None, seed=0, **overrides):
    cls = REGISTRY.get(name)
    cfg = {**cls.smoke_config, **overrides}
    m = cls(cls.Config(**cfg))
    facts = m.fit(data, valid=data.split("valid"),
                  ctx=FitContext(workdir=tmp_path, seed=seed, progress=False, log=log or (lambda *_: None)))
    return m, facts


@pytest.mark.parametrize("name", ["minionerec", "lcrec"])
def test_style_defaults_follow_the_backbone(name, toy_data, tmp_path):
    from bench.generative.prompts import ALPACA

    cls = REGISTRY.get(name)
    assert cls(cls.Config()).style == "compact" and cls(cls.Config()).packed
    pre = cls(cls.Config(backbone={"name_or_path": "Qwen/Qwen3-0.6B"}))
    assert pre.style == "paper" and not pre.packed
    with pytest.raises(ValueError, match="pack_seqrec"):
        cls(cls.Config(prompt_style="paper", pack_seqrec=True)).packed
    m = cls(cls.Config(**cls.smoke_config, prompt_style="paper"))
    m._build(toy_data, FitContext(workdir=tmp_path, progress=False, log=lambda *_: None))
    prompt = m.bb.tokenizer.decode(m.enc.seqrec([0, 1]))
    assert prompt.startswith(ALPACA.split(" ")[0]) and "chronological order" in prompt


def test_alignment_tasks_in_the_compact_style(toy_data, tmp_path):
    from collections import Counter

    cls = REGISTRY.get("minionerec")
    m = cls(cls.Config(**cls.smoke_config, alignment_tasks=True))
    m._build(toy_data, FitContext(workdir=tmp_path, progress=False, log=lambda *_: None))
    ex = m.sft_examples(toy_data, m.enc, random.Random(0))
    assert set(Counter(e.task for e in ex)) == {"seqrec", "item2sid", "sid2item", "hist2title"}
    for e in ex:
        assert e.prompt[0] == m.enc.start and len(e.prompt) < 40  # short prompts, no Alpaca text
        if e.task == "item2sid":
            assert "toy item" in m.bb.tokenizer.decode(e.prompt) and len(e.response) == toy_data.sid_levels
    default = cls(cls.Config(**cls.smoke_config))
    default._build(toy_data, FitContext(workdir=tmp_path / "d", progress=False, log=lambda *_: None))
    assert {e.task for e in default.sft_examples(toy_data, default.enc, random.Random(0))} == {"seqrec"}


def test_sft_stage_is_trained_once_and_reused(toy_data, tmp_path):
    logs = []
    first, f1 = _fit("minionerec", toy_data, tmp_path / "a", log=logs.append, seed=7, rl={"enabled": False})
    assert not f1["sft"].get("reused") and f1["sft"]["steps"] > 0
    # the SFT+RL row: same SFT inputs, other RL settings -> the stage is reused, not retrained
    second, f2 = _fit("minionerec", toy_data, tmp_path / "b", log=logs.append, seed=7)
    assert f2["sft"]["reused"] and f2["sft"]["stage"] == f1["sft"]["stage"] and "rl" in f2
    assert f2["started_from"]["stage"] == f1["sft"]["stage"]
    assert not (tmp_path / "b" / "sft_progress.json").exists()  # no SFT epoch ran in the second run
    assert any("reused" in m for m in logs)
    # the reused weights are the trained ones
    sd1 = first.bb.model.state_dict()
    third, f3 = _fit("minionerec", toy_data, tmp_path / "c", seed=7, rl={"enabled": False})
    assert all(torch.equal(sd1[k], v) for k, v in third.bb.model.state_dict().items())
    # any input that differs trains again: seed, SFT config, prompt style, backbone
    for n, kw in enumerate(({"seed": 8}, {"sft": {"lr": 5e-4}}, {"prompt_style": "paper"},
                            {"backbone": {"preset": "small"}})):
        seed = kw.pop("seed", 7)
        _, f = _fit("minionerec", toy_data, tmp_path / f"x{n}", seed=seed,
                    rl={"enabled": False}, **kw)
        assert not f["sft"].get("reused") and f["sft"]["stage"] != f1["sft"]["stage"], kw
    # and reuse can be switched off
    _, f = _fit("minionerec", toy_data, tmp_path / "off", seed=7, rl={"enabled": False}, reuse_sft=False)
    assert "reused" not in f["sft"] and "stage" not in f["sft"]


def test_validation_picks_the_best_ndcg_epoch(toy_data, tmp_path):
    _, facts = _fit("minionerec", toy_data, tmp_path, rl={"enabled": False}, reuse_sft=False,
                    sft={"epochs": 3, "patience": 3})
    hist = facts["sft"]["history"]
    assert all({"valid_NDCG@10", "valid_HR@10", "valid_loss", "tokens_per_second"} <= set(h) for h in hist)
    best = max(hist, key=lambda h: h["valid_NDCG@10"])
    assert facts["sft"]["best_epoch"] == best["epoch"] and facts["sft"]["best_valid"] == pytest.approx(best["valid_NDCG@10"], abs=1e-5)
    assert facts["selection"]["metric"] == "NDCG@10" and facts["selection"]["split"] == "valid"
    assert facts["sft"]["tokens_per_second"] > 0


def test_pretrained_backbone_route_uses_the_paper_prompt(toy_env, toy_data, tmp_path):
    """``backbone.name_or_path`` (a local folder standing in for Qwen/Qwen3-0.6B): the method loads it
    with from_pretrained, picks the paper prompt, trains per prefix and ranks real items."""
    from bench.generative.prompts import ALPACA, SEQREC_TEMPLATE
    from bench.runner import build_spec, run

    bb = build_backbone(BackboneConfig(preset="tiny"), sid_tokens=[], levels=0, codebook_size=0,
                        corpus=[ALPACA, SEQREC_TEMPLATE], seed=0)
    bb.model.save_pretrained(tmp_path / "lm")
    bb.tokenizer.save_pretrained(tmp_path / "lm")
    cfg = {**REGISTRY.get("minionerec").smoke_config, "backbone": {"name_or_path": str(tmp_path / "lm")}}
    res = run(build_spec("minionerec", "toy", method_config=cfg), tmp_path / "runs", progress=False, echo=False)
    assert res.method_facts["prompt_style"] == "paper" and not res.method_facts["packed_seqrec"]
    assert res.method_facts["backbone"] == str(tmp_path / "lm") and res.evaluation["invalid_items"] == 0
