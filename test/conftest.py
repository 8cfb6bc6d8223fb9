import os
import random

import pytest

# Every test session talks DDS on its own domain, limited to this host, so parallel CI runs
# (or a developer's running robot) never see the test nodes. Set before rclpy is imported.
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 100)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(1234)
