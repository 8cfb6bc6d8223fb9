"""What `launch/mapping.launch.py` starts, decided from its arguments in plain Python.

launch and launch_ros are not installable from PyPI, so the launch file keeps only the launch
plumbing (declare the arguments, read them, build `Node` actions) and every decision — camera
preset, topic remappings, parameter overrides, the optional TF pose bridge — is made here, where a
unit test exercises it and a DDS test starts nodes with exactly the command line launch_ros would.

A camera preset (config/cameras/<name>.yaml, or any YAML path) holds a driver's real topic names,
its pose options and the node parameters its depth needs (depth unit, useful range):

    description: ...            one line
    driver: ...                 the command that starts the driver so that the topics below exist
    topics: {color: ..., depth: ..., camera_info: ..., pose: ...}   "" = the node's default name
    pose_type: pose_stamped | odometry
    pose_source: topic | tf
    parameters: {depth_scale: 1000.0, ...}                         node parameters (config/mapping.yaml)

Explicit launch arguments override the preset; with neither, the node gets no remappings and the
parameters of `config` only, as before presets existed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pgov3d_core.config import ConfigError, read_yaml

# name → (default, description). The launch file declares exactly these.
LAUNCH_ARGUMENTS: dict[str, tuple[str, str]] = {
    "camera": ("", "Camera preset: a name from the package's config/cameras (realsense, azure_kinect, "
               "orbbec_femto, zed2) or the path of a preset YAML; empty: none."),
    "color_topic": ("", "Colour image topic (default: the preset's, else color/image in the node's namespace)."),
    "depth_topic": ("", "Depth image topic, registered to colour (default: the preset's, else depth/image)."),
    "camera_info_topic": ("", "CameraInfo of the depth image (default: the preset's, else depth/camera_info)."),
    "pose_topic": ("", "Camera pose topic (default: the preset's, else pose). With pose_source:=tf the bridge "
                   "publishes on it."),
    "pose_type": ("", "Pose message type: pose_stamped or odometry (default: the preset's, else the config's)."),
    "pose_source": ("", "topic: the pose arrives on pose_topic; tf: also start pgov3d_tf_pose, which looks the "
                    "camera's optical frame up in TF at each CameraInfo stamp and publishes it on pose_topic "
                    "(needs tf2_ros). Default: the preset's, else topic."),
    "camera_frame": ("", "With pose_source:=tf: the optical frame to look up (empty: each CameraInfo's frame_id)."),
    "map_frame": ("", "Fixed frame of the map (node parameter frame_id) and of the TF lookup "
                  "(empty: the config's frame_id)."),
    "namespace": ("", "Namespace of the started nodes (e.g. robot1); relative topic names resolve inside it."),
    "config": ("", "Parameter file (default: the package's config/mapping.yaml)."),
    "rviz": ("false", "Also start RViz with rviz/pgov3d.rviz."),
    "use_sim_time": ("false", "Use /clock (bag replay)."),
}

# launch argument → (preset topics key, the node's own relative topic name)
NODE_INPUTS: dict[str, tuple[str, str]] = {
    "color_topic": ("color", "color/image"),
    "depth_topic": ("depth", "depth/image"),
    "camera_info_topic": ("camera_info", "depth/camera_info"),
    "pose_topic": ("pose", "pose"),
}
POSE_TYPES = ("pose_stamped", "odometry")
POSE_SOURCES = ("topic", "tf")
PRESET_KEYS = {"description", "driver", "topics", "pose_type", "pose_source", "parameters"}

MAPPING_NODE = ("mapping_node", "pgov3d")
TF_POSE_NODE = ("tf_pose", "pgov3d_tf_pose")

# ROS 2 name tokens (rcl's rules, minus substitutions): letters, digits, _, not starting with a digit.
_TOKEN = r"[A-Za-z_][A-Za-z0-9_]*"
_TOPIC = re.compile(rf"^(~/|/)?{_TOKEN}(/{_TOKEN})*$")
_NAMESPACE = re.compile(rf"^/?({_TOKEN}(/{_TOKEN})*)?$")
_FRAME = re.compile(rf"^{_TOKEN}(/{_TOKEN})*$")


class LaunchArgumentError(ValueError):
    """An argument or preset the launch cannot use; the message says which and what is accepted."""


@dataclass(frozen=True)
class CameraPreset:
    name: str
    path: Path
    description: str
    driver: str
    topics: dict[str, str]
    pose_type: str
    pose_source: str
    parameters: dict[str, object]


@dataclass
class NodeSpec:
    """One node to start: what launch_ros' `Node(package="pgov3d_ros", ...)` is given."""

    executable: str
    name: str
    namespace: str
    parameters: list = field(default_factory=list)  # parameter-file paths (str) and dicts, later ones win
    remappings: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class LaunchPlan:
    nodes: list[NodeSpec]
    rviz: bool
    use_sim_time: bool
    preset: CameraPreset | None
    messages: list[str]  # logged at launch: what was chosen and what the user must still start


def presets_dir(share: Path) -> Path:
    return Path(share) / "config" / "cameras"


def available_presets(cameras_dir: Path) -> list[str]:
    return sorted(p.stem for p in Path(cameras_dir).glob("*.yaml"))


def parse_bool(name: str, value: str) -> bool:
    v = str(value).strip().lower()
    if v in ("true", "1", "yes", "on"):
        return True
    if v in ("false", "0", "no", "off", ""):
        return False
    raise LaunchArgumentError(f"{name}:={value!r} is not a boolean; use true or false")


def check_topic(name: str, value: str) -> str:
    if not _TOPIC.match(value):
        raise LaunchArgumentError(
            f"{name}:={value!r} is not a valid ROS topic name (tokens of letters, digits and _ separated by /, "
            "none starting with a digit, e.g. /camera/camera/color/image_raw)")
    return value


def check_namespace(value: str) -> str:
    """'' → '' (no namespace); 'robot1' and '/robot1/' → '/robot1'."""
    ns = value.strip().rstrip("/")
    if not _NAMESPACE.match(ns):
        raise LaunchArgumentError(f"namespace:={value!r} is not a valid ROS namespace (e.g. robot1 or /fleet/robot1)")
    return "" if not ns else ns if ns.startswith("/") else "/" + ns


def load_preset(name_or_path: str, cameras_dir: Path) -> CameraPreset:
    """A preset by name (config/cameras/<name>.yaml) or by path, validated."""
    looks_like_path = name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path
    path = Path(name_or_path).expanduser() if looks_like_path else Path(cameras_dir) / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(available_presets(cameras_dir)) or "none installed"
        what = f"camera preset file {str(path)!r} does not exist" if looks_like_path else \
            f"unknown camera preset {name_or_path!r}"
        raise LaunchArgumentError(f"{what}: the presets are {known} (in {cameras_dir}); or give the path of a "
                                  "preset YAML (camera:=/path/to/my_camera.yaml)")
    try:
        data = read_yaml(path, "camera preset")
    except ConfigError as exc:
        raise LaunchArgumentError(f"{exc}; a preset is a mapping of {sorted(PRESET_KEYS)}") from None
    where = f"camera preset {path}"
    unknown = set(data) - PRESET_KEYS
    if unknown:
        raise LaunchArgumentError(f"{where}: unknown keys {sorted(unknown)}; a preset has {sorted(PRESET_KEYS)}")
    topics = data.get("topics") or {}
    known_topics = {key for key, _ in NODE_INPUTS.values()}
    if not isinstance(topics, dict) or set(topics) - known_topics:
        raise LaunchArgumentError(f"{where}: topics must map some of {sorted(known_topics)} to topic names")
    topics = {k: str(v or "") for k, v in topics.items()}
    for key, value in topics.items():
        if value:
            check_topic(f"{where}: topics.{key}", value)
    pose_type = str(data.get("pose_type") or "")
    if pose_type and pose_type not in POSE_TYPES:
        raise LaunchArgumentError(f"{where}: pose_type {pose_type!r} is not one of {POSE_TYPES}")
    pose_source = str(data.get("pose_source") or "")
    if pose_source and pose_source not in POSE_SOURCES:
        raise LaunchArgumentError(f"{where}: pose_source {pose_source!r} is not one of {POSE_SOURCES}")
    parameters = data.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise LaunchArgumentError(f"{where}: parameters must be a mapping of node parameter names to values")
    return CameraPreset(name=path.stem, path=path, description=str(data.get("description") or ""),
                        driver=str(data.get("driver") or ""), topics=topics, pose_type=pose_type,
                        pose_source=pose_source, parameters=dict(parameters))


def config_parameters(config: Path) -> dict[str, object]:
    """The node parameters a parameter file sets for the mapping node (its `/**` section and/or the
    one named after the node), as ROS would merge them."""
    try:
        data = read_yaml(config, "parameter file")
    except ConfigError as exc:
        raise LaunchArgumentError(f"config:={str(config)!r} cannot be read as a parameter file: {exc}") from None
    merged: dict[str, object] = {}
    for key in ("/**", MAPPING_NODE[1], "/" + MAPPING_NODE[1]):
        section = data.get(key) if isinstance(data, dict) else None
        if isinstance(section, dict) and isinstance(section.get("ros__parameters"), dict):
            merged.update(section["ros__parameters"])
    return merged


def plan(args: Mapping[str, str], share: Path) -> LaunchPlan:
    """The nodes `mapping.launch.py` starts for these argument values (missing ones take their
    defaults). Raises LaunchArgumentError naming the bad argument."""
    unknown = set(args) - set(LAUNCH_ARGUMENTS)
    if unknown:
        raise LaunchArgumentError(f"unknown launch arguments {sorted(unknown)}; known: {sorted(LAUNCH_ARGUMENTS)}")
    arg = {name: str(args.get(name, default) or "").strip() for name, (default, _) in LAUNCH_ARGUMENTS.items()}
    share = Path(share)
    default_config = share / "config" / "mapping.yaml"
    config = Path(arg["config"]).expanduser() if arg["config"] else default_config
    use_sim_time = parse_bool("use_sim_time", arg["use_sim_time"])
    rviz = parse_bool("rviz", arg["rviz"])
    namespace = check_namespace(arg["namespace"])
    preset = load_preset(arg["camera"], presets_dir(share)) if arg["camera"] else None
    messages: list[str] = []

    # Parameter names the node declares, as listed in the package's config: a typo in a preset
    # would otherwise be silently ignored by the node (undeclared parameters are not an error).
    declared = set(config_parameters(default_config)) if default_config.is_file() else set()
    config_values = config_parameters(config)
    overrides: dict[str, object] = {}
    if preset is not None:
        bad = sorted(set(preset.parameters) - declared) if declared else []
        if bad:
            raise LaunchArgumentError(f"camera preset {preset.path}: unknown node parameters {bad} "
                                      f"(the node's parameters are those of {default_config})")
        overrides.update(preset.parameters)
        messages.append(f"camera preset {preset.name}: {preset.description}"
                        + (f"; start the driver with: {preset.driver}" if preset.driver else ""))

    pose_source = arg["pose_source"] or (preset.pose_source if preset else "") or "topic"
    if pose_source not in POSE_SOURCES:
        raise LaunchArgumentError(f"pose_source:={pose_source!r} is not one of {POSE_SOURCES}")
    pose_type = arg["pose_type"] or (preset.pose_type if preset else "")
    if pose_type and pose_type not in POSE_TYPES:
        raise LaunchArgumentError(f"pose_type:={pose_type!r} is not one of {POSE_TYPES}")
    if pose_source == "tf":
        if arg["pose_type"] == "odometry":
            raise LaunchArgumentError("pose_source:=tf publishes geometry_msgs/PoseStamped: pose_type must be "
                                      "pose_stamped (or left empty)")
        pose_type = "pose_stamped"  # whatever the config says: the bridge publishes PoseStamped
    if pose_type:
        overrides["pose_type"] = pose_type
    if arg["map_frame"]:
        if not _FRAME.match(arg["map_frame"]):  # tf2 rejects frame ids with a leading slash
            raise LaunchArgumentError(f"map_frame:={arg['map_frame']!r} is not a valid frame id (e.g. map)")
        overrides["frame_id"] = arg["map_frame"]
    overrides["use_sim_time"] = use_sim_time

    topics: dict[str, str] = {}
    remappings: list[tuple[str, str]] = []
    for name, (key, own) in NODE_INPUTS.items():
        topic = arg[name] or (preset.topics.get(key, "") if preset else "")
        if topic:
            check_topic(name, topic)
            topics[name] = topic
            if topic != own:
                remappings.append((own, topic))
    if preset is not None and pose_source == "topic" and not topics.get("pose_topic"):
        messages.append(f"camera preset {preset.name} gives no pose: the node expects the camera's optical-frame "
                        "pose on 'pose' (set pose_topic:=... or pose_source:=tf)")

    nodes = [NodeSpec(*MAPPING_NODE, namespace=namespace, parameters=[str(config), overrides],
                      remappings=remappings)]
    if pose_source == "tf":
        map_frame = arg["map_frame"] or str(config_values.get("frame_id") or "map")
        bridge_remaps = [(own, topics[name]) for name, (_, own) in NODE_INPUTS.items()
                         if name in ("camera_info_topic", "pose_topic") and topics.get(name, own) != own]
        bridge_params: dict[str, object] = {"map_frame": map_frame, "use_sim_time": use_sim_time}
        if arg["camera_frame"]:
            if not _FRAME.match(arg["camera_frame"]):
                raise LaunchArgumentError(f"camera_frame:={arg['camera_frame']!r} is not a valid frame id "
                                          "(e.g. camera_color_optical_frame)")
            bridge_params["camera_frame"] = arg["camera_frame"]
        nodes.append(NodeSpec(*TF_POSE_NODE, namespace=namespace, remappings=bridge_remaps,
                              parameters=[bridge_params]))
        messages.append(f"pose from TF: {map_frame} → {arg['camera_frame'] or 'the CameraInfo frame_id'} "
                        "at each CameraInfo stamp (pgov3d_tf_pose)")
    elif arg["camera_frame"]:
        raise LaunchArgumentError("camera_frame:=... is only used with pose_source:=tf")
    return LaunchPlan(nodes=nodes, rviz=rviz, use_sim_time=use_sim_time, preset=preset, messages=messages)


def _param_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def ros_arguments(spec: NodeSpec) -> list[str]:
    """The `--ros-args` part launch_ros builds for `spec` (less the node name, which
    pgov3d_ros.processes.node_command adds): namespace, parameter files and values, remappings.
    launch_ros writes dict parameters to a temporary file; `-p` sets the same values."""
    out: list[str] = []
    if spec.namespace:
        out += ["-r", f"__ns:={spec.namespace}"]
    for params in spec.parameters:
        if isinstance(params, dict):
            for name, value in params.items():
                out += ["-p", f"{name}:={_param_value(value)}"]
        else:
            out += ["--params-file", str(params)]
    for old, new in spec.remappings:
        out += ["-r", f"{old}:={new}"]
    return out
