"""Prompt, backbone factory and training-loop tests."""
import json
import math
import re

import numpy as np
import pytest
import torch

from bench.generative.backbone import BackboneConfig, build_backbone, load_backbone
from bench.generative.prompts import (SEQREC_TEMPLATE, Example, PromptEncoder, collate, seqrec_examples,
                                      seqrec_prompt)
from bench.generative.training import TrainConfig, causal_lm_loss, train
from bench.sids import sid_string, sid_token

PAPER_PROMPT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. Write a "
    "response that appropriately completes the request.\n### Instruction:\nCan you predict the next possible item "
    "that the user may expect?\n### User Input:\nThe user has interacted with items <a_1><b_2><c_3><d_4>, "
    "<a_0><b_0><c_0><d_1> in chronological order. Can you predict the next possible item that the user may "
    "expect?\n### Response:\n")


def test_prompt_is_the_paper_prompt():
    assert seqrec_prompt(["<a_1><b_2><c_3><d_4>", "<a_0><b_0><c_0><d_1>"]) == PAPER_PROMPT


@pytest.fixture(scope="module")
def bb():
    toks = [sid_token(l, c) for l in range(4) for c in range(5)]
    return build_backbone(BackboneConfig(preset="tiny"), sid_tokens=toks, levels=4, codebook_size=5,
                          corpus=[SEQREC_TEMPLATE, "some item title"], seed=0)


def test_piecewise_encoding_equals_full_text(bb):
    codes = np.array([[1, 2, 3, 4], [0, 0, 0, 1], [4, 4, 4, 4]])
    enc = PromptEncoder(bb.tokenizer, bb.sid_token_ids, codes)
    sid = lambda i: sid_string(codes[i])
    ids = enc.template(SEQREC_TEMPLATE, [0, 1], sid)
    assert enc.piecewise_ok
    assert ids == bb.tokenizer(PAPER_PROMPT, add_special_tokens=False)["input_ids"]
    assert enc.template(SEQREC_TEMPLATE, [2, 0, 1], sid) == \
        bb.tokenizer(seqrec_prompt([sid(2), sid(0), sid(1)]), add_special_tokens=False)["input_ids"]
    ex = seqrec_examples(enc, sid, [[0, 1]], [2])[0]
    assert ex.response == bb.sid_token_ids[torch.arange(4), torch.tensor(codes[2])].tolist() + [bb.eos_id]


def test_collate_masks_prompt_and_left_pads(bb):
    batch = collate([Example([5, 6, 7], [8, 9]), Example([5], [8, 9])], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9], [0, 0, 5, 8, 9]]
    assert batch["labels"].tolist() == [[-100, -100, -100, 8, 9], [-100, -100, -100, 8, 9]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4], [0, 0, 0, 1, 2]]


def test_from_pretrained_path_on_a_local_folder(bb, tmp_path):
    """The real-model route (AutoModelForCausalLM/AutoTokenizer.from_pretrained), exercised on a
    tiny model saved to a folder: SID tokens are added and embeddings resized."""
    bb.model.save_pretrained(tmp_path / "m")
    bb.tokenizer.save_pretrained(tmp_path / "m")  # knows levels a-d only
    extra = [sid_token(4, c) for c in range(3)]    # level 'e' is new to it
    got = build_backbone(BackboneConfig(name_or_path=str(tmp_path / "m")), sid_tokens=[sid_token(l, c) for l in range(5) for c in range(3)],
                         levels=5, codebook_size=3)
    assert got.source == str(tmp_path / "m")
    assert got.model.get_input_embeddings().weight.shape[0] == len(got.tokenizer) > len(bb.tokenizer)
    assert [got.tokenizer.convert_ids_to_tokens(int(i)) for i in got.sid_token_ids[4]] == extra
    assert got.model.generation_config.do_sample is False


def test_save_and_reload_backbone(bb, tmp_path):
    bb.save(tmp_path / "b")
    again = load_backbone(tmp_path / "b", 4, 5)
    ids = torch.tensor([[5, 6, 7]])
    torch.testing.assert_close(again.model(input_ids=ids).logits, bb.model(input_ids=ids).logits)
    assert again.sid_token_ids.tolist() == bb.sid_token_ids.tolist()


def _on_model(model, batch):
    """The batch on the model's device: ``train`` leaves the model where it trained (a GPU when there is one)."""
    device = next(model.parameters()).device
    return {k: v.to(device) for k, v in batch.items()}


def _toy_task(bb, n=64):
    rng = np.random.default_rng(0)
    sid = bb.sid_token_ids
    # learnable: the answer is the SID whose first code equals the prompt's first token parity
    return [Example([5 + int(x)], sid[torch.arange(4), torch.full((4,), int(x) % 5)].tolist() + [bb.eos_id])
            for x in rng.integers(0, 5, n)]


def test_training_loop_learns_and_resumes(tmp_path):
    toks = [sid_token(l, c) for l in range(4) for c in range(5)]
    make = lambda: build_backbone(BackboneConfig(preset="tiny"), sid_tokens=toks, levels=4, codebook_size=5,
                                  corpus=["a b c d e f g"], seed=0)
    bb1 = make()
    data = _toy_task(bb1)
    col = lambda b: collate(b, bb1.pad_id)
    loss0 = float(causal_lm_loss(bb1.model, col(data)).detach())
    cfg = TrainConfig(epochs=4, lr=5e-3, batch_size=16, patience=10)
    full = train(bb1.model, causal_lm_loss, data, col, cfg, workdir=tmp_path / "a", progress=False, log=lambda *_: None)
    assert float(causal_lm_loss(bb1.model, _on_model(bb1.model, col(data))).detach()) < loss0 * 0.5
    # a crash in the middle of epoch 3 (4 steps per epoch), then the same call again: it resumes
    # from the epoch-2 checkpoint and ends with the same history and weights as the uninterrupted run
    bb2 = make()
    calls = {"n": 0}

    def crashing_loss(model, batch):
        calls["n"] += 1
        if calls["n"] == 10:
            raise KeyboardInterrupt
        return causal_lm_loss(model, batch)

    with pytest.raises(KeyboardInterrupt):
        train(bb2.model, crashing_loss, data, col, cfg, workdir=tmp_path / "b", progress=False, log=lambda *_: None)
    bb2 = make()  # a fresh process: weights come from the checkpoint only
    state_file = tmp_path / "b" / "train_progress.json"  # as written before the state kept its clock:
    state = json.loads(state_file.read_text())        # the clock comes from the last epoch's "seconds"
    state_file.write_text(json.dumps({k: v for k, v in state.items() if k != "seconds_spent"}))
    logs = []
    resumed = train(bb2.model, causal_lm_loss, data, col, cfg, workdir=tmp_path / "b", progress=False, log=logs.append)
    assert any("resumed after epoch 1" in m for m in logs)
    # the clock (and so the time budget) goes on from the first attempt's epochs, it does not restart
    seconds = [h["seconds"] for h in resumed["history"]]
    assert seconds == sorted(seconds), seconds
    assert resumed["earlier_attempts_seconds"] == seconds[1] and full["earlier_attempts_seconds"] == 0
    assert [h["train_loss"] for h in resumed["history"]] == pytest.approx([h["train_loss"] for h in full["history"]], rel=1e-4)
    for p, q in zip(bb1.model.parameters(), bb2.model.parameters()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)


def test_response_window_loss_equals_full_loss(bb):
    import torch.nn.functional as F

    batch = collate([Example([5, 6, 7, 8], [9, 10, 11]), Example([5], [9, 10, 11, 12, 13]), Example([7, 7], [9])], 0)
    full = bb.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    position_ids=batch["position_ids"]).logits[:, :-1]
    ref = F.cross_entropy(full.reshape(-1, full.shape[-1]), batch["labels"][:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(causal_lm_loss(bb.model, batch), ref)


def test_restore_best_false_keeps_the_last_weights(tmp_path):
    toks = [sid_token(l, c) for l in range(4) for c in range(5)]
    bb = build_backbone(BackboneConfig(preset="tiny"), sid_tokens=toks, levels=4, codebook_size=5,
                        corpus=["a b c d e f g"], seed=0)
    data = _toy_task(bb, 32)
    col = lambda b: collate(b, bb.pad_id)
    scores = iter([1.0, 0.0, -1.0])  # epoch 0 scores best
    cfg = TrainConfig(epochs=3, lr=5e-3, batch_size=16, patience=10)
    facts = train(bb.model, causal_lm_loss, data, col, cfg, workdir=tmp_path, valid_fn=lambda m: next(scores),
                  progress=False, log=lambda *_: None, restore_best=False)
    best = torch.load(tmp_path / "train_best.pt", weights_only=True)
    assert facts["best_valid"] == 1.0 and facts["epochs_run"] == 3
    last = bb.model.state_dict()
    assert any(not torch.equal(best[k].cpu(), last[k].cpu()) for k in best)  # not rolled back to epoch 0


def test_training_loop_in_bf16_mixed_precision(tmp_path):
    """mixed_precision='bf16' runs the forward under autocast (CPU autocast here, CUDA on GPUs)."""
    import torch

    toks = [sid_token(l, c) for l in range(4) for c in range(5)]
    bb = build_backbone(BackboneConfig(preset="tiny"), sid_tokens=toks, levels=4, codebook_size=5,
                        corpus=["a b c d e f g"], seed=0)
    data = _toy_task(bb)
    col = lambda b: collate(b, bb.pad_id)
    loss0 = float(causal_lm_loss(bb.model, col(data)).detach())
    seen = []  # dtype of an attention projection's output inside the forward (accelerate casts logits back to fp32)
    hook = bb.model.model.layers[0].self_attn.q_proj.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    cfg = TrainConfig(epochs=4, lr=5e-3, batch_size=16, patience=10, mixed_precision="bf16")
    facts = train(bb.model, causal_lm_loss, data, col, cfg, workdir=tmp_path, progress=False, log=lambda *_: None)
    assert seen and set(seen) == {torch.bfloat16}  # the training forward really ran in bf16
    seen.clear()
    causal_lm_loss(bb.model, _on_model(bb.model, col(data[:2])))
    hook.remove()
    assert seen == [torch.float32]  # after training the model is plain again (no autocast wrapper left)
    assert next(bb.model.parameters()).dtype == torch.float32  # master weights stay fp32
    assert facts["steps"] == 16 and float(causal_lm_loss(bb.model, _on_model(bb.model, col(data))).detach()) < loss0 * 0.7


@pytest.fixture
def fresh_accelerate():
    """accelerate fixes its device with the first Accelerator of a process: a test that changes
    REASONREC_DEVICE starts and leaves a fresh state."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def _train_toy(tmp_path, **cfg):
    toks = [sid_token(l, c) for l in range(4) for c in range(5)]
    bb = build_backbone(BackboneConfig(preset="tiny"), sid_tokens=toks, levels=4, codebook_size=5,
                        corpus=["a b c d e f g"], seed=0)
    data = _toy_task(bb, 32)
    col = lambda b: collate(b, bb.pad_id)
    train(bb.model, causal_lm_loss, data, col, TrainConfig(epochs=1, lr=5e-3, batch_size=16, **cfg),
          workdir=tmp_path, progress=False, log=lambda *_: None)
    with torch.no_grad():
        return bb.model, causal_lm_loss(bb.model, _on_model(bb.model, col(data)))


def test_reasonrec_device_cpu_keeps_training_on_the_cpu(tmp_path, monkeypatch, fresh_accelerate):
    """A GPU machine told REASONREC_DEVICE=cpu trains on the CPU (the accelerator follows the variable)."""
    monkeypatch.setenv("REASONREC_DEVICE", "cpu")
    model, loss = _train_toy(tmp_path)
    assert {p.device.type for p in model.parameters()} == {"cpu"} and loss.device.type == "cpu"
    assert math.isfinite(float(loss))


@pytest.mark.parametrize("value", ["gpu", "meta", "cuda:x", "cpu,cuda"])
def test_an_unknown_reasonrec_device_is_an_error_naming_it(value, tmp_path, monkeypatch):
    from bench.device import torch_device

    monkeypatch.setenv("REASONREC_DEVICE", value)
    with pytest.raises(ValueError, match=re.escape(f"REASONREC_DEVICE='{value}'")):
        torch_device()
    with pytest.raises(ValueError, match=re.escape(f"REASONREC_DEVICE='{value}'")):  # train asks before it trains
        train(torch.nn.Linear(2, 2), None, [], None, TrainConfig(), workdir=tmp_path, progress=False)


def test_reasonrec_device_default_and_cuda_without_a_gpu(monkeypatch):
    from bench.device import torch_device

    monkeypatch.delenv("REASONREC_DEVICE", raising=False)
    assert torch_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("REASONREC_DEVICE", " cpu ")
    assert torch_device() == torch.device("cpu")
    if not torch.cuda.is_available():
        monkeypatch.setenv("REASONREC_DEVICE", "cuda")
        with pytest.raises(ValueError, match="REASONREC_DEVICE='cuda', but torch sees no CUDA GPU"):
            torch_device()


@pytest.mark.cuda
def test_training_loop_on_cuda_gives_a_finite_loss(tmp_path, monkeypatch, fresh_accelerate):
    monkeypatch.setenv("REASONREC_DEVICE", "cuda")
    model, loss = _train_toy(tmp_path)
    assert next(model.parameters()).device.type == "cuda" and loss.device.type == "cuda"
    assert math.isfinite(float(loss))


def test_period_batches_with_lengths_cover_each_pass_once_in_batches_of_similar_length():
    import numpy as np

    from bench.generative.batches import PeriodBatches

    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 21, 1000).tolist()
    plain = PeriodBatches(1000, 10, period=25, seed=3)
    # without lengths: the pass's permutation cut into batches, as before lengths existed
    order = np.random.default_rng([3, 0]).permutation(1000).tolist()
    assert list(plain) == [order[b:b + 10] for b in range(0, 250, 10)]
    bucketed = PeriodBatches(1000, 10, period=25, seed=3, lengths=lengths, chunk=8)
    assert bucketed.periods == plain.periods == 4
    seen = []
    for epoch in range(4):  # one pass = 4 periods
        bucketed.set_epoch(epoch)
        seen += [i for b in bucketed for i in b]
    assert sorted(seen) == list(range(1000))  # every example once per pass
    spread = lambda sampler: np.mean([np.ptp([lengths[i] for i in b]) for b in sampler])  # noqa: E731
    bucketed.set_epoch(0)
    assert spread(bucketed) < 0.5 * spread(plain)  # similar lengths in a batch
    again = PeriodBatches(1000, 10, period=25, seed=3, lengths=lengths, chunk=8)
    assert list(again) == list(bucketed)  # deterministic in (seed, epoch)
    with pytest.raises(ValueError, match="lengths for 1000 examples"):
        PeriodBatches(1000, 10, period=25, lengths=lengths[:5])
