"""The torch device of the generative route, picked in one place: ``REASONREC_DEVICE`` (``cpu``, ``cuda``,
``cuda:1``), else the GPU when there is one. The method's model (``GenerativeMethod._adopt``) and the training
loop's accelerator (``train``) both ask here, so they never disagree (a GPU machine can be told to stay on the CPU)."""
from __future__ import annotations

import os

ENV = "REASONREC_DEVICE"


def torch_device():
    """The device to build and train on. ``cuda:N`` also becomes the current CUDA device: accelerate (one
    process) places the model and batches on a bare ``cuda``, which then means that GPU too."""
    import torch

    value = os.environ.get(ENV, "").strip()
    if not value:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(value)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"{ENV}={value!r} is not a device this bench runs on: use cpu, cuda or cuda:N "
                         "(unset: cuda when available, else cpu)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{ENV}={value!r}, but torch sees no CUDA GPU")
        if device.index is not None:
            if device.index >= torch.cuda.device_count():
                raise ValueError(f"{ENV}={value!r}, but torch sees {torch.cuda.device_count()} CUDA GPU(s)")
            torch.cuda.set_device(device)
    return device
