import importlib.util
import os
import random
from pathlib import Path

import pytest

# Every test session talks DDS on its own domain, limited to this host, so parallel CI runs
# (or a developer's running robot) never see the test nodes. Set before rclpy is imported.
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 100)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
# The package's DDS transport (large shared-memory segment), as users get it from the node,
# the replay tool and the launch file: test publishers send 640x480 images too.
from pgov3d_ros.transport import use_package_transport  # noqa: E402

use_package_transport()


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(1234)


@pytest.fixture
def load_script():
    """Import one of the repository's scripts (bench/, tools/: not packages) by its path without
    ".py": load_script("bench/bench_curriculum")."""

    def load(relpath: str):
        path = Path(__file__).resolve().parents[1] / f"{relpath}.py"
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
