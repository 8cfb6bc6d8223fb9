"""The one config loader of the project: YAML files with `_base_` inheritance and dotted overrides.

    cfg = load_config("config/stage1_gpu.yaml", ["train.lr=1e-3", "model.preset=minkunet18a"])

* `_base_: other.yaml` (or a list of files, merged left to right) is resolved relative to the file
  that names it; the file's own keys are merged on top, recursively for mappings (lists and
  scalars replace). A mapping with `_replace_: true` replaces the inherited one instead.
* Overrides are `dotted.key=value` (every CLI takes them as positional arguments); the value is
  parsed as YAML (`1e-3` → float (also in files), `[1, 2]` → list, `null` → None, `true` → bool,
  anything else a string); missing intermediate mappings are created. Keys that do not exist yet
  are accepted (a config may add options) but a key path through a non-mapping is an error. A
  mapping value merges into the mapping it lands on, key by key (one merge rule everywhere).
* `read_yaml` is the one YAML reader of the project's files (configs, camera presets, ROS
  parameter files, scene metadata); `from_section` builds a checked dataclass from one section.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TypeVar

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


def read_yaml(path: str | os.PathLike, what: str = "config") -> dict:
    """The mapping at the top of the YAML file `path` ({} for an empty file), read with the loader
    above; no `_base_` resolution (that is `load_config`). ConfigError names the file and `what`."""
    path = Path(path)
    try:
        data = _yaml_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} file not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: unreadable {what} ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a {what} file must hold a mapping at the top level")
    return data


def merged_value(old, new):
    """`new` merged over `old`: mappings key by key at every depth, anything else replaces
    (a mapping with `_replace_: true` replaces instead of merging). The one merge rule of configs:
    `_base_` files, `dotted.key=value` overrides and the curriculum's per-stage `overrides`."""
    if isinstance(new, Mapping) and new.get(REPLACE_KEY):
        return {k: copy.deepcopy(v) for k, v in new.items() if k != REPLACE_KEY}
    if isinstance(new, Mapping) and isinstance(old, Mapping):
        return merge(old, new)
    return copy.deepcopy(dict(new) if isinstance(new, Mapping) else new)


def merge(base: Mapping, override: Mapping) -> dict:
    """Recursive merge: mappings merge key by key, everything else in `override` replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        out[key] = merged_value(out.get(key), value)
    return out


def _load(path: Path, stack: tuple[Path, ...]) -> dict:
    path = path.resolve()
    if path in stack:
        chain = " -> ".join(str(p) for p in (*stack, path))
        raise ConfigError(f"cyclic {BASE_KEY} inheritance: {chain}")
    data = read_yaml(path)
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


def apply_overrides(cfg: dict, overrides: Iterable[str] | Mapping[str, object]) -> dict:
    """A copy of `cfg` with every override applied in order: `dotted.key=value` strings, or a
    mapping of dotted keys to values (the curriculum's `stage1.overrides`). A mapping value merges
    key by key into the mapping already there (`train={steps: 4}` keeps train's other keys), so
    `train.steps: 4` and `train: {steps: 4}` mean the same."""
    items = overrides.items() if isinstance(overrides, Mapping) else (parse_override(t) for t in overrides)
    out = copy.deepcopy(cfg)
    for key, value in items:
        parts = key.split(".") if isinstance(key, str) else key
        if not parts or any(not p for p in parts):
            raise ConfigError(f"override {key!r}: empty key component")
        node = out
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            elif not isinstance(nxt, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"override {'.'.join(parts)!r}: {where} is a {type(nxt).__name__}, not a mapping")
            node = nxt
        node[parts[-1]] = merged_value(node.get(parts[-1]), value)
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


T = TypeVar("T")


def section(cls: type) -> dataclasses.Field:
    """A dataclass field holding the nested section `cls` (built by `from_section` from its own
    sub-mapping, checked the same way)."""
    return dataclasses.field(default_factory=cls, metadata={"section": cls})


def from_section(cls: type[T], data: Mapping | None, where: str) -> T:
    """The dataclass `cls` from the config section `data` (None: every default), checked.

    Unknown keys are a ConfigError naming the section `where` and the known keys (a misspelt key
    would otherwise run with the default); fields declared with `section(Sub)` are built from their
    sub-mapping the same way (`where.name`); what the class's own `__post_init__` rejects
    (ValueError, TypeError) comes back as a ConfigError naming the section."""
    label = where or "config"
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"{label}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data or {}) - set(fields))
    if unknown:
        raise ConfigError(f"{label}: unknown key(s) {unknown}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in (data or {}).items():
        sub = fields[name].metadata.get("section")
        kwargs[name] = from_section(sub, value, f"{where}.{name}" if where else name) if sub else value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{label}: {exc}") from None
