"""Start pgov3d nodes the way launch_ros does and call their services from rclpy: used by the
demo, the benchmarks and the tests (launch_ros itself is not installable from PyPI)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

PREFIX = Path(sys.prefix)  # `make setup` installs pgov3d_ros into the venv prefix
SHARE = PREFIX / "share" / "pgov3d_ros"
LIB = PREFIX / "lib" / "pgov3d_ros"


def node_command(executable: str, node_name: str, params_file: Path | None = None, *ros_args: str) -> list[str]:
    """The command line launch_ros' Node action builds."""
    cmd = [str(LIB / executable), "--ros-args", "-r", f"__node:={node_name}"]
    if params_file is not None:
        cmd += ["--params-file", str(params_file)]
    cmd += list(ros_args)
    return cmd


def replay_command(source: str | os.PathLike, *args: str, ros_args: tuple[str, ...] = ()) -> list[str]:
    """The replay executable on `source` (a scene folder or a bag) with its own `args` (``--fps``,
    ``--rate``, ``--labels``…) before the ROS arguments: node name pgov3d_replay, then `ros_args`."""
    cmd = node_command("replay", "pgov3d_replay", None, *ros_args)
    cmd[1:1] = [str(source), *args]
    return cmd


@contextmanager
def running_node(cmd: list[str], log_path: Path):
    """Run a node in its own process group; on exit, SIGINT the group (as launch does on
    shutdown), then SIGKILL whatever is left."""
    with open(log_path, "wb") as log:
        from pgov3d_ros.transport import transport_environment

        env = {**os.environ, **transport_environment()}
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        try:
            yield proc
        finally:
            stop_group(proc)


def stop_group(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    try:
        os.killpg(proc.pid, signal.SIGINT)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def call_service(node, client, request, timeout: float = 30.0):
    """Wait for the service, call it, spin until the answer arrives; raise on timeout."""
    import rclpy

    deadline = time.monotonic() + timeout
    while not client.wait_for_service(timeout_sec=0.5):
        if time.monotonic() > deadline:
            raise TimeoutError(f"service {client.srv_name} did not appear within {timeout} s")
    future = client.call_async(request)
    rclpy.spin_until_future_complete(node, future, timeout_sec=max(0.1, deadline - time.monotonic()))
    if not future.done():
        raise TimeoutError(f"service {client.srv_name} did not answer within {timeout} s")
    return future.result()
