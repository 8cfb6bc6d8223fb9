"""Stage 2 (full-scene fine-tuning on pseudo-labels, paper §3.2) on its own: the command line of
pgov3d_core.training.stage2 (the curriculum runs the same step after stage 1).

    python -m pgov3d_core.tools.train_stage2 [--config config/stage2.yaml] [--run-dir DIR] [--resume [PATH]]
        pseudo.checkpoint=STAGE1.pt train.init_from=STAGE1.pt data.root=SCENES [KEY=VALUE ...]
    ros2 run pgov3d_ros train_stage2 ...     (the same, installed as a console script)

`pseudo.checkpoint` (required) is the stage-1 model that pseudo-labels the scenes' clouds;
`train.init_from` the weights fine-tuning starts from (the paper: the same stage-1 checkpoint;
null: from scratch with the stage-1 architecture, Table 6). The text encoder is the stage-1 run's
unless `text_encoder` is set. The scenes need scene.ply and their frame entities (`data.labels`).
"""

import os

os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")  # bit-exact CPU resume (see train_stage1.py); before torch loads

import sys  # noqa: E402

from pgov3d_core.config import ConfigError  # noqa: E402
from pgov3d_core.data.scene import SceneError  # noqa: E402
from pgov3d_core.tools._training_cli import training_main  # noqa: E402
from pgov3d_core.training.checkpoint import CheckpointError  # noqa: E402
from pgov3d_core.training.stage2 import run_stage2  # noqa: E402
from pgov3d_core.weights import WeightsError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return training_main(
        argv, 2, __doc__, lambda cfg, args: run_stage2(cfg, args.run_dir, args.resume, progress=not args.quiet),
        quiet_flag=True, errors=(ConfigError, CheckpointError, SceneError, WeightsError, FileNotFoundError, ValueError),
    )


if __name__ == "__main__":
    sys.exit(main())
