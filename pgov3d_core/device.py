"""The one device resolution of the project: what a config's `device` setting means.

    auto      CUDA when torch sees a GPU, else the CPU
    cpu       the CPU
    cuda      CUDA device `local_rank` (0 in a single process; torchrun's LOCAL_RANK under DDP)
    cuda:N    that device

Used by training (`dist.device`), the text encoder, the labelling models, map_scene and the node.
"""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """The torch.device a `device` setting names (see the module docstring). ValueError for a
    setting torch cannot parse, naming it."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device {device!r} is not auto, cpu, cuda or cuda:N ({exc})") from None
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    return dev
