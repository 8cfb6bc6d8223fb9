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

import sys  # noqa: E402

from pgov3d_core.config import ConfigError  # noqa: E402
from pgov3d_core.data.scene import SceneError  # noqa: E402
from pgov3d_core.tools._training_cli import training_main  # noqa: E402
from pgov3d_core.training.checkpoint import CheckpointError  # noqa: E402
from pgov3d_core.training.stage1 import run_stage1  # noqa: E402
from pgov3d_core.weights import WeightsError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    # A bad setting or scene is one "error:" line and exit status 2, as train_stage2 does.
    return training_main(argv, 1, __doc__, lambda cfg, args: run_stage1(cfg, args.run_dir, args.resume),
                         errors=(ConfigError, CheckpointError, SceneError, WeightsError, FileNotFoundError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
