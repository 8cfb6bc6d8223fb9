"""ament_python package `pgov3d_ros`: the ROS 2 nodes plus the ROS-free core library.

`ros2 run` and launch_ros look for executables in `lib/pgov3d_ros` (set in setup.cfg);
launch/, config/ and rviz/ are installed to `share/pgov3d_ros` for `get_package_share_directory`.
"""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "pgov3d_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["pgov3d_core", "pgov3d_core.*", "pgov3d_ros", "pgov3d_ros.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/config/cameras", glob("config/cameras/*.yaml")),
        (f"share/{PACKAGE}/rviz", glob("rviz/*.rviz")),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="pgov3d maintainers",
    maintainer_email="maintainers@pgov3d.invalid",
    description="Open-vocabulary 3D semantic mapping (PGOV3D) for ROS 2",
    license="Apache-2.0",
    # Every entry point of the project (`ros2 run pgov3d_ros <name>`; in the checkout's venv
    # `python -m <module>` runs the same main). The nodes, then the offline steps along the data flow.
    entry_points={
        "console_scripts": [
            "mapping_node = pgov3d_ros.mapping_node:main",
            "replay = pgov3d_ros.replay:main",
            "tf_pose = pgov3d_ros.tf_pose:main",
            "bag_to_scene = pgov3d_ros.bag_to_scene:main",
            "check_scene = pgov3d_core.tools.check_scene:main",
            "synthetic_scenes = pgov3d_core.data.synthetic:main",
            "label_frames = pgov3d_core.tools.label_frames:main",
            "train_stage1 = pgov3d_core.tools.train_stage1:main",
            "train_stage2 = pgov3d_core.tools.train_stage2:main",
            "run_curriculum = pgov3d_core.tools.run_curriculum:main",
            "map_scene = pgov3d_core.tools.map_scene:main",
            "demo = pgov3d_ros.demo:main",
        ],
    },
)
