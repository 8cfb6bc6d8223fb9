"""Training: the generic Trainer shared by both curriculum stages, stage-specific datasets and
objectives, step-seeded sampling, checkpoints, DDP setup and a quick per-point evaluation.

    from pgov3d_core.config import load_config
    from pgov3d_core.training.stage1 import run_stage1
    run_stage1(load_config("config/stage1.yaml", ["train.steps=200"]), resume=True)
"""
