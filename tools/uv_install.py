"""`uv pip install` into this interpreter's environment, from the package sources pip is configured with.

Usage: .venv/bin/python tools/uv_install.py [uv pip install arguments, e.g. -r requirements.txt]

`make setup` installs the pinned requirements with uv: it unpacks wheels in parallel and links them
from its cache (README, first section). uv reads no pip.conf and no PIP_* variables, so a machine whose pip
is pointed at a mirror, a wheel folder or a constraints file (`pip config list`) would have uv
install other files than pip; this passes those sources on (pip's precedence: a PIP_* variable over
any file) and, as pip does, lets the best version across all sources win. Byte-compiled on every
core: with PYTHONDONTWRITEBYTECODE set, every process would otherwise compile torch's modules again.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

# pip option → uv option; each value of a whitespace-separated list becomes its own option.
SOURCE_OPTIONS = {
    "index-url": "--index-url",
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
    "constraint": "--constraint",
}


def pip_settings(listing: str) -> dict[str, list[str]]:
    """{pip option: values} of the source options in `pip config list` output (lines
    `scope.option='value'`), a PIP_* variable (scope `:env:`) over the files' value."""
    from_files: dict[str, list[str]] = {}
    from_env: dict[str, list[str]] = {}
    for line in listing.splitlines():
        key, sep, value = line.partition("=")
        scope, _, option = key.rpartition(".")
        if not sep or (option not in SOURCE_OPTIONS and option != "no-index"):
            continue
        words = shlex.split(value)
        (from_env if scope == ":env:" else from_files)[option] = words[0].split() if words else []
    return {**from_files, **from_env}


def uv_source_options(settings: dict[str, list[str]], hashed: bool = False) -> list[str]:
    """uv's options for those settings. `hashed` (a --require-hashes install): no constraints, which
    uv would hold to the hash-pinning rule too (a constraint such as `torch<=2.14.1` fails it); such
    an install pins every file it takes by its hash anyway."""
    out: list[str] = []
    if settings.get("no-index", ["false"])[0].lower() in ("1", "true", "yes", "on"):
        out.append("--no-index")
    for option, flag in SOURCE_OPTIONS.items():
        if hashed and option == "constraint":
            continue
        for value in settings.get(option, []):
            out += [flag, value]
    return out


def main(args: list[str]) -> None:
    """Replace this process with uv (its exit status is the script's)."""
    listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             check=True).stdout
    uv = Path(sys.executable).parent / "uv"
    cmd = [str(uv), "pip", "install", "--python", sys.executable, "--quiet", "--index-strategy",
           "unsafe-best-match", "--compile-bytecode",
           *uv_source_options(pip_settings(listing), hashed="--require-hashes" in args), *args]
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main(sys.argv[1:])
