"""The node over real DDS in the field's failure modes: a frame stamped years ahead, a clock
that jumps back (a looping bag), /clear as a fresh start, a replay at full speed that must lose
nothing and account for everything, and two robots side by side in their own namespaces."""

import time

import numpy as np
import pytest
from node_client import Client

from pgov3d_core.data.frame import Frame
from pgov3d_core.data.scene import Scene, write_scene
from pgov3d_core.map import VoxelMap
from pgov3d_ros.processes import SHARE, node_command, replay_command, running_node

pytestmark = pytest.mark.ros

K = np.array([[40.0, 0.0, 23.5], [0.0, 40.0, 17.5], [0.0, 0.0, 1.0]])


def wall_scene(root, n=5, x0=0.0, colour=120):
    frames = []
    u = np.arange(48)[None, :].repeat(36, 0)
    for i in range(n):
        pose = np.eye(4)
        pose[0, 3] = x0 + 0.3 * i
        rgb = np.zeros((36, 48, 3), np.uint8)
        rgb[..., 0] = (u * 5 + 40 * i) % 256
        rgb[..., 1] = colour
        frames.append(Frame(rgb, (2.0 + 0.01 * u).astype(np.float32), K, pose, frame_id=str(i)))
    return write_scene(root, frames, class_names=[], depth_scale=1000.0)


def core_map(scene_dir, voxel=0.05):
    m = VoxelMap(voxel_size=voxel, max_depth=5.0)
    for frame in Scene(scene_dir):
        m.integrate(frame)
    return m


@pytest.fixture
def ros():
    import rclpy

    rclpy.init()
    yield rclpy
    rclpy.shutdown()


def test_future_stamp_and_time_jumps_never_blind_the_node(tmp_path, ros):
    scene_dir = wall_scene(tmp_path / "scene", n=3)
    frames = list(Scene(scene_dir))
    cmd = node_command("mapping_node", "pgov3d", SHARE / "config" / "mapping.yaml", "-p", "voxel_size:=0.05",
                       "-p", "map_publish_period:=0.0")
    with running_node(cmd, tmp_path / "node.log") as proc:
        c = Client("pgov3d_test_time")
        c.status()
        c.wait_matched()
        now = time.time()
        # One frame stamped ten years ahead, with a pose 0.7 m off: rejected, not integrated.
        c.send(frames[0], now + 10 * 365 * 86400.0, x=0.7)
        s = c.wait_for(lambda s: s["dropped"].get("depth stamp in the future", 0) == 1)
        assert s["frames_integrated"] == 0 and s["voxels"] == 0
        # Real-time frames after it integrate.
        for k, f in enumerate(frames):
            c.send(f, now + 0.1 * k)
            time.sleep(0.1)
        s = c.wait_for(lambda s: s["frames_integrated"] == 3)
        # A looping bag: stamps jump 100 s back, mapping carries on (the same frames again).
        for k, f in enumerate(frames):
            c.send(f, now - 100.0 + 0.1 * k)
            time.sleep(0.1)
        s = c.wait_for(lambda s: s["frames_integrated"] == 6)
        assert s["time_jumps"] == 1 and s["voxels"] == len(core_map(scene_dir))
        # /clear is a fresh start: the map empties and earlier stamps are accepted again.
        assert c.clear().message == f"cleared {len(core_map(scene_dir))} voxels"
        for k, f in enumerate(frames):
            c.send(f, now - 200.0 + 0.1 * k)
            time.sleep(0.1)
        s = c.wait_for(lambda s: s["frames_integrated"] == 9)
        assert s["time_jumps"] == 1 and s["voxels"] == len(core_map(scene_dir))
        assert proc.poll() is None
    log = (tmp_path / "node.log").read_text()
    assert "stamped" in log and "after the node's clock" in log and "time jumped back" in log


def test_full_speed_replay_loses_nothing_and_status_accounts_for_every_message(tmp_path, ros):
    scene_dir = wall_scene(tmp_path / "scene", n=8)
    cmd = node_command("mapping_node", "pgov3d", SHARE / "config" / "mapping.yaml", "-p", "voxel_size:=0.05",
                       "-p", "map_publish_period:=0.0", "-p", "input_reliability:=reliable",
                       "-p", "integration_queue_size:=16")
    replay = replay_command(scene_dir, "--fps", "30", "--rate", "1000")  # as fast as it can publish
    with running_node(cmd, tmp_path / "node.log"):
        c = Client("pgov3d_test_replay")
        c.status()
        with running_node(replay, tmp_path / "replay.log") as rp:
            assert rp.wait(60) == 0, (tmp_path / "replay.log").read_text()
        s = c.wait_for(lambda s: s["frames_integrated"] + sum(s["dropped"].values()) >= 8 and s["queued"] == 0)
    assert s["frames_integrated"] == 8, s
    assert s["dropped"] == {} and s["pending"] == {"depth": 0, "color": 0, "pose": 0}
    assert s["received"] == {"info": 8, "color": 8, "pose": 8, "depth": 8}
    assert s["voxels"] == len(core_map(scene_dir))


def test_two_robots_in_their_own_namespaces_keep_their_maps_apart(tmp_path, ros):
    scenes = {"robot1": wall_scene(tmp_path / "a", n=4, x0=0.0, colour=30),
              "robot2": wall_scene(tmp_path / "b", n=2, x0=10.0, colour=220)}
    nodes, replays = [], []
    try:
        for ns in scenes:
            cmd = node_command("mapping_node", "pgov3d", SHARE / "config" / "mapping.yaml", "-r", f"__ns:=/{ns}",
                               "-p", "voxel_size:=0.05", "-p", "input_reliability:=reliable",
                               "-p", "map_publish_period:=0.0")
            nodes.append(running_node(cmd, tmp_path / f"{ns}_node.log"))
            nodes[-1].__enter__()
        clients = {ns: Client(f"pgov3d_test_{ns}", ns=f"/{ns}/pgov3d") for ns in scenes}
        for c in clients.values():
            c.status()  # /robot1/pgov3d/status and /robot2/pgov3d/status both answer
        for ns, scene_dir in scenes.items():
            replay = replay_command(scene_dir, "--fps", "10", ros_args=("-r", f"__ns:=/{ns}"))
            replays.append(running_node(replay, tmp_path / f"{ns}_replay.log"))
            replays[-1].__enter__().wait(60)
        for ns, scene_dir in scenes.items():
            n = len(Scene(scene_dir))
            s = clients[ns].wait_for(lambda s, n=n: s["frames_integrated"] == n)
            assert s["voxels"] == len(core_map(scene_dir)), (ns, s)
            assert s["received"]["depth"] == n, (ns, s)  # nothing of the other robot arrived
    finally:
        for cm in replays + nodes:
            cm.__exit__(None, None, None)
