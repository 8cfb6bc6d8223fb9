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
        if subprocess.run([sys.executable, str(script), *sys.argv[1:]], cwd=here.parent).returncode != 0:
            failed.append(script.name)
    if failed:
        sys.exit(f"benchmarks failed: {', '.join(failed)}")
