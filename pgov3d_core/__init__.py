"""pgov3d core: open-vocabulary 3D semantic mapping (PGOV3D), plain Python + torch.

This package never imports rclpy; the ROS 2 adapters live in `pgov3d_ros`.
"""

__version__ = "0.1.0"
