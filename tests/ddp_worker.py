"""Run by tests/test_distributed.py under ``torchrun --nproc_per_node 2``: SFT then GRPO through the
shared loop (DDP over gloo on CPU); each process writes a checksum of its final weights."""
import copy
import json
import sys
from pathlib import Path

import torch

from bench import distributed
from bench.generative.backbone import BackboneConfig, build_backbone
from bench.generative.decoding import TrieTensors
from bench.generative.grpo import GRPOConfig, GRPOLoss, beam_rollout, completion_logprobs
from bench.generative.prompts import Example, collate
from bench.generative.training import TrainConfig, causal_lm_loss, train
from bench.sids import SIDTrie, sid_token

out = Path(sys.argv[1])
codes = torch.tensor([[a, b] for a in range(3) for b in range(3)]).numpy()
bb = build_backbone(BackboneConfig(preset="tiny"), sid_tokens=[sid_token(l, c) for l in range(2) for c in range(3)],
                    levels=2, codebook_size=3, corpus=["history next"], seed=0)
model = bb.model.float()
sid = bb.sid_token_ids
examples = [Example(prompt=[5, 6, 7 + i % 3], response=[int(sid[0, i % 3]), int(sid[1, (i + 1) % 3])]) for i in range(32)]
facts = {"sft": train(model, causal_lm_loss, examples, lambda b: collate(b, bb.pad_id, 64),
                      TrainConfig(epochs=1, batch_size=4, lr=1e-2), workdir=out / "ckpt", progress=False,
                      log=lambda *_: None, name="sft")}
ref = copy.deepcopy(model).eval()  # the frozen reference is the SFT model, as in GenerativeMethod._grpo
trie = TrieTensors(SIDTrie.build(codes, 3), sid)
loss = GRPOLoss(ref, GRPOConfig(num_generations=4), beam_rollout(trie, bb.pad_id),
                lambda m, p, t, given: (completion_logprobs(m, p, t, bb.pad_id), {}))
prompts = [([5, 6, 7 + i % 3], i % 9) for i in range(16)]
facts["grpo"] = train(model, loss, prompts, lambda b: b, TrainConfig(epochs=1, batch_size=2, lr=1e-2),
                      workdir=out / "ckpt", progress=False, log=lambda *_: None, name="grpo", restore_best=False)
flat = torch.cat([p.detach().flatten() for p in model.parameters()])
(out / f"rank{distributed.rank()}.json").write_text(json.dumps({
    "world": distributed.world_size(), "checksum": [float(flat.sum()), float((flat ** 2).sum()), float(flat[::7].sum())],
    "sft_steps": facts["sft"]["steps"], "grpo_steps": facts["grpo"]["steps"]}))
