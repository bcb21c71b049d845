"""Reading a configuration file an administrator points at: bounded, named, never echoed.

Every error names the file and what was wrong with it, never a line of its
content (config files hold secrets).

>>> data = parse_yaml(read_config_text("/etc/docker/registry/config.yml", "registry config"),
...                   "registry config /etc/docker/registry/config.yml")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from regops.errors import ConfigError

MAX_CONFIG_BYTES = 1024 * 1024  # the configs read here are a few KiB; more is not one


def read_config_text(path: str | os.PathLike[str], what: str) -> str:
    """The UTF-8 text of ``path``; ConfigError naming ``what`` and the file when unusable."""
    target = Path(path)
    try:
        raw = target.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} {target}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{what} {target}: cannot read ({exc.strerror})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{what} {target}: larger than a {what} can be")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {target}: not UTF-8 text") from None


def parse_yaml(text: str, where: str) -> Any:
    """``text`` as YAML; ConfigError naming ``where`` and the line, without the content."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{where}: not valid YAML{line}") from None
