"""3D backbone: a sparse-conv U-Net (MinkUNet family) mapping voxelised coloured points to
L2-normalised features in the text-embedding space; spconv by default, MinkowskiEngine optional.

    model = build_model({"preset": "minkunet18a", "in_channels": 3, "out_channels": 512})
    feats = model(batch)   # batch: SparseBatch → (N points, 512), unit norm
"""

from __future__ import annotations

import copy

from torch import nn

from pgov3d_core.models.backends import BACKENDS, BackendUnavailableError, make_backend
from pgov3d_core.models.batch import SparseBatch, VoxelCloud, collate_clouds, voxelize_cloud
from pgov3d_core.models.inputs import check_inputs, input_channels, inputs_of_width
from pgov3d_core.models.unet import SparseUNet

# Architecture presets (U-Net fields only; in/out channels come from data and text encoder).
PRESETS: dict[str, dict] = {
    # CPU tests and the CPU demo: 3 levels, one block per stage (~0.2 M parameters).
    "tiny": dict(stem_channels=16, stem_kernel=3, stem_depth=0, enc_channels=[16, 32, 48], enc_depths=[1, 1, 1],
                 dec_channels=[32, 24, 16], dec_depths=[1, 1, 1]),
    # OpenScene's 3D network (MinkowskiEngine MinkUNet18A): ~22 M parameters.
    "minkunet18a": dict(stem_channels=32, stem_kernel=5, stem_depth=0, enc_channels=[32, 64, 128, 256],
                        enc_depths=[2, 2, 2, 2], dec_channels=[256, 128, 96, 96], dec_depths=[2, 2, 2, 2]),
    # Pointcept SpUNet-v1m1 / MinkUNet34C: deeper encoder.
    "minkunet34c": dict(stem_channels=32, stem_kernel=5, stem_depth=0, enc_channels=[32, 64, 128, 256],
                        enc_depths=[2, 3, 4, 6], dec_channels=[256, 128, 96, 96], dec_depths=[2, 2, 2, 2]),
    # RegionPLC/PLA SparseUNet16 and 32 (PointGroup UBlock: widths m·(1..7), 2 blocks per level).
    "sparseunet16": dict(stem_channels=16, stem_kernel=3, stem_depth=2, enc_channels=[32, 48, 64, 80, 96, 112],
                         enc_depths=[2] * 6, dec_channels=[96, 80, 64, 48, 32, 16], dec_depths=[2] * 6),
    "sparseunet32": dict(stem_channels=32, stem_kernel=3, stem_depth=2, enc_channels=[64, 96, 128, 160, 192, 224],
                         enc_depths=[2] * 6, dec_channels=[192, 160, 128, 96, 64, 32], dec_depths=[2] * 6),
}
DEFAULT_PRESET = "minkunet18a"
_ARCH_KEYS = ("stem_channels", "stem_kernel", "stem_depth", "enc_channels", "enc_depths", "dec_channels",
              "dec_depths", "bn_momentum", "head_channels")
_OTHER_KEYS = ("preset", "backend", "algo", "inputs", "in_channels", "out_channels")


def resolve_model_config(cfg: dict | None) -> dict:
    """The full architecture a model config describes: preset fields overridden by explicit keys.
    This is what checkpoints store, so a checkpoint rebuilds its network even if presets change."""
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(_ARCH_KEYS) - set(_OTHER_KEYS))
    if unknown:
        raise ValueError(f"unknown model config key(s) {unknown}; known: {sorted(_ARCH_KEYS + _OTHER_KEYS)}")
    preset = cfg.get("preset", DEFAULT_PRESET)
    if preset not in PRESETS:
        raise ValueError(f"model.preset must be one of {sorted(PRESETS)}, got {preset!r}")
    out = copy.deepcopy(PRESETS[preset])
    out.update({k: cfg[k] for k in _ARCH_KEYS if k in cfg})
    out.setdefault("bn_momentum", 0.1)
    out.setdefault("head_channels", 0)  # checkpoints from before the option have a linear head
    out["preset"] = preset
    out["backend"] = cfg.get("backend", "spconv")
    out["algo"] = cfg.get("algo", "auto")
    # What the network takes per point (models/inputs.py); in_channels follows from it. A config
    # (or an older checkpoint) that gives only in_channels names the inputs with that width.
    inputs = cfg.get("inputs")
    if inputs is None and "in_channels" in cfg:
        inputs = inputs_of_width(int(cfg["in_channels"]))
    out["inputs"] = list(check_inputs(inputs))
    out["in_channels"] = input_channels(out["inputs"])
    if "in_channels" in cfg and int(cfg["in_channels"]) != out["in_channels"]:
        raise ValueError(f"model.in_channels={cfg['in_channels']} but model.inputs {out['inputs']} give "
                         f"{out['in_channels']}")
    if "out_channels" not in cfg or not isinstance(cfg["out_channels"], int):
        raise ValueError(
            "model.out_channels must be the text-embedding dimension (512 for ViT-B/32, 768 for ViT-L/14), "
            f"got {cfg.get('out_channels')!r}"
        )
    out["out_channels"] = int(cfg["out_channels"])
    return out


def build_model(cfg: dict) -> SparseUNet:
    """The U-Net a model config describes (see `resolve_model_config` and PRESETS)."""
    full = resolve_model_config(cfg)
    backend = make_backend(full["backend"], full["algo"])
    return SparseUNet(
        backend,
        in_channels=full["in_channels"],
        out_channels=full["out_channels"],
        **{k: full[k] for k in _ARCH_KEYS},
    )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "BACKENDS", "DEFAULT_PRESET", "PRESETS", "BackendUnavailableError", "SparseBatch", "SparseUNet", "VoxelCloud",
    "build_model", "collate_clouds", "count_parameters", "resolve_model_config", "voxelize_cloud",
]
