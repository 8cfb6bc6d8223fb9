"""Test-side names for the node-process helpers of pgov3d_ros.processes."""

from pgov3d_ros.processes import LIB, SHARE, call_service, node_command, running_node

__all__ = ["LIB", "SHARE", "call_service", "node_command", "running_node"]
