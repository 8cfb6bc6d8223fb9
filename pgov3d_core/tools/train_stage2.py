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

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402

from pgov3d_core.config import ConfigError, load_config  # noqa: E402
from pgov3d_core.data.scene import SceneError  # noqa: E402
from pgov3d_core.training.checkpoint import CheckpointError  # noqa: E402
from pgov3d_core.training.distributed import shutdown_distributed  # noqa: E402
from pgov3d_core.training.stage2 import run_stage2  # noqa: E402
from pgov3d_core.weights import WeightsError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pgov3d_core.tools.train_stage2", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="config/stage2.yaml", help="YAML config (_base_ inheritance)")
    p.add_argument("--run-dir", help="checkpoints/, metrics.jsonl, tb/ (default: the config's run_dir)")
    p.add_argument("--resume", nargs="?", const=True, default=False, help="resume the run's latest checkpoint or PATH")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (dotted keys)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config, args.overrides)
        trainer = run_stage2(cfg, args.run_dir, args.resume, progress=not args.quiet)
    except (ConfigError, CheckpointError, SceneError, WeightsError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        shutdown_distributed()
    if trainer.ctx.is_main and trainer.history:
        print(f"stage 2: step {trainer.step}, loss {trainer.history[-1]['loss']:.4f}, run in {trainer.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
