#!/usr/bin/env python3
"""Stage 1 (partial-scene pre-training, paper §3.1): thin CLI around pgov3d_core.training.stage1.

    python training/train_stage1.py --config config/stage1.yaml [--run-dir DIR] [--resume [PATH]]
        [KEY=VALUE ...]     e.g. train.lr=1e-3 train.steps=200
    torchrun --nproc_per_node=4 training/train_stage1.py --config config/stage1_gpu.yaml data.root=...
"""

import argparse
import logging
import os
import sys
from pathlib import Path

# MKL picks kernels by memory alignment, so a resumed process (another heap layout) would drift from
# an uninterrupted run by rounding; strict CNR mode makes CPU resume bit-exact. Set before torch loads.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from pgov3d_core.config import load_config  # noqa: E402
from pgov3d_core.training.distributed import shutdown_distributed  # noqa: E402
from pgov3d_core.training.stage1 import run_stage1  # noqa: E402

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="config/stage1.yaml", help="YAML config (_base_ inheritance)")
    p.add_argument("--run-dir", help="checkpoints/, metrics.jsonl, tb/ (default: the config's run_dir)")
    p.add_argument("--resume", nargs="?", const=True, default=False, help="resume the run's latest checkpoint or PATH")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (dotted keys)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        trainer = run_stage1(load_config(args.config, args.overrides), args.run_dir, args.resume)
    finally:
        shutdown_distributed()
    if trainer.ctx.is_main and trainer.history:
        print(f"stage 1: step {trainer.step}, loss {trainer.history[-1]['loss']:.4f}, run in {trainer.run_dir}")
