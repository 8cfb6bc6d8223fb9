"""The package's DDS transport settings, applied the same way for the node, the replay tool,
the tests, the demo and the benchmarks (and by the launch file for everything it starts).

config/fastdds.xml raises Fast DDS's shared-memory segment from 512 KB to 16 MB, so 640x480
images travel through shared memory instead of being fragmented over UDP (see that file for the
measurements). A user's own profile (FASTDDS_DEFAULT_PROFILES_FILE, or the older
FASTRTPS_DEFAULT_PROFILES_FILE) is never overridden, and other RMW implementations are left alone.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"
LEGACY_PROFILE_ENV = "FASTRTPS_DEFAULT_PROFILES_FILE"
PROFILE_NAME = "fastdds.xml"


def transport_profile() -> Path | None:
    """config/fastdds.xml of the installed package (ament index, then the venv prefix), else of
    this source checkout."""
    candidates = []
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            candidates.append(Path(get_package_share_directory("pgov3d_ros")) / "config" / PROFILE_NAME)
        except (PackageNotFoundError, OSError):  # OSError: no AMENT_PREFIX_PATH (a venv, not a workspace)
            pass
    except ImportError:
        pass
    candidates += [Path(sys.prefix) / "share" / "pgov3d_ros" / "config" / PROFILE_NAME,
                   Path(__file__).resolve().parents[1] / "config" / PROFILE_NAME]
    return next((c for c in candidates if c.is_file()), None)


def transport_environment(env: dict | None = None) -> dict[str, str]:
    """The variables to add to `env` (default os.environ) for the package's transport: empty
    when the user set a profile, uses another RMW, or the profile is not found."""
    env = os.environ if env is None else env
    if env.get(PROFILE_ENV) or env.get(LEGACY_PROFILE_ENV):
        return {}
    if env.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") != "rmw_fastrtps_cpp":
        return {}
    profile = transport_profile()
    return {PROFILE_ENV: str(profile)} if profile else {}


def use_package_transport() -> dict[str, str]:
    """Apply transport_environment() to this process; call before rclpy.init()."""
    extra = transport_environment()
    os.environ.update(extra)
    return extra
