"""``reasonrec bench exact``: does the beam's ranking equal exact full-catalogue scoring?

For a fixed sample of test users and a saved generative model, every catalogue item is scored exactly
(the joint log-probability of its SID from the same prefix the beam starts from: for LASAR after its latent
steps) and the exact top-K is compared with the beam's: how often the two lists are identical, their
overlap, and the metrics each gives. The exact scores are the constrained beam search at full width (every
valid SID prefix kept at every level), which equals teacher-forced scoring of every item
(``tests/test_decoding.py::test_full_width_equals_exhaustive_ranking``); the check therefore measures what
the beam's width alone costs.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np


def exact_check(method, histories: list[list[int]], targets: np.ndarray, *, n_items: int, k: int = 10,
                beam_width: int = 50, log=print) -> dict:
    """Per-user comparison of the beam's top-``k`` with the exact top-``k`` (one user at a time: the exact
    route holds ``n_items`` rows)."""
    import torch

    from bench.generative.decoding import constrained_beam_search
    from bench.metrics import per_user_gains, target_ranks

    model = method.bb.model
    beam_width = max(beam_width, k)
    same_list, same_set, overlap, beam_ranks, exact_ranks, score_gap, full_ranks, beam_full = [], [], [], [], [], [], [], []
    t0 = time.perf_counter()
    with torch.no_grad():
        for u, (h, t) in enumerate(zip(histories, targets)):
            state, _ = method.prefix(model, [h], "test")
            beam = constrained_beam_search(model, method.trie, prefix=state, beam_width=beam_width)
            full = constrained_beam_search(model, method.trie, prefix=state, beam_width=n_items)
            b = beam.items[0].cpu().numpy()
            e = full.items[0].cpu().numpy()
            same_list.append(bool(np.array_equal(b[:k], e[:k])))
            same_set.append(set(b[:k].tolist()) == set(e[:k].tolist()))
            overlap.append(len(set(b[:k].tolist()) & set(e[:k].tolist())) / k)
            beam_ranks.append(int(target_ranks(b[None, :k], np.array([t]))[0]))
            exact_ranks.append(int(target_ranks(e[None, :k], np.array([t]))[0]))
            full_ranks.append(int(target_ranks(e[None], np.array([t]))[0]))  # in the whole catalogue
            beam_full.append(int(target_ranks(b[None], np.array([t]))[0]))  # in the beam's list (0: not in it)
            score_gap.append(float(full.scores[0, 0] - beam.scores[0, 0]))  # >= 0: exact best vs beam best
            if (u + 1) % 10 == 0 or u + 1 == len(histories):
                log(f"  {u + 1}/{len(histories)} users, {time.perf_counter() - t0:.0f}s; identical top-{k} so far "
                    f"{np.mean(same_list):.1%}")
    br, er = np.array(beam_ranks), np.array(exact_ranks)
    metrics = {}
    for name in (f"NDCG@{k}", f"HR@{k}"):
        gb, ge = per_user_gains(br, name), per_user_gains(er, name)
        metrics[name] = {"beam": float(gb.mean()), "exact": float(ge.mean()), "difference": float(gb.mean() - ge.mean()),
                         "users_that_differ": int((gb != ge).sum())}
    return {"users": len(histories), "k": k, "beam_width": beam_width,
            "identical_top_k": float(np.mean(same_list)), "same_set_top_k": float(np.mean(same_set)),
            "mean_overlap_top_k": float(np.mean(overlap)), "metrics": metrics,
            "top1_logprob_gap": {"mean": float(np.mean(score_gap)), "max": float(np.max(score_gap))},
            "seconds": round(time.perf_counter() - t0, 1),
            "per_user": {"exact_target_rank": full_ranks, "beam_target_rank": beam_full}}


def bench_exact(models: list[str], *, dataset: str, users: int = 100, k: int = 10, beam_width: int = 50,
                threads: int | None = None, out: str | None = None, log=print) -> dict:
    """:func:`exact_check` for each saved model (``METHOD=FOLDER``) on the same fixed test users."""
    import torch

    from bench.data import prepare
    from bench.generative.method import GenerativeMethod
    from bench.latency import load_saved
    from bench.metrics import fixed_subset

    if threads:
        torch.set_num_threads(threads)
    data = prepare(dataset, progress=False, log=lambda *_: None)
    test = data.split("test")
    idx = fixed_subset(len(test), users)
    hist, targets = [test.histories[i] for i in idx], test.targets[idx]
    res = {"setup": {"dataset": dataset, "users": len(hist), "k": k, "beam_width": beam_width,
                     "torch_threads": torch.get_num_threads(), "models": models,
                     "exact": "constrained beam search at full width (= teacher-forced scores of every item)"},
           "models": {}}
    for spec in models:
        m = load_saved(spec, data, log)
        if not isinstance(m, GenerativeMethod):
            raise ValueError(f"--model {spec!r}: {m.info.name} does not rank through a SID decoder; the exact check "
                             f"is for generative methods")
        log(f"{spec}: exact scoring of {data.n_items:,} items for {len(hist)} users")
        res["models"][spec] = got = exact_check(m, hist, targets, n_items=data.n_items, k=k, beam_width=beam_width,
                                                log=log)
        log(f"{spec}: identical top-{k} for {got['identical_top_k']:.1%} of users (same set {got['same_set_top_k']:.1%}); "
            + "; ".join(f"{n} beam {v['beam']:.4f} exact {v['exact']:.4f}" for n, v in got["metrics"].items()))
    log(json.dumps(res, indent=2))
    if out:
        from bench.atomic import atomic_write_json

        atomic_write_json(Path(out), res)
    return res
