"""retain_freed_memory: freed blocks stay in the process (no page faults on the next step)."""

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")

# A 64 MB tensor freed: glibc's default serves it with mmap and unmaps it on free (the resident size
# drops back); with the setting it comes from the heap and stays resident for the next allocation.
_CHILD = textwrap.dedent("""
    import sys
    import torch
    from pgov3d_core.allocator import retain_freed_memory

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    if sys.argv[1] == "retain":
        assert retain_freed_memory() is True
        assert retain_freed_memory() is True  # idempotent
    before = rss_mb()
    x = torch.ones(16 * 2**20, dtype=torch.float32)  # 64 MB, touched
    del x
    print(rss_mb() - before)
""")


def _rss_growth(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return float(out.stdout.strip().splitlines()[-1])


def test_freed_memory_stays_resident_only_with_the_setting():
    assert _rss_growth("default") < 16  # unmapped on free
    assert _rss_growth("retain") > 48  # kept for the next step
