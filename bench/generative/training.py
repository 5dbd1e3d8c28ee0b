"""The one training loop, on accelerate (device placement, gradient accumulation, mixed precision;
DDP/FSDP through ``accelerate launch``). Methods plug in a loss; they do not fork the loop.

AdamW, cosine schedule with warm-up, early stopping on a validation score (higher is better),
a checkpoint every epoch (``<workdir>/last``) and resume from it, the best weights kept apart.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field

from bench.atomic import atomic_torch_save, atomic_write_json
from bench.epochs import EpochBook
from bench.generative.batches import LengthBuckets
from bench.method import TrainingDiverged, validation_epoch


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    epochs: int = Field(3, ge=0)
    lr: float = Field(3e-4, gt=0)
    batch_size: int = Field(32, ge=1)
    grad_accum: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.08, ge=0, le=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float | None = 1.0
    patience: int = Field(2, ge=1, description="epochs without validation improvement before stopping")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps cap over the whole run")
    max_minutes: float | None = Field(None, gt=0, description="stop after the epoch that crosses this budget")
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"


def _allow_mixed_precision(mixed_precision: str) -> None:
    """accelerate keeps one process-wide state and refuses a second Accelerator with another mixed
    precision; one process may train several phases or runs with different settings (SFT in fp32,
    then bf16 elsewhere in a suite), so the accelerator part of that state is reset between them
    (the process group, PartialState, is kept)."""
    from accelerate.state import AcceleratorState

    shared = AcceleratorState._shared_state
    if shared and str(shared.get("_mixed_precision", mixed_precision)) != mixed_precision:
        AcceleratorState._reset_state(reset_partial_state=False)


@contextlib.contextmanager
def _quiet_logger(name: str, level: int = logging.ERROR):
    logger = logging.getLogger(name)
    old = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(old)


def train(model, loss_fn: Callable[[Any, dict], Any], dataset: Sequence, collate_fn: Callable, cfg: TrainConfig, *,
          workdir: Path, valid_fn: Callable[[Any], float | dict] | None = None, seed: int = 0, progress: bool = True,
          log: Callable[[str], None] = print, name: str = "train", restore_best: bool = True,
          lengths: Sequence[int] | None = None, param_groups: Callable[[Any], list[dict]] | None = None,
          updates_per_batch: int = 1, batches=None, initial_score: float | None = None,
          state: "PhaseState | None" = None, tracker=None) -> dict:
    """Train ``model`` in place; returns facts (epochs, best score, history, stop reason, tokens/s).

    ``loss_fn(model, batch)`` returns a scalar tensor, or a dict with the total under ``"loss"`` and
    named components (tensors or floats) whose epoch means are logged and recorded in the history.
    A NaN or infinite loss stops training with :class:`~bench.method.TrainingDiverged`.
    ``valid_fn(model) -> float`` (higher is better), or a dict with the score under ``"score"`` and
    other validation facts recorded in the history.
    ``lengths`` (one per example) turns on length-bucketed batches.
    ``param_groups(model) -> [{"params": [...], "lr": ...}, ...]``: optimizer parameter groups (e.g.
    a head with its own learning rate); default: every trainable parameter at ``cfg.lr``.
    ``updates_per_batch``: optimizer steps per loaded batch, each calling ``loss_fn`` with the same
    batch object (GRPO's several updates per rollout: the loss keeps its rollout for that batch).
    ``batches``: a batch sampler over example indices with ``set_epoch`` (as
    :class:`~bench.generative.batches.LengthBuckets`; e.g. :class:`~bench.generative.batches.PeriodBatches`,
    whose "epochs" are validation periods).
    ``initial_score``: the validation score of the weights before training (RL: the SFT weights); they are
    the best so far (``best_epoch`` -1) and are restored when no epoch beats them.
    ``state``: the phase's own :class:`PhaseState` (its random streams, running statistics), saved with every
    epoch checkpoint and restored on resume, so a resumed phase goes on exactly as an uninterrupted one.
    ``tracker``: the run's experiment tracker (:class:`bench.tracking.Tracker`): each epoch's record, as ``name``.
    After the call the model holds the best weights seen by ``valid_fn``, or the last weights when
    ``restore_best`` is False.
    """
    import torch
    from accelerate import Accelerator
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm
    from transformers import get_cosine_schedule_with_warmup

    from bench.device import torch_device

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    _allow_mixed_precision(cfg.mixed_precision)
    acc = Accelerator(cpu=torch_device().type == "cpu", mixed_precision=cfg.mixed_precision,
                      gradient_accumulation_steps=cfg.grad_accum)
    gen = torch.Generator().manual_seed(seed)
    buckets = LengthBuckets(lengths, cfg.batch_size, seed) if lengths is not None else batches
    if buckets is not None:
        if lengths is not None and len(lengths) != len(dataset):
            raise ValueError(f"{name}: {len(lengths)} lengths for {len(dataset)} examples")
        loader = DataLoader(list(range(len(dataset))), batch_sampler=buckets,
                            collate_fn=lambda idx: collate_fn([dataset[i] for i in idx]))
    else:
        loader = DataLoader(list(range(len(dataset))), batch_size=cfg.batch_size, shuffle=True, generator=gen,
                            collate_fn=lambda idx: collate_fn([dataset[i] for i in idx]))
    steps_per_epoch = math.ceil(len(loader) * updates_per_batch / cfg.grad_accum)
    total = max(1, min(cfg.epochs * steps_per_epoch, cfg.max_steps or 10**12))
    groups = param_groups(model) if param_groups is not None else [
        {"params": [p for p in model.parameters() if p.requires_grad]}]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = get_cosine_schedule_with_warmup(opt, int(cfg.warmup_ratio * total), total)
    # Several processes: the model is not wrapped in DDP. A phase's loss may run the model several times
    # per step (LASAR's latent loop: one forward per latent step; GRPO: prompt then completions) and use
    # modules outside its forward (LASAR's policy head on h_0), which DDP's per-parameter hooks refuse
    # ("marked ready twice", "did not receive grad"); instead the gradients are averaged over the processes
    # at each optimizer step (the same update DDP makes), after the weights are made equal once.
    manual_sync = acc.num_processes > 1
    if manual_sync:
        model = model.to(acc.device)
        _broadcast_weights(model)
        opt, loader, sched = acc.prepare(opt, loader, sched)
        acc.register_for_checkpointing(model)
    else:
        model, opt, loader, sched = acc.prepare(model, opt, loader, sched)
    if state is not None:
        acc.register_for_checkpointing(state)

    state_file, last_dir, best_file = workdir / f"{name}_progress.json", workdir / f"{name}_last", workdir / f"{name}_best.pt"
    book = EpochBook(cfg.epochs, cfg.patience, cfg.max_minutes, cfg.max_steps)
    if state_file.is_file() and last_dir.is_dir():
        saved = json.loads(state_file.read_text())
        book.restore(saved)
        if "seconds_spent" not in saved and book.history:  # written before 2026-12-07: no clock of its own, but
            book.spent_before = book.spent = float(book.history[-1].get("seconds", 0.0))  # the last epoch's time
        acc.load_state(str(last_dir))
        log(f"{name}: resumed after epoch {book.epoch} (step {book.step}, best {book.best:.4f}, "
            f"{book.spent / 60:.1f} min trained{f' of {cfg.max_minutes:g}' if cfg.max_minutes else ''})")
    elif initial_score is not None:  # the starting weights compete (epoch -1)
        book.best, book.best_epoch = float(initial_score), -1
        if acc.is_main_process:
            atomic_torch_save(acc.unwrap_model(model).state_dict(), best_file)
    book.started = time.time()
    for epoch in book.remaining():
        loader.set_epoch(epoch) if hasattr(loader, "set_epoch") else None
        gen.manual_seed(seed + epoch)  # the same shuffles whether resumed or not
        if buckets is not None:
            buckets.set_epoch(epoch)
        model.train()
        running, n, tokens, t_epoch = 0.0, 0, 0, time.time()
        bar = tqdm(loader, desc=f"{name} epoch {epoch + 1}/{cfg.epochs}", disable=not progress or not acc.is_main_process,
                   leave=False)
        components: dict[str, float] = {}
        for batch in bar:
            for _ in range(updates_per_batch):
                with acc.accumulate(model):
                    out = loss_fn(model, batch)
                    loss = out["loss"] if isinstance(out, dict) else out
                    value = float(loss.detach())
                    if not math.isfinite(value):
                        raise TrainingDiverged(
                            f"{name}: the training loss is {value} at epoch {epoch + 1}, optimizer step {book.step + 1} "
                            f"(lr {cfg.lr:g}); lower the learning rate or check the data. No result is written.")
                    acc.backward(loss)
                    if acc.sync_gradients and manual_sync:
                        _average_gradients(model, acc.num_processes)
                    if acc.sync_gradients:
                        if cfg.max_grad_norm:
                            acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                        book.step += 1
                    opt.step()
                    sched.step()
                    opt.zero_grad()
                running += value
                n += 1
                if isinstance(out, dict):
                    for key, v in out.items():
                        if key != "loss":
                            components[key] = components.get(key, 0.0) + float(v.detach() if hasattr(v, "detach") else v)
                if cfg.max_steps and book.step >= cfg.max_steps:
                    break
            if isinstance(batch, dict) and "attention_mask" in batch:
                tokens += int(batch["attention_mask"].sum())
            bar.set_postfix(loss=f"{running / max(n, 1):.4f}")
            if cfg.max_steps and book.step >= cfg.max_steps:
                break
        train_seconds = time.time() - t_epoch
        with validation_epoch(epoch):
            got = valid_fn(acc.unwrap_model(model)) if valid_fn else -running / max(n, 1)
        extra = {k: v for k, v in got.items() if k != "score"} if isinstance(got, dict) else {}
        score = float(got["score"] if isinstance(got, dict) else got)
        rec = {"epoch": epoch, "step": book.step, "train_loss": round(running / max(n, 1), 5),
               "valid_score": round(score, 5), **extra,
               "seconds": round(book.elapsed(), 1), "train_seconds": round(train_seconds, 1)}
        if components:
            rec["loss_components"] = {k: round(v / max(n, 1), 5) for k, v in components.items()}
        if tokens:
            rec["tokens"] = tokens * acc.num_processes
            rec["tokens_per_second"] = round(tokens * acc.num_processes / max(train_seconds, 1e-9), 1)
        if book.end_epoch(epoch, score, rec) and acc.is_main_process:
            atomic_torch_save(acc.unwrap_model(model).state_dict(), best_file)
        if tracker is not None and acc.is_main_process:
            tracker.log_epoch(name, rec)
        log(f"{name} epoch {epoch}: train loss {rec['train_loss']:.4f}, valid {score:.4f} (best {book.best:.4f})"
            + (f", {rec['tokens_per_second']:,.0f} tokens/s" if "tokens_per_second" in rec else "")
            + "".join(f", {k} {v}" for k, v in extra.items())
            + "".join(f", {k} {v}" for k, v in rec.get("loss_components", {}).items()))
        with _quiet_logger("accelerate.utils.other"):  # "Removed shared tensor {'lm_head.weight'}": tied weights, expected
            acc.save_state(str(last_dir))
        if acc.is_main_process:
            atomic_write_json(state_file, book.state(), indent=1)
        if book.done:
            break
    model = acc.unwrap_model(model, keep_fp32_wrapper=False)  # inference outside the loop: no autocast
    if restore_best and best_file.is_file():
        model.load_state_dict(torch.load(best_file, weights_only=True))
    acc.free_memory()
    # the time earlier attempts trained, up to their last finished epoch: a phase's "seconds" adds it to its own
    facts = {**book.facts(), "steps": book.step, "earlier_attempts_seconds": round(book.spent_before, 1)}
    tok = [(r["tokens"], r["train_seconds"]) for r in book.history if "tokens" in r]
    if tok:  # training throughput (validation excluded), over every epoch run
        facts["tokens_per_second"] = round(sum(t for t, _ in tok) / max(sum(s for _, s in tok), 1e-9), 1)
    return facts


class PhaseState(dict):
    """A training phase's own state (e.g. LASAR's N sampler and REINFORCE baseline, Stage 2's replay draws),
    checkpointed with the phase's epochs by :func:`train` (``state=``): random generators (torch, numpy,
    ``random``) keep their position, plain values (numbers, strings, lists, None) their value; anything else
    (a cache of live objects) is not state and is rebuilt after a resume."""

    def state_dict(self) -> dict:
        import copy
        import random

        import numpy as np
        import torch

        out = {}
        for key, v in self.items():
            if isinstance(v, torch.Generator):
                out[key] = ("torch", v.get_state())
            elif isinstance(v, np.random.Generator):
                out[key] = ("numpy", v.bit_generator.state)
            elif isinstance(v, random.Random):
                out[key] = ("random", v.getstate())
            elif v is None or isinstance(v, (bool, int, float, str, list, tuple)):
                out[key] = ("value", copy.deepcopy(v))
        return out

    def load_state_dict(self, saved: dict) -> None:
        for key, (kind, v) in saved.items():
            if kind == "torch":
                self[key].set_state(v)
            elif kind == "numpy":
                self[key].bit_generator.state = v
            elif kind == "random":
                self[key].setstate(v)
            else:
                self[key] = v


def causal_lm_loss(model, batch, weights: Any = None) -> Any:
    """Cross-entropy on response tokens only (labels = -100 elsewhere).

    Batches are left-padded with the response last, so only the last ``R + 1`` positions (R = the
    longest response) can predict a label: logits are computed for those alone (``logits_to_keep``),
    which skips the vocabulary projection for the whole prompt.

    ``weights`` ([B, T], aligned with ``batch["labels"]``): a weighted mean over the labelled tokens,
    ``sum(w * ce) / sum(w)``; None (the default) is the plain token mean."""
    import torch.nn.functional as F

    labels = batch["labels"]
    keep = int((labels != -100).sum(1).max()) + 1
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"], logits_to_keep=keep)
    logits = out.logits[:, :-1].float()
    labels = labels[:, -keep + 1:] if keep > 1 else labels[:, :0]
    if weights is None:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
    w = (weights[:, -keep + 1:] if keep > 1 else weights[:, :0]).float() * (labels != -100)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100,
                         reduction="none")
    return (ce * w.reshape(-1)).sum() / w.sum().clamp_min(1e-12)


def _broadcast_weights(model) -> None:
    """Every process starts a phase from the main process's weights."""
    import torch.distributed as dist

    for t in list(model.parameters()) + list(model.buffers()):
        dist.broadcast(t.data, 0)


def _average_gradients(model, world: int) -> None:
    """All-reduce (mean) the parameters' gradients over the processes. A parameter no process computed a
    gradient for (a module the loss did not reach) keeps none, as in one process (the optimizer skips it);
    one that only some processes reached counts zeros from the others."""
    import torch
    import torch.distributed as dist

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return
    seen = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=params[0].device)
    dist.all_reduce(seen, op=dist.ReduceOp.MAX)
    params = [p for p, s in zip(params, seen.tolist()) if s]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p, g in zip(params, grads):  # views into the one reduced buffer (no copy per parameter)
        p.grad = flat[offset:offset + g.numel()].view_as(g)
        offset += g.numel()
