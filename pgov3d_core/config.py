"""The one config loader of the project: YAML files with `_base_` inheritance and dotted overrides.

    cfg = load_config("config/stage1_gpu.yaml", ["train.lr=1e-3", "model.preset=minkunet18a"])

* `_base_: other.yaml` (or a list of files, merged left to right) is resolved relative to the file
  that names it; the file's own keys are merged on top, recursively for mappings (lists and
  scalars replace). A mapping with `_replace_: true` replaces the inherited one instead.
* Overrides are `dotted.key=value`; the value is parsed as YAML (`1e-3` → float (also in files), `[1, 2]` →
  list, `null` → None, `true` → bool, anything else a string); missing intermediate mappings are
  created. Keys that do not exist yet are accepted (a config may add options) but a key path
  through a non-mapping is an error.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml

BASE_KEY = "_base_"
REPLACE_KEY = "_replace_"


class ConfigError(ValueError):
    """Unreadable config file, cyclic inheritance or a malformed override (the message says which)."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads exponent floats without a dot (`1e-3`, `5E4`) as floats: PyYAML
    follows YAML 1.1, where those are strings, a classic trap for learning rates."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def _yaml_load(text: str):
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects


def _read_yaml(path: Path) -> dict:
    try:
        data = _yaml_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: unreadable config ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping at the top level")
    return data


def merge(base: Mapping, override: Mapping) -> dict:
    """Recursive merge: mappings merge key by key, everything else in `override` replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and value.get(REPLACE_KEY):
            out[key] = {k: copy.deepcopy(v) for k, v in value.items() if k != REPLACE_KEY}
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(dict(value) if isinstance(value, Mapping) else value)
    return out


def _load(path: Path, stack: tuple[Path, ...]) -> dict:
    path = path.resolve()
    if path in stack:
        chain = " -> ".join(str(p) for p in (*stack, path))
        raise ConfigError(f"cyclic {BASE_KEY} inheritance: {chain}")
    data = _read_yaml(path)
    bases = data.pop(BASE_KEY, None)
    if bases is None:
        return _strip_replace(data)
    if isinstance(bases, str | os.PathLike):
        bases = [bases]
    if not isinstance(bases, list):
        raise ConfigError(f"{path}: {BASE_KEY} must be a file name or a list of file names")
    merged: dict = {}
    for base in bases:
        merged = merge(merged, _load(path.parent / str(base), (*stack, path)))
    return _strip_replace(merge(merged, data))


def _strip_replace(d):
    if isinstance(d, dict):
        return {k: _strip_replace(v) for k, v in d.items() if k != REPLACE_KEY}
    if isinstance(d, list):
        return [_strip_replace(v) for v in d]
    return d


def parse_override(text: str) -> tuple[list[str], object]:
    """'a.b.c=value' → (['a', 'b', 'c'], YAML-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like dotted.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ConfigError(f"override {text!r}: empty key component")
    try:
        value = _yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from None
    return parts, value


def apply_overrides(cfg: dict, overrides: Iterable[str]) -> dict:
    """A copy of `cfg` with every `dotted.key=value` override applied in order."""
    out = copy.deepcopy(cfg)
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            elif not isinstance(nxt, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"override {text!r}: {where} is a {type(nxt).__name__}, not a mapping")
            node = nxt
        node[parts[-1]] = value
    return out


def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> dict:
    """Load a YAML config with `_base_` inheritance, then apply dotted overrides."""
    return apply_overrides(_load(Path(path), ()), overrides)


def get(cfg: Mapping, dotted: str, default=None):
    """cfg['a']['b'] for 'a.b', or `default` when any part is missing."""
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def dump_config(cfg: Mapping) -> str:
    return yaml.safe_dump(dict(cfg), sort_keys=False)
