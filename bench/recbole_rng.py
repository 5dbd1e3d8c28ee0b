"""Every random state a RecBole training epoch draws on, saved in the route's ``last.pth`` and restored after the
rebuild (:mod:`bench.recbole_route`), so a run interrupted after epoch e trains epoch e+1 exactly as an
uninterrupted run does."""
from __future__ import annotations

import numpy as np


def rng_state(train_data) -> dict:
    """Every random state a RecBole training epoch draws on: dropout (torch CPU / CUDA), the train
    dataloader's own generator (the epoch's shuffle), and python / numpy for good measure."""
    import random

    import torch

    gen = getattr(train_data, "generator", None)
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "loader": gen.get_state() if gen is not None else None}


def set_rng_state(state: dict, train_data) -> None:
    import random

    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if state["loader"] is not None:
        train_data.generator.set_state(state["loader"])
