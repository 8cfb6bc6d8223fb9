"""Launch the pgov3d mapping node (and optionally the TF pose bridge and RViz) on a ROS 2 install.

    ros2 launch pgov3d_ros mapping.launch.py camera:=realsense pose_topic:=/orb_slam3/camera_pose
    ros2 launch pgov3d_ros mapping.launch.py color_topic:=/camera/camera/color/image_raw \\
        depth_topic:=/camera/camera/aligned_depth_to_color/image_raw \\
        camera_info_topic:=/camera/camera/aligned_depth_to_color/camera_info pose_topic:=/orb_slam3/camera_pose
    ros2 launch pgov3d_ros mapping.launch.py camera:=zed2            # pose from TF (needs tf2_ros)

Arguments (`ros2 launch pgov3d_ros mapping.launch.py --show-args`): camera (a preset of
config/cameras or a preset YAML path), color_topic, depth_topic, camera_info_topic, pose_topic,
pose_type, pose_source (topic | tf), camera_frame, map_frame, namespace, config, rviz,
use_sim_time. Every decision is made by pgov3d_ros.launch_args.plan (plain Python, unit-tested
without launch installed); this file only turns its plan into launch actions.
"""

import os

from ament_index_python.packages import PackageNotFoundError, get_package_prefix, get_package_share_directory
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription
from pgov3d_ros.launch_args import LAUNCH_ARGUMENTS, LaunchArgumentError, plan
from pgov3d_ros.transport import transport_environment


def _installed(package: str) -> bool:
    try:
        get_package_prefix(package)
        return True
    except PackageNotFoundError:
        return False


def _nodes(context):
    share = get_package_share_directory("pgov3d_ros")
    values = {name: LaunchConfiguration(name).perform(context) for name in LAUNCH_ARGUMENTS}
    try:
        chosen = plan(values, share)
    except LaunchArgumentError as exc:
        # Raised before any action is returned: nothing has started, and the message names the
        # argument (a RuntimeError is what launch reports as a failed launch, in one line).
        raise RuntimeError(f"pgov3d mapping.launch.py: {exc}") from None
    actions = [LogInfo(msg=m) for m in chosen.messages]
    # The package's DDS transport (config/fastdds.xml: 640x480 images through shared memory) for
    # every process this launch starts, unless the user set a profile of their own.
    actions += [SetEnvironmentVariable(name, value) for name, value in transport_environment().items()]
    for spec in chosen.nodes:
        # Executables spelled out rather than spec.executable, so that CI's static check of this
        # file sees every executable it names and verifies it is installed.
        if spec.executable == "mapping_node":
            actions.append(Node(package="pgov3d_ros", executable="mapping_node", name=spec.name,
                                namespace=spec.namespace, output="screen", parameters=spec.parameters,
                                remappings=spec.remappings))
        elif spec.executable == "tf_pose":
            actions.append(Node(package="pgov3d_ros", executable="tf_pose", name=spec.name,
                                namespace=spec.namespace, output="screen", parameters=spec.parameters,
                                remappings=spec.remappings))
        else:
            raise RuntimeError(f"pgov3d mapping.launch.py: no launch action for executable {spec.executable!r}")
    if chosen.rviz:
        # Decide before anything starts: a failure late in a launch description would orphan
        # the nodes already started.
        if not _installed("rviz2"):
            actions.append(LogInfo(msg="rviz:=true but rviz2 is not installed; starting without RViz"))
        else:
            actions.append(
                Node(
                    package="rviz2",
                    executable="rviz2",
                    name="rviz2",
                    arguments=["-d", os.path.join(share, "rviz", "pgov3d.rviz")],
                    parameters=[{"use_sim_time": chosen.use_sim_time}],
                )
            )
    return actions


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=description)
         for name, (default, description) in LAUNCH_ARGUMENTS.items()]
        + [OpaqueFunction(function=_nodes)]
    )
