"""TIGER: the encoder-decoder behind the shared beam search ranks exactly as teacher-forced scoring."""
import numpy as np
import pytest
import torch

from bench.generative.backbone import build_seq2seq
from bench.generative.decoding import TrieTensors, constrained_beam_search
from bench.generative.seq2seq import EOS, DecoderView, encoder_inputs, sid_token_ids
from bench.sids import SIDTrie

K, L = 5, 3


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    codes = np.unique(rng.integers(0, K, (200, L)), axis=0)[:60]
    model = build_seq2seq("tiny", levels=L, codebook_size=K, dropout=0.0, seed=3).eval()
    sid_ids = sid_token_ids(L, K)
    return torch.as_tensor(codes), model, sid_ids, TrieTensors(SIDTrie.build(codes, K), sid_ids)


def _teacher_forced(model, codes, sid_ids, history):
    """Joint log-probability of every item's SID given the history, one decoder pass per item."""
    ids, mask = encoder_inputs([history] * len(codes), codes, sid_ids)
    labels = sid_ids[torch.arange(L).unsqueeze(0), codes]
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, labels=labels).logits
    return torch.log_softmax(logits, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1).sum(-1)


def test_encoder_inputs_are_sid_tokens_then_eos():
    codes = torch.tensor([[0, 1, 2], [4, 4, 4]])
    ids, mask = encoder_inputs([[1, 0], [1]], codes, sid_token_ids(L, K))
    first = [2 + 0 * K + 4, 2 + 1 * K + 4, 2 + 2 * K + 4]  # item 1's codes 4, 4, 4 at levels 0..2
    zero = [2 + 0, 2 + K + 1, 2 + 2 * K + 2]
    assert ids.tolist() == [first + zero + [EOS], first + [EOS, 0, 0, 0]]
    assert mask.tolist() == [[1] * 7, [1] * 4 + [0] * 3]


def test_full_width_beam_through_the_view_equals_teacher_forcing(setup):
    codes, model, sid_ids, trie = setup
    view = DecoderView(model)
    histories = [[0, 5, 7], [3], [10, 11, 12, 13, 2]]
    ids, mask = encoder_inputs(histories, codes, sid_ids)
    res = constrained_beam_search(view, trie, prefix=view.prefix(ids, mask), beam_width=len(codes), shared_prefix=False)
    for r, h in enumerate(histories):
        ex = _teacher_forced(model, codes, sid_ids, h)
        order = torch.argsort(ex, descending=True)
        assert res.items[r].tolist() == order.tolist()
        torch.testing.assert_close(res.scores[r], ex[order], atol=1e-4, rtol=1e-4)


def test_batched_ranking_equals_one_by_one(setup):
    codes, model, sid_ids, trie = setup
    view = DecoderView(model)
    histories = [[0, 5, 7], [3], [10, 11, 12, 13, 2]]
    ids, mask = encoder_inputs(histories, codes, sid_ids)
    together = constrained_beam_search(view, trie, prefix=view.prefix(ids, mask), beam_width=8, shared_prefix=False)
    for r, h in enumerate(histories):
        i1, m1 = encoder_inputs([h], codes, sid_ids)
        alone = constrained_beam_search(view, trie, prefix=view.prefix(i1, m1), beam_width=8, shared_prefix=False)
        assert alone.items[0].tolist() == together.items[r].tolist()


def test_tiger_learns_and_reloads_on_toy(toy_env, tmp_path):
    from bench.config import build_spec
    from bench.runner import run

    spec = build_spec("tiger", "toy", method_config={"preset": "tiny", "train": {"epochs": 4}, "period_batches": 2,
                                                    "valid_max_users": 20})
    res = run(spec, tmp_path / "runs", progress=False, echo=False)
    hist = res.training.model_dump()["history"]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]  # the loss falls
    assert res.method_facts["parameters"] > 0 and res.evaluation["inference"] == {"beam_width": 50}
    from bench.reevaluate import reevaluate

    again = reevaluate(tmp_path / "runs" / res.run_id, ["eval.batch_size=7"], out=tmp_path / "re", progress=False,
                       echo=False)
    assert again.metrics == res.metrics
