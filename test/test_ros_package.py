"""The installed ROS 2 package: interfaces, node, launch file, parameters, a real DDS round trip."""

import ast
import subprocess
import sys

import pytest
import yaml

from pgov3d_ros.processes import LIB, SHARE, call_service, node_command, running_node

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_interfaces_import_without_environment_variables():
    # A clean environment, as a user's fresh shell: nothing sourced, no LD_LIBRARY_PATH.
    code = (
        "from pgov3d_interfaces.srv import Query; r = Query.Response(); "
        "print(sorted(Query.Request.get_fields_and_field_types().items())); "
        "print(sorted(r.get_fields_and_field_types().items()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, check=True
    ).stdout
    assert "('min_score', 'float')" in out and "('queries', 'sequence<string>')" in out
    for field in ("('cloud', 'sensor_msgs/PointCloud2')", "('labels', 'sequence<string>')",
                  "('scores', 'sequence<float>')", "('success', 'boolean')", "('message', 'string')"):
        assert field in out


def test_package_installed_where_ros2_tools_look():
    assert (LIB / "mapping_node").is_file()
    for rel in ("package.xml", "launch/mapping.launch.py", "config/mapping.yaml", "rviz/pgov3d.rviz"):
        assert (SHARE / rel).is_file(), rel
    assert (SHARE.parent / "ament_index/resource_index/packages/pgov3d_ros").exists()


def test_launch_file_names_an_installed_node():
    source = (ROOT / "launch" / "mapping.launch.py").read_text()
    tree = ast.parse(source)  # compiles
    nodes = [
        {kw.arg: kw.value.value for kw in call.keywords if isinstance(kw.value, ast.Constant)}
        for call in ast.walk(tree)
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "Node"
    ]
    ours = [n for n in nodes if n.get("package") == "pgov3d_ros"]
    assert ours and all((LIB / n["executable"]).is_file() for n in ours)
    # The arguments are declared from pgov3d_ros.launch_args.LAUNCH_ARGUMENTS (one
    # DeclareLaunchArgument per entry; test_camera_launch checks the loop) or by literal name.
    from pgov3d_ros.launch_args import LAUNCH_ARGUMENTS

    declared = set()
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "DeclareLaunchArgument":
            first = call.args[0]
            declared |= {first.value} if isinstance(first, ast.Constant) else set(LAUNCH_ARGUMENTS)
    assert {"config", "rviz", "use_sim_time"} <= declared


def test_core_never_imports_rclpy():
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "pgov3d_core").rglob("*.py")
        if any(
            isinstance(n, (ast.Import, ast.ImportFrom))
            and any(a.name.split(".")[0] == "rclpy" for a in n.names)
            or isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "rclpy"
            for n in ast.walk(ast.parse(p.read_text()))
        )
    ]
    assert offenders == []


def test_config_declares_every_node_parameter():
    from pgov3d_ros.mapping_node import PARAMETERS

    params = yaml.safe_load((ROOT / "config" / "mapping.yaml").read_text())["/**"]["ros__parameters"]
    assert set(params) == set(PARAMETERS)
    for name, (default, _) in PARAMETERS.items():
        assert params[name] == default, name


@pytest.mark.ros
def test_query_service_round_trip_on_empty_map(tmp_path):
    import rclpy

    from pgov3d_interfaces.srv import Query

    cmd = node_command("mapping_node", "pgov3d", SHARE / "config" / "mapping.yaml",
                       "-p", "text_encoder_random_init:=true", "-p", "text_encoder_random_dim:=32")
    with running_node(cmd, tmp_path / "node.log") as proc:
        rclpy.init()
        try:
            node = rclpy.create_node("pgov3d_test_client")
            client = node.create_client(Query, "/pgov3d/query")
            empty_map = call_service(node, client, Query.Request(queries=["chair"], min_score=0.2))
            no_query = call_service(node, client, Query.Request(queries=[], min_score=0.0))
            blank = call_service(node, client, Query.Request(queries=["chair", "  "], min_score=0.0))
            huge = call_service(node, client, Query.Request(queries=["x" * 10_000_000], min_score=0.0))
            node.destroy_node()
        finally:
            rclpy.shutdown()
        assert proc.poll() is None, (tmp_path / "node.log").read_text()
    log = (tmp_path / "node.log").read_text()
    # SIGINT to the process group (launch's shutdown) ends the node cleanly.
    assert proc.returncode == 0 and "Traceback" not in log, log
    assert empty_map.success is False and "map is empty" in empty_map.message
    assert no_query.success is False and "no queries" in no_query.message
    assert blank.success is False and "query 1 is empty" in blank.message
    assert huge.success is False and "10000000 characters" in huge.message
    assert len(empty_map.cloud.data) == 0
