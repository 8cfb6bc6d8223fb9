"""The PGOV3D curriculum end to end: data → labels → stage 1 → stage 2 → evaluation.

    python -m pgov3d_core.tools.run_curriculum [--config config/curriculum.yaml] [--from-stage STAGE]
        [--resume] [--no-consistency] [--no-stage2] [--stage2-from-scratch] [KEY=VALUE ...]
    ros2 run pgov3d_ros run_curriculum ...   (the same, installed as a console script)

Each step is skipped when its outputs exist and are valid, so re-running continues where the last
run stopped. Results: <run_dir>/report/ (report.md, report.json, per-class IoU and top-down PNGs),
TensorBoard logs in <run_dir>/stage*/tb.
"""

import os

os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")  # bit-exact CPU resume (see train_stage1.py); before torch loads

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402

from pgov3d_core.config import load_config  # noqa: E402
from pgov3d_core.training.curriculum import (  # noqa: E402
    RUN_ERRORS,
    STAGES,
    CurriculumOptions,
    run_curriculum,
    summary_table,
)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m pgov3d_core.tools.run_curriculum", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="config/curriculum.yaml", help="curriculum config (YAML)")
    p.add_argument("--from-stage", choices=STAGES, help="redo this stage and every later one (old runs moved aside)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted training stage from its checkpoint")
    p.add_argument("--no-consistency", action="store_true", help="ablation: stage 1 without the consistency loss")
    p.add_argument("--no-stage2", action="store_true", help="ablation: stop after stage 1 (evaluate it alone)")
    p.add_argument("--stage2-from-scratch", action="store_true",
                   help="ablation (paper Table 6): stage 2 from random weights instead of stage 1's")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="curriculum config overrides")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config, args.overrides)
        result = run_curriculum(cfg, CurriculumOptions(args.from_stage, args.resume, args.no_consistency,
                                                       args.no_stage2, args.stage2_from_scratch, not args.quiet))
    except RUN_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print()
    print(summary_table(result))
    print(f"\nreport: {result.report.get('markdown')}  (PNGs beside it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
