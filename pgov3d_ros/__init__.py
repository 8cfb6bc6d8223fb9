"""ROS 2 adapters around pgov3d_core: nodes, message conversions, time synchronisation."""
