"""Admin operations built on the models: usage reports, cleanup plans, apply, audit, restore.

Submodules load on first use, so ``regops.ops.usage.by_project(...)`` works
after a plain ``import regops``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

SUBMODULES = ("usage", "cleanup", "apply", "audit", "restore", "history", "charts", "forecast")


def __getattr__(name: str) -> ModuleType:
    if name not in SUBMODULES:
        raise AttributeError(f"module 'regops.ops' has no attribute {name!r}")
    return importlib.import_module(f"regops.ops.{name}")


def __dir__() -> list[str]:
    return sorted(SUBMODULES)
