"""Run every benchmark in bench/ (each prints its own table). `make bench` calls this.

    python bench/run_all.py [--quick]
"""

import subprocess
import sys
from pathlib import Path

if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    failed = []
    for script in sorted(here.glob("bench_*.py")):
        print(f"\n## {script.name}\n", flush=True)
        args = sys.argv[1:]
        if script.name == "bench_curriculum.py" and "--quick" in args:
            # Its short preset is --budget (about 6 minutes on 2 cores); the full run takes ~27.
            args = ["--budget" if a == "--quick" else a for a in args]
        if subprocess.run([sys.executable, str(script), *args], cwd=here.parent).returncode != 0:
            failed.append(script.name)
    if failed:
        sys.exit(f"benchmarks failed: {', '.join(failed)}")
