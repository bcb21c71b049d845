"""regops: GitLab container registry administration without Rails.

Everything a user needs is importable from here:

>>> import regops
>>> regops.connect()                                   # doctest: +SKIP
>>> regops.Project.last(100)                           # doctest: +SKIP
>>> regops.plan_cleanup(tags, {"name_regex_delete": ".*", "keep_n": 5})  # doctest: +SKIP

Names are imported lazily so ``import regops`` stays fast and the low layers
(``regops.http`` needs ``__version__``) never import the high ones.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "connect": "regops.connection",
    "Connection": "regops.connection",
    "default_connection": "regops.connection",
    "Settings": "regops.config",
    "resolve_settings": "regops.config",
    "Project": "regops.models",
    "ContainerRepository": "regops.models",
    "Tag": "regops.models",
    "ExpirationPolicy": "regops.models",
    "User": "regops.models",
    "Collection": "regops.models",
    "ApplicationSettings": "regops.models",
    "Event": "regops.models",
    "usage_by_project": "regops.models",
    "UsageHistory": "regops.models",
    "CleanupPolicy": "regops.policy",
    "plan_cleanup": "regops.ops.cleanup",
    "CleanupPlan": "regops.ops.cleanup",
    "TagDecision": "regops.ops.cleanup",
    "GitLabClient": "regops.gitlab.client",
    "RegistryClient": "regops.registry.client",
    "Secret": "regops.secrets",
    "ops": "regops.ops",
    "errors": "regops.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:  # a class, a function or a module, by name
    """Import a public name on first use."""
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'regops' has no attribute {name!r}")
    module = importlib.import_module(module_name)
    value = module if module_name.endswith(f".{name}") else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
