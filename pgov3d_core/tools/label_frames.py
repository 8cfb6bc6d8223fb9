"""Pixel-wise entities for the frames of scene folders (PGOV3D §3.1), cached under <scene>/entities/.

    python -m pgov3d_core.tools.label_frames --scene-root ROOT [--config config/labelling.yaml] [-v] \\
        [KEY=VALUE ...]     e.g. labeller=oracle stride=2 batch_size=4 overlay=true
    ros2 run pgov3d_ros label_frames ...      (the same, installed as a console script)

ROOT is a scene folder or a folder of scene folders; KEY=VALUE overrides the labelling config (the
same dotted syntax as every CLI of the project, e.g. grounding.box_threshold=0.35). Re-running is
cheap: frames whose cached outputs are valid (and from the same labeller settings) are skipped;
missing, corrupt or outdated ones are redone. Exit status: 0 all sampled frames labelled, 1 some
frames failed (listed in the summary), 2 setup error (missing weights, bad config, unreadable
scene) printed as one line.

The work is `pgov3d_core.labelling.pipeline.label_scenes` (what the curriculum calls); this module
is its command line.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pgov3d_core.data.scene import SceneError
from pgov3d_core.labelling.config import ConfigError, LabellingConfig
from pgov3d_core.labelling.entities import EntityError
from pgov3d_core.labelling.labellers import LabellingError
from pgov3d_core.labelling.pipeline import SceneReport, label_scenes
from pgov3d_core.weights import WeightsError

__all__ = ["label_scenes", "main", "SceneReport"]  # label_scenes: the API behind this CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pgov3d_core.tools.label_frames", description=__doc__.split("\n")[0])
    p.add_argument("--scene-root", required=True, help="a scene folder or a folder of scene folders")
    p.add_argument("--config", default=None, help="labelling YAML (default: built-in defaults)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="labelling config overrides: labeller=oracle, stride=N, batch_size=B, overlay=true, ...")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("httpx", "urllib3", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from tqdm.contrib.logging import logging_redirect_tqdm

    try:
        with logging_redirect_tqdm():
            config = LabellingConfig.load(args.config).merged(args.overrides)
            reports = label_scenes(args.scene_root, config, progress=not args.no_progress)
    except (WeightsError, ConfigError, SceneError, LabellingError, EntityError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed = sum(len(r.failed) for r in reports)
    if failed:
        print(f"error: {failed} frame(s) could not be labelled (see the summary above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
