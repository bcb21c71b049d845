"""GitLab REST API v4: :class:`GitLabClient` returns plain data, raises GitLabError."""

from __future__ import annotations

from regops.gitlab.client import GitLabClient, encode_id, flatten_message

__all__ = ["GitLabClient", "encode_id", "flatten_message"]
