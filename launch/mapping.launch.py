"""Launch the pgov3d mapping node (and optionally RViz) on a ROS 2 install.

    ros2 launch pgov3d_ros mapping.launch.py [config:=/path/to/mapping.yaml] [rviz:=true]
        [use_sim_time:=true]

Remap the input topics to your camera driver's, e.g. with a wrapping launch file or by editing
`remappings` below.
"""

import os

from ament_index_python.packages import PackageNotFoundError, get_package_prefix, get_package_share_directory
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription


def _installed(package: str) -> bool:
    try:
        get_package_prefix(package)
        return True
    except PackageNotFoundError:
        return False


def _nodes(context):
    share = get_package_share_directory("pgov3d_ros")
    config = LaunchConfiguration("config").perform(context) or os.path.join(share, "config", "mapping.yaml")
    use_sim_time = LaunchConfiguration("use_sim_time").perform(context).lower() in ("true", "1")
    actions = [
        Node(
            package="pgov3d_ros",
            executable="mapping_node",
            name="pgov3d_mapping",
            output="screen",
            parameters=[config, {"use_sim_time": use_sim_time}],
        )
    ]
    if LaunchConfiguration("rviz").perform(context).lower() in ("true", "1"):
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
                    parameters=[{"use_sim_time": use_sim_time}],
                )
            )
    return actions


def generate_launch_description():
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "config", default_value="", description="Parameter file (default: the package's config/mapping.yaml)."
            ),
            DeclareLaunchArgument("rviz", default_value="false", description="Also start RViz with rviz/pgov3d.rviz."),
            DeclareLaunchArgument("use_sim_time", default_value="false", description="Use /clock (bag replay)."),
            OpaqueFunction(function=_nodes),
        ]
    )
