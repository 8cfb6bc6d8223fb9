"""Local model weights: every foundation model loads from a path given in config, never a hub."""

from __future__ import annotations

import os
from pathlib import Path


class WeightsError(RuntimeError):
    """Weights missing or unusable; the message names the config key and the path."""


def require_weights(path: str | os.PathLike | None, key: str) -> Path:
    """The existing local path for config key `key` (e.g. 'weights.sam'), else WeightsError."""
    if path in (None, ""):
        raise WeightsError(f"{key} is not set: put the local path of the weights in your config under {key}")
    p = Path(path).expanduser()
    if not p.exists():
        raise WeightsError(f"{key}: {p} does not exist (weights are never downloaded; copy them there or fix {key})")
    return p


def offline_environment() -> None:
    """Make sure libraries that could reach a model hub stay offline (transformers, huggingface_hub)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
