"""``reasonrec bench decode``: trie-constrained beam search vs the HF ``generate`` route
(``num_beams=W`` + ``prefix_allowed_tokens_fn``, as MiniOneRec decodes) and vs our own beam
search without the trie mask (mask overhead), on the same model and inputs, in one process.
Speed is reported as ratios measured in the same run."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np


def _synthetic_codes(n_items: int, levels: int, k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    codes = np.unique(rng.integers(0, k, (int(n_items * 1.2), levels)), axis=0)
    return codes[rng.permutation(len(codes))[:n_items]]


def _setup(*, preset, dataset, n_items, codebook_size, levels, users, history, threads, seed):
    """A preset backbone and shared-prompt inputs: a prepared dataset's SIDs and test histories, or a
    synthetic catalog of the given size with random histories."""
    import torch

    from bench.generative.backbone import BackboneConfig, build_backbone
    from bench.generative.prompts import SEQREC_TEMPLATE, PromptEncoder
    from bench.sids import sid_string, sid_token

    if threads:
        torch.set_num_threads(threads)
    if dataset:
        from bench.data import prepare

        data = prepare(dataset, progress=False, log=lambda *_: None)
        codes, k = data.codes, data.codebook_size
        hist = list(data.split("test").histories[:users])
    else:
        codes, k = _synthetic_codes(n_items, levels, codebook_size, seed), codebook_size
        rng = np.random.default_rng(seed)
        hist = [rng.integers(0, len(codes), history).tolist() for _ in range(users)]
    L = codes.shape[1]
    bb = build_backbone(BackboneConfig(preset=preset), sid_tokens=[sid_token(l, c) for l in range(L) for c in range(k)],
                        levels=L, codebook_size=k, corpus=[SEQREC_TEMPLATE], seed=seed)
    enc = PromptEncoder(bb.tokenizer, bb.sid_token_ids, codes)
    prompts = [enc.template(SEQREC_TEMPLATE, h, lambda i: sid_string(codes[i])) for h in hist]
    return bb, codes, k, prompts


def bench_decode(*, preset: str = "small", dataset: str | None = None, n_items: int = 12101, codebook_size: int = 256,
                 levels: int = 4, users: int = 16, history: int = 20, beam_width: int = 50, batch_size: int = 16,
                 repeats: int = 3, hf_users: int | None = None, threads: int | None = None, seed: int = 0,
                 out: str | None = None, log=print) -> dict:
    import torch

    from bench.generative.decoding import TrieTensors, constrained_beam_search, hf_constrained_generate
    from bench.sids import SIDTrie

    bb, codes, k, prompts = _setup(preset=preset, dataset=dataset, n_items=n_items, codebook_size=codebook_size,
                                   levels=levels, users=users, history=history, threads=threads, seed=seed)
    L = codes.shape[1]
    model = bb.model.eval()
    tt = TrieTensors(SIDTrie.build(codes, k), bb.sid_token_ids)
    codes_t = torch.tensor(codes)

    def ours(constrained=True, ps=prompts):
        outs = []
        for s in range(0, len(ps), batch_size):
            outs.append(constrained_beam_search(model, tt, prompts=ps[s:s + batch_size], pad_id=bb.pad_id,
                                                beam_width=beam_width, constrained=constrained).items)
        return torch.cat(outs)

    def hf(ps):
        outs = []
        for s in range(0, len(ps), batch_size):
            outs.append(hf_constrained_generate(model, codes_t, bb.sid_token_ids, ps[s:s + batch_size], bb.pad_id,
                                                beam_width=beam_width))
        return torch.cat(outs)

    hf_prompts = prompts[: hf_users or len(prompts)]
    runs = {"ours": lambda: ours(), "ours_unconstrained": lambda: ours(constrained=False),
            "hf_generate": lambda: hf(hf_prompts)}
    best = {name: float("inf") for name in runs}
    outputs = {}
    with torch.no_grad():
        ours(ps=prompts[:2]), hf(prompts[:1])  # warm-up
        for _ in range(repeats):  # interleaved, best of N: machine noise hits all routes alike
            for name, fn in runs.items():
                t0 = time.perf_counter()
                outputs[name] = fn()
                best[name] = min(best[name], time.perf_counter() - t0)
    t_ours, t_unc, t_hf = best["ours"], best["ours_unconstrained"], best["hf_generate"]
    items, hf_items = outputs["ours"], outputs["hf_generate"]
    per_user = {"ours": t_ours / len(prompts), "ours_unconstrained": t_unc / len(prompts), "hf_generate": t_hf / len(hf_prompts)}
    agree = float((hf_items == items[: len(hf_prompts)]).float().mean())
    res = {
        "setup": {"preset": preset, "parameters": bb.n_parameters(), "items": int(len(codes)), "levels": L,
                  "codebook_size": int(k), "users": len(prompts), "hf_users": len(hf_prompts),
                  "prompt_tokens_mean": float(np.mean([len(p) for p in prompts])), "beam_width": beam_width,
                  "batch_size": batch_size, "repeats": repeats, "torch_threads": torch.get_num_threads(),
                  "dataset": dataset or "synthetic"},
        "seconds_per_user": per_user,
        "speedup_vs_hf_generate": per_user["hf_generate"] / per_user["ours"],
        "mask_overhead": per_user["ours"] / per_user["ours_unconstrained"] - 1,
        "hf_agreement": agree,  # fraction of identical (user, rank) items between the two routes
        "invalid_items_ours": int((items < 0).sum()),
    }
    log(json.dumps(res, indent=2))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(res, indent=2))
    return res


def bench_grpo_logprobs(*, preset: str = "small", prompts: int = 8, num_generations: int = 16, history: int = 20,
                        n_items: int = 12101, codebook_size: int = 256, levels: int = 4, repeats: int = 3,
                        threads: int | None = None, seed: int = 0, out: str | None = None, log=print) -> dict:
    """The policy + reference log-prob pass of one GRPO step (forward + backward of the policy,
    forward of the reference) with each prompt encoded once and its cache shared by the G
    completions, vs the same function fed each (prompt, completion) pair separately."""
    import torch

    from bench.generative.grpo import completion_logprobs

    bb, codes, _, ps = _setup(preset=preset, dataset=None, n_items=n_items, codebook_size=codebook_size,
                              levels=levels, users=prompts, history=history, threads=threads, seed=seed)
    model = bb.model.train()
    G = num_generations
    items = np.random.default_rng(seed + 1).integers(0, len(codes), (prompts, G))
    tokens = bb.sid_token_ids[torch.arange(levels), torch.tensor(codes[items])]          # [B, G, M]
    routes = {"shared_prompt": (ps, tokens),  # B prompts, G completions each
              "separate": ([p for p in ps for _ in range(G)], tokens.reshape(prompts * G, 1, levels))}

    def step(route):
        rp, rt = routes[route]
        lp = completion_logprobs(model, rp, rt, bb.pad_id)
        with torch.no_grad():  # the reference model's pass (same cost; the policy stands in for it)
            completion_logprobs(model, rp, rt, bb.pad_id)
        lp.sum().backward()
        return lp.detach().reshape(prompts, G, levels)

    best, outs = {name: float("inf") for name in routes}, {}
    for name in routes:  # warm-up
        step(name)
    for _ in range(repeats):  # interleaved, best of N
        for name in routes:
            model.zero_grad()
            t0 = time.perf_counter()
            outs[name] = step(name)
            best[name] = min(best[name], time.perf_counter() - t0)
    res = {"setup": {"preset": preset, "parameters": bb.n_parameters(), "prompts": prompts, "num_generations": G,
                     "prompt_tokens_mean": float(np.mean([len(p) for p in ps])), "completion_tokens": levels,
                     "repeats": repeats, "torch_threads": torch.get_num_threads()},
           "seconds_per_step": best, "speedup": best["separate"] / best["shared_prompt"],
           "max_abs_logprob_diff": float((outs["shared_prompt"] - outs["separate"]).abs().max())}
    log(json.dumps(res, indent=2))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(res, indent=2))
    return res


def bench_sft(*, dataset: str = "ml-100k", preset: str = "medium", batch_size: int = 64, batches: int = 12,
              threads: int | None = None, seed: int = 0, out: str | None = None, log=print) -> dict:
    """Seqrec SFT throughput of the three routes on one dataset, same preset, one process:
    ``paper`` (App. E.2 prompt, one example per training prefix, the issue-3 path), ``compact``
    (start token + SIDs, one example per prefix) and ``packed`` (compact, one causal pass per user
    window). Each route trains ``batches`` length-bucketed batches of a random sample of its examples
    (forward, backward, AdamW step); reported: tokens/s, seconds per supervised target item, and the estimated minutes
    for one epoch over every training prefix, with ratios to the paper route."""
    import random
    import tempfile

    import torch

    from bench.data import prepare
    from bench.generative.training import causal_lm_loss
    from bench.method import FitContext
    from bench.registry import REGISTRY

    if threads:
        torch.set_num_threads(threads)
    data = prepare(dataset, progress=False, log=lambda *_: None)
    cls = REGISTRY.get("minionerec")
    routes = {"paper": {"prompt_style": "paper"}, "compact": {"prompt_style": "compact", "pack_seqrec": False},
              "packed": {"prompt_style": "compact", "pack_seqrec": True}}
    res: dict = {"setup": {"dataset": dataset, "preset": preset, "batch_size": batch_size, "batches": batches,
                           "torch_threads": torch.get_num_threads()}, "routes": {}}
    for name, style in routes.items():
        m = cls(cls.Config(backbone={"preset": preset}, alignment_tasks=False, **style))
        with tempfile.TemporaryDirectory() as tmp:  # backbone_init is written there; nothing to keep
            m._build(data, FitContext(workdir=Path(tmp), seed=seed, progress=False, log=lambda *_: None))
        examples = m.sft_examples(data, m.enc, random.Random(seed))
        per_target = data.sid_levels + (1 if m.style == "paper" else 0)  # the paper answer ends with eos
        targets_total = sum(len(e.response) for e in examples) // per_target
        rng = random.Random(seed)
        opt = torch.optim.AdamW(m.bb.model.parameters(), lr=1e-4)
        m.bb.model.train()
        step = lambda b: (causal_lm_loss(m.bb.model, m._collate(b)).backward(), opt.step(), opt.zero_grad())
        step(rng.sample(examples, min(batch_size, len(examples))))  # warm-up
        # length-bucketed batches, as the training loop makes them (a random sample, sorted by length)
        pool = sorted(rng.sample(examples, min(batches * batch_size, len(examples))),
                      key=lambda e: len(e.prompt) + len(e.response))
        chosen = [pool[i:i + batch_size] for i in range(0, len(pool), batch_size)]
        tok = tgt = 0
        t0 = time.perf_counter()
        for b in chosen:
            tok += sum(len(e.prompt) + len(e.response) for e in b)
            tgt += sum(len(e.response) for e in b) // per_target
            step(b)
        dt = time.perf_counter() - t0
        res["routes"][name] = {"parameters": m.bb.n_parameters(), "vocab": len(m.bb.tokenizer),
                               "examples_per_epoch": len(examples), "targets_per_epoch": targets_total,
                               "mean_tokens_per_example": round(float(np.mean([len(e.prompt) + len(e.response)
                                                                               for e in examples])), 1),
                               "tokens_per_second": round(tok / dt, 1), "seconds_per_target": dt / tgt,
                               "epoch_minutes": round(dt / tgt * targets_total / 60, 2)}
        log(f"{name}: {res['routes'][name]}")
    p = res["routes"]["paper"]["epoch_minutes"]
    res["epoch_speedup_vs_paper"] = {n: round(p / r["epoch_minutes"], 2) for n, r in res["routes"].items()}
    log(json.dumps(res, indent=2))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(res, indent=2))
    return res


def bench_packed(*, method: str = "rearec", dataset: str = "ml-100k", batches: int = 4, threads: int | None = None,
                 seed: int = 0, out: str | None = None, log=print, **config) -> dict:
    """Training throughput of a RecBole-route method (``rearec``: past its warm-up, ``sasrec``, ``gru4rec``),
    one process, same model and loss: ``per_prefix``
    (RecBole's dataloader, one sample per training prefix padded to the max history, the public code's
    route) vs ``packed`` (user windows, every prefix in one pass), and for a method with a ``loss`` setting
    (SASRec, GRU4Rec) ``packed_sampled_softmax`` (the same windows, ``loss: sampled_softmax``). Each route times
    ``batches`` batches of
    about ``batch_size`` targets (forward, backward, Adam step); reported: seconds per target, the estimated
    minutes of one epoch over every training prefix, and the ratio."""
    import tempfile

    import torch

    from bench.data import prepare
    from bench.packed import packed_batch, training_windows, window_batches
    from bench.registry import REGISTRY

    if threads:
        torch.set_num_threads(threads)
    data = prepare(dataset, progress=False, log=lambda *_: None)
    cls = REGISTRY.get(method)
    m = cls(cls.Config(**{**config, "packed": True}))
    res: dict = {"setup": {"method": method, "dataset": dataset, "batches": batches, "config": config,
                           "batch_size": m.config.batch_size, "torch_threads": torch.get_num_threads()}, "routes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        _, model, train_data = m._build(data, Path(tmp), seed)
    if hasattr(model, "set_epoch"):
        model.set_epoch(m.config.warmup_epochs)  # ReaRec: every loss term
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=m.config.lr)

    def step(loss_fn):
        t0 = time.perf_counter()
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    total_targets = len(train_data.dataset)
    it = iter(train_data)
    dt = tgt = 0
    for i in range(batches + 1):
        inter = next(it)
        inter = inter.to(m.device)
        sec = step(lambda: model.calculate_loss(inter))
        if i:  # the first is a warm-up
            dt, tgt = dt + sec, tgt + len(inter)
    res["routes"]["per_prefix"] = {"targets_per_epoch": total_targets, "seconds_per_target": dt / tgt,
                                   "epoch_minutes": round(dt / tgt * total_targets / 60, 2)}
    log(f"per_prefix: {res['routes']['per_prefix']}")
    windows = training_windows(data.train_sequences(), data.max_history)
    order = np.random.default_rng(seed).permutation(len(windows))
    packed_targets = sum(len(w) - f for w, f in windows)

    def time_packed(loss_of):
        dt = tgt = 0
        for i, (batch, n, _) in enumerate(window_batches(windows, order, m.config.batch_size)):
            if i > batches:
                break
            seq, lens, first = (t.to(m.device) for t in packed_batch(batch, m.ours2rb))
            sec = step(lambda: loss_of(model, seq, lens, first))
            if i:  # the first is a warm-up
                dt, tgt = dt + sec, tgt + n
        if not tgt:
            raise ValueError(f"bench packed: {dataset} has too few windows for {batches} timed batches of "
                             f"{m.config.batch_size} targets after a warm-up one; lower batches or batch_size")
        return {"targets_per_epoch": packed_targets, "seconds_per_target": dt / tgt,
                "epoch_minutes": round(dt / tgt * packed_targets / 60, 2)}

    res["routes"]["packed"] = time_packed(m.packed_loss)
    log(f"packed: {res['routes']['packed']}")
    def epoch_seconds(route):  # unrounded (a toy epoch rounds to 0.0 minutes)
        return res["routes"][route]["seconds_per_target"] * res["routes"][route]["targets_per_epoch"]

    res["epoch_speedup_packed_vs_per_prefix"] = round(epoch_seconds("per_prefix") / epoch_seconds("packed"), 2)
    if getattr(m.config, "loss", None) == "ce":  # SASRec / GRU4Rec: the sampled-softmax loss on the same batches
        ss = cls(cls.Config(**{**config, "packed": True, "loss": "sampled_softmax"}))
        res["setup"]["n_negatives"] = ss.config.n_negatives
        res["routes"]["packed_sampled_softmax"] = time_packed(ss.packed_loss)
        log(f"packed_sampled_softmax: {res['routes']['packed_sampled_softmax']}")
        res["epoch_speedup_sampled_softmax_vs_ce_packed"] = round(
            epoch_seconds("packed") / epoch_seconds("packed_sampled_softmax"), 2)
    log(json.dumps(res, indent=2))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(res, indent=2))
    return res

