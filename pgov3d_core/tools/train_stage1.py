"""Stage 1 (partial-scene pre-training, paper §3.1): the command line of pgov3d_core.training.stage1.

    python -m pgov3d_core.tools.train_stage1 [--config config/stage1.yaml] [--run-dir DIR] [--resume [PATH]]
        [KEY=VALUE ...]     e.g. train.lr=1e-3 train.steps=200
    torchrun --nproc_per_node=4 -m pgov3d_core.tools.train_stage1 --config config/stage1_gpu.yaml data.root=...
    ros2 run pgov3d_ros train_stage1 ...     (the same, installed as a console script)
"""

import os

# MKL picks kernels by memory alignment, so a resumed process (another heap layout) would drift from
# an uninterrupted run by rounding; strict CNR mode makes CPU resume bit-exact. Set before torch loads.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402

from pgov3d_core.config import load_config  # noqa: E402
from pgov3d_core.training.distributed import shutdown_distributed  # noqa: E402
from pgov3d_core.training.stage1 import run_stage1  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pgov3d_core.tools.train_stage1", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="config/stage1.yaml", help="YAML config (_base_ inheritance)")
    p.add_argument("--run-dir", help="checkpoints/, metrics.jsonl, tb/ (default: the config's run_dir)")
    p.add_argument("--resume", nargs="?", const=True, default=False, help="resume the run's latest checkpoint or PATH")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (dotted keys)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        trainer = run_stage1(load_config(args.config, args.overrides), args.run_dir, args.resume)
    finally:
        shutdown_distributed()
    if trainer.ctx.is_main and trainer.history:
        print(f"stage 1: step {trainer.step}, loss {trainer.history[-1]['loss']:.4f}, run in {trainer.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
