"""`pgov3d_mapping`: the online open-vocabulary mapping node.

Thin ROS adapter around `pgov3d_core.map.VoxelMap`: parameters come from config/mapping.yaml,
services answer from the map. No mapping logic lives here.
"""

from __future__ import annotations

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from pgov3d_core.map import VoxelMap
from pgov3d_interfaces.srv import Query

# name → (default, description). Defaults mirror config/mapping.yaml.
PARAMETERS: dict[str, tuple[object, str]] = {
    "frame_id": ("map", "Fixed frame (REP 105) of the map and of every published cloud."),
    "voxel_size": (0.02, "Voxel edge length of the map, metres."),
    "max_voxels": (2_000_000, "Hard cap on voxels; the least recently observed are evicted beyond it."),
    "max_depth": (5.0, "Depth readings farther than this (metres) are ignored."),
    "depth_scale": (1000.0, "16UC1 depth units per metre (1000 = millimetres)."),
    "map_publish_period": (1.0, "Seconds between /pgov3d/map_cloud messages; 0 disables."),
    "max_queries": (32, "Longest accepted query list."),
    "max_query_length": (256, "Longest accepted query string, in characters."),
    "map_save_path": ("pgov3d_map.npz", "File that /pgov3d/save_map writes."),
}


class MappingNode(Node):
    def __init__(self, **kwargs):
        super().__init__("pgov3d_mapping", **kwargs)
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        p = self.get_parameter
        self.map = VoxelMap(
            voxel_size=p("voxel_size").value,
            max_voxels=p("max_voxels").value,
            max_depth=p("max_depth").value,
        )
        self.query_srv = self.create_service(Query, "/pgov3d/query", self._on_query)
        self.get_logger().info(
            f"pgov3d mapping node up: voxel {self.map.voxel_size} m, cap {self.map.max_voxels} voxels, "
            f"frame '{p('frame_id').value}'"
        )

    def _validate_queries(self, queries: list[str]) -> str | None:
        """Why a query request is unusable, or None."""
        max_queries = self.get_parameter("max_queries").value
        max_len = self.get_parameter("max_query_length").value
        if len(queries) == 0:
            return "no queries given: pass at least one text, e.g. {queries: ['chair']}"
        if len(queries) > max_queries:
            return f"{len(queries)} queries given; at most {max_queries} are accepted (parameter max_queries)"
        for i, q in enumerate(queries):
            if not q.strip():
                return f"query {i} is empty"
            if len(q) > max_len:
                return f"query {i} is {len(q)} characters long; at most {max_len} (parameter max_query_length)"
        return None

    def _on_query(self, request: Query.Request, response: Query.Response) -> Query.Response:
        response.success = False
        reason = self._validate_queries(list(request.queries))
        if reason is None and len(self.map) == 0:
            reason = "the map is empty: no RGB-D frame has been integrated yet"
        if reason is None and self.map.features is None:
            reason = f"the map holds {len(self.map)} voxels but no features yet: the 3D network has not run"
        if reason is None:
            reason = "no text encoder is loaded, so queries cannot be embedded"
        response.message = reason
        self.get_logger().warning(f"query rejected: {reason}")
        return response


def main(args=None) -> None:
    rclpy.init(args=args)
    node = None
    try:
        node = MappingNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    main()
