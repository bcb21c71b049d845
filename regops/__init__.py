"""regops: GitLab container registry administration without Rails."""

from __future__ import annotations

__version__ = "0.1.0"
