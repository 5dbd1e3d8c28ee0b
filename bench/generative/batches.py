"""The batch samplers of the one training loop (:func:`bench.generative.training.train`): batches over example
indices with ``set_epoch``, deterministic in (seed, epoch). :class:`LengthBuckets`: batches of similar length
(less padding; ``train(lengths=...)``); :class:`PeriodBatches`: an "epoch" of the loop is a period of batches
within a pass over the data (GRPO validates every period)."""
from __future__ import annotations

import math
from typing import Sequence


class LengthBuckets:
    """Batches of similar length (less padding): each epoch shuffles, sorts chunks of ``chunk``
    batches by length, then shuffles the batch order. Deterministic in (seed, epoch)."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, chunk: int = 64):
        self.lengths, self.batch_size, self.seed, self.chunk, self.epoch = list(lengths), batch_size, seed, chunk, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self):
        import numpy as np

        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths))
        span = self.batch_size * self.chunk
        batches = []
        for s in range(0, len(order), span):
            part = order[s:s + span]
            part = part[np.argsort([self.lengths[i] for i in part], kind="stable")]
            batches += [part[b:b + self.batch_size].tolist() for b in range(0, len(part), self.batch_size)]
        for b in rng.permutation(len(batches)):
            yield batches[b]


class PeriodBatches:
    """Batches of ``batch_size`` over ``n`` examples where one "epoch" of the loop is a *period* of ``period``
    batches: each pass over the data is shuffled (deterministic in seed and pass) and cut into periods, so the
    loop validates (and may keep the best weights) every ``period`` batches while one pass sees every example
    once. ``periods`` = periods per pass; epoch e is period ``e % periods`` of pass ``e // periods``."""

    def __init__(self, n: int, batch_size: int, period: int, seed: int = 0, lengths: Sequence[int] | None = None,
                 chunk: int = 64):
        self.n, self.batch_size, self.period, self.seed, self.epoch = n, batch_size, period, seed, 0
        self.periods = max(1, math.ceil(math.ceil(n / batch_size) / period))
        #: with ``lengths`` (one per example): each pass's batches are of similar length (chunks of ``chunk``
        #: batches sorted by length, as :class:`LengthBuckets`), then the pass's batch order is shuffled
        self.lengths, self.chunk = (list(lengths) if lengths is not None else None), chunk
        if self.lengths is not None and len(self.lengths) != n:
            raise ValueError(f"PeriodBatches: {len(self.lengths)} lengths for {n} examples")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _period(self) -> list[list[int]]:
        import numpy as np

        rng = np.random.default_rng([self.seed, self.epoch // self.periods])
        order = rng.permutation(self.n)
        if self.lengths is None:
            order = order.tolist()
            batches = [order[b:b + self.batch_size] for b in range(0, self.n, self.batch_size)]
        else:
            span, batches = self.batch_size * self.chunk, []
            for s in range(0, self.n, span):
                part = order[s:s + span]
                part = part[np.argsort([self.lengths[i] for i in part], kind="stable")]
                batches += [part[b:b + self.batch_size].tolist() for b in range(0, len(part), self.batch_size)]
            batches = [batches[b] for b in rng.permutation(len(batches))]
        p = self.epoch % self.periods
        return batches[p * self.period:(p + 1) * self.period]

    def __len__(self) -> int:
        return len(self._period())

    def __iter__(self):
        yield from self._period()
