"""The network's per-point input channels, built in one place for every stage and for inference.

A model config's `inputs` lists what the network takes, in order (checkpoints store it, so stage 2,
evaluation and the online node build the same input the model was trained on):

* ``color``  — RGB mapped from [0, 1] to [-1, 1] (3 channels; always first).
* ``normal`` — unit surface normal in the world frame (3; stage 1 only: from the depth image; full
  clouds carry no normals, so inference refuses such a model).
* ``height`` — the point's world z in metres (1). Meaningful only when the world frame is
  gravity-aligned with the floor near z = 0, as in ScanNet's axis-aligned scenes, the synthetic rooms
  and a ground robot's map frame; an option, off by default (the paper feeds colour only).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

INPUT_CHANNELS = {"color": 3, "normal": 3, "height": 1}
DEFAULT_INPUTS = ("color",)


def check_inputs(inputs: Sequence[str] | None) -> tuple[str, ...]:
    """Validated inputs tuple (None → colour only)."""
    out = tuple(DEFAULT_INPUTS if inputs is None else inputs)
    unknown = [k for k in out if k not in INPUT_CHANNELS]
    if unknown or not out or out[0] != "color" or len(set(out)) != len(out):
        raise ValueError(f"model.inputs must start with 'color' and list each of {sorted(INPUT_CHANNELS)} at most "
                         f"once, got {list(out)}")
    return out


def input_channels(inputs: Sequence[str] | None) -> int:
    return sum(INPUT_CHANNELS[k] for k in check_inputs(inputs))


def check_full_cloud_inputs(inputs: Sequence[str] | None) -> tuple[str, ...]:
    """The inputs, if full scene clouds (scene.ply, the node's map) can provide them: they carry
    colour and coordinates but no normals."""
    out = check_inputs(inputs)
    if "normal" in out:
        raise ValueError(f"the model takes {list(out)} as input; full clouds carry no normals")
    return out


def inputs_of_width(width: int) -> tuple[str, ...]:
    """The inputs a bare `in_channels` stands for (3 colour, 4 + height, 6 + normal, 7 both)."""
    for inputs in (("color",), ("color", "height"), ("color", "normal"), ("color", "normal", "height")):
        if input_channels(inputs) == width:
            return inputs
    raise ValueError(f"model.in_channels={width} matches no combination of inputs {sorted(INPUT_CHANNELS)}")


def point_inputs(inputs: Sequence[str] | None, colors01: torch.Tensor, xyz: torch.Tensor | None = None,
                 normals: torch.Tensor | None = None) -> torch.Tensor:
    """(N, C) network input of points with colours (N, 3) in [0, 1], world points (N, 3) and
    optional world normals (N, 3) — all already augmented where training augments them."""
    parts = []
    for key in check_inputs(inputs):
        if key == "color":
            parts.append(colors01.to(torch.float32) * 2.0 - 1.0)
        elif key == "normal":
            if normals is None:
                raise ValueError("the model takes normals as input, but these points have none")
            parts.append(normals.to(torch.float32))
        else:
            if xyz is None:
                raise ValueError("the model takes height as input, but no point coordinates were given")
            parts.append(xyz[:, 2:3].to(torch.float32))
    return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
