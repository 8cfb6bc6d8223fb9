"""The one checkpoint format of the project (both stages), safe to load with weights_only=True.

A checkpoint is a dict of tensors and primitive containers only — no pickled objects — so
`torch.load(path, weights_only=True)` reads it without executing code:

    format: "pgov3d.checkpoint", version: 1
    step: int                      optimiser steps completed
    model: state_dict              (DDP's `module.` prefix removed)
    model_config: dict             the resolved architecture (`models.resolve_model_config`)
    optimizer, scheduler, scaler: state_dicts (scaler may be None)
    rng: {torch, cuda: [..], numpy: {...}, python: [...]}
    config: dict                   the full run config
    text_encoder: {identity: str, dim: int}   the embedding space the head was trained into
    vocabulary: list[str]          entity names seen in training
    stage: str, world_size: int

Writes go to a temporary file in the same folder and are renamed into place (os.replace), so a
crash (even SIGKILL) never leaves a truncated checkpoint behind.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import numpy as np
import torch

from pgov3d_core.fileio import atomic_write

FORMAT = "pgov3d.checkpoint"
VERSION = 1
LAST = "last.pt"
_STEP_RE = re.compile(r"^step_(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """Unreadable or foreign checkpoint (the message names the file)."""


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda f: torch.save(obj, f), durable=True)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path}: not a pgov3d checkpoint (format {found!r})")
    if int(ckpt.get("version", -1)) > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {ckpt['version']} is newer than this code ({VERSION})")
    return ckpt


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoints"


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest step_<N>.pt (a kill between writing it and refreshing last.pt leaves last.pt one
    checkpoint behind), else last.pt, else None."""
    d = checkpoint_dir(run_dir)
    steps = sorted((int(m.group(1)), p) for p in d.glob("step_*.pt") if (m := _STEP_RE.match(p.name)))
    if steps:
        return steps[-1][1]
    return d / LAST if (d / LAST).exists() else None


def save_step_checkpoint(run_dir: str | os.PathLike, payload: dict, keep: int) -> Path:
    """Write step_<N>.pt and last.pt (both atomic), then drop all but the newest `keep` step files."""
    d = checkpoint_dir(run_dir)
    payload = {"format": FORMAT, "version": VERSION, **payload}
    path = atomic_torch_save(payload, d / f"step_{int(payload['step']):08d}.pt")
    atomic_torch_save(payload, d / LAST)
    if keep > 0:
        steps = sorted((int(m.group(1)), p) for p in d.glob("step_*.pt") if (m := _STEP_RE.match(p.name)))
        for _, old in steps[:-keep]:
            old.unlink(missing_ok=True)
    return path


def unwrap_state_dict(model: torch.nn.Module) -> dict:
    return (model.module if hasattr(model, "module") else model).state_dict()


# ------------------------------------------------------------------------------ RNG states


def capture_rng_state() -> dict:
    """Global RNG states as tensors/primitives (weights_only-safe)."""
    np_state = np.random.get_state()  # noqa: NPY002  (the legacy global RNG is what other code may use)
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": str(np_state[0]), "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": [int(py_state[0]), [int(v) for v in py_state[1]], py_state[2]],
    }


def restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    n = state["numpy"]
    np_state = (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    np.random.set_state(np_state)  # noqa: NPY002
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def load_model_from_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """(model in eval mode on `device`, checkpoint dict): how stage 2, evaluation and the mapping
    node get a trained network."""
    from pgov3d_core.models import build_model

    ckpt = load_checkpoint(path)
    model = build_model(ckpt["model_config"])
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt
