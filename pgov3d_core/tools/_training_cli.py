"""What the two training command lines (`train_stage1`, `train_stage2`) share: their flags, running
the stage's Trainer with the distributed process group shut down afterwards, and the summary line.

Not a command itself; the tools set ``MKL_CBWR`` before importing it (it loads torch)."""

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from pgov3d_core.config import load_config
from pgov3d_core.training.distributed import WorkerError, shutdown_distributed
from pgov3d_core.training.trainer import Trainer, read_metrics


def training_main(
    argv: list[str] | None,
    stage: int,
    doc: str,
    train: Callable[[dict, argparse.Namespace], Trainer | None],
    quiet_flag: bool = False,
    errors: tuple[type[Exception], ...] = (),
) -> int:
    """The command line ``python -m pgov3d_core.tools.train_stage<stage>``: ``--config`` (default
    ``config/stage<stage>.yaml``), ``--run-dir``, ``--resume [PATH]``, ``--quiet`` where
    `quiet_flag`, and ``KEY=VALUE`` config overrides; `train(cfg, args)` runs the stage and returns
    its Trainer. An exception of `errors` is one ``error:`` line on stderr and exit status 2; others
    propagate. The main process prints ``stage N: step S, loss L, run in DIR``."""
    p = argparse.ArgumentParser(prog=f"python -m pgov3d_core.tools.train_stage{stage}", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=f"config/stage{stage}.yaml", help="YAML config (_base_ inheritance)")
    p.add_argument("--run-dir", help="checkpoints/, metrics.jsonl, tb/ (default: the config's run_dir)")
    p.add_argument("--resume", nargs="?", const=True, default=False, help="resume the run's latest checkpoint or PATH")
    if quiet_flag:
        p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (dotted keys)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        trainer = train(load_config(args.config, args.overrides), args)
    except (*errors, WorkerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        shutdown_distributed()
    if trainer is None:  # dist.processes > 1: the spawned processes trained; their metrics are on disk
        run_dir = Path(args.run_dir or load_config(args.config, args.overrides).get("run_dir") or ".")
        history = read_metrics(run_dir)
        if history:
            print(f"stage {stage}: step {history[-1]['step']}, loss {history[-1]['loss']:.4f}, run in {run_dir}")
    elif trainer.ctx.is_main and trainer.history:
        print(f"stage {stage}: step {trainer.step}, loss {trainer.history[-1]['loss']:.4f}, run in {trainer.run_dir}")
    return 0
