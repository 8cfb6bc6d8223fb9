"""`python training/run_curriculum.py ...`: the whole curriculum (data → labels → stage 1 →
stage 2 → evaluation), the same command as the `run_curriculum` console script and
`python -m pgov3d_core.tools.run_curriculum`. The code lives in pgov3d_core/tools/run_curriculum.py;
this file keeps the script path the project has always documented."""

import sys

try:
    from pgov3d_core.tools.run_curriculum import main
except ModuleNotFoundError as exc:  # an interpreter without the project installed
    sys.exit(f"{exc}: run `make setup`, then use .venv/bin/python training/run_curriculum.py")

if __name__ == "__main__":
    sys.exit(main())
