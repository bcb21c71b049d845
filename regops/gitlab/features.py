"""What the connected GitLab has, by version and by asking it.

- :func:`policy_options`: the cleanup-policy values it accepts. ``older_than``
  grew over time (``60d`` in 14.4, more later); the list is GitLab's GraphQL
  enum ``ContainerExpirationPolicyOlderThanEnum`` (generated from the model's
  ``older_than_options``), read by schema introspection: one request, exact for
  any version. Without it, the version decides.
- :func:`tag_protection`: a project's container tag protection rules
  (``ContainerRegistry::Protection::TagRule``, GitLab 17.9+; the REST list
  ``GET /projects/:id/registry/protection/tag/rules`` exists from 18.7).

>>> tag_protection(gitlab, 42, "18.7.0").rules   # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from regops.errors import GitLabError, GitLabNotFound, PolicyError
from regops.gitlab.client import GitLabClient, encode_id
from regops.policy import PolicyOptions, TagProtection, parse_version

log = logging.getLogger("regops.gitlab")

GRAPHQL_PATH = "/api/graphql"
OLDER_THAN_ENUM_NAME = "ContainerExpirationPolicyOlderThanEnum"
ENUM_QUERY = "query($name: String!) { __type(name: $name) { enumValues { name } } }"
# Protected container tags: introduced in GitLab 17.9 (flag), generally available in 17.11
# (doc/user/packages/container_registry/protected_container_tags.md) ...
PROTECTED_TAGS_SINCE = (17, 9)
# ... listed over REST from 18.7 (doc/api/container_registry_protection_tag_rules.md).
PROTECTION_REST_SINCE = (18, 7)
PROTECTION_RULES_PATH = "/projects/{id}/registry/protection/tag/rules"


def gitlab_version(gitlab: GitLabClient) -> str | None:
    """``GET /version``'s ``version`` (None when GitLab does not say)."""
    version = gitlab.version().get("version")
    return str(version) if version else None


def older_than_enum(gitlab: GitLabClient) -> list[str] | None:
    """The ``older_than`` enum value names GitLab's GraphQL schema lists (None: unknown)."""
    try:
        response = gitlab.request(
            "POST",
            gitlab.url + GRAPHQL_PATH,
            json={"query": ENUM_QUERY, "variables": {"name": OLDER_THAN_ENUM_NAME}},
        )
        body: Any = response.json()
    except (GitLabError, ValueError) as exc:
        log.info("GitLab's GraphQL schema could not be read (%s): policy values by version", exc)
        return None
    values = (
        ((body.get("data") or {}).get("__type") or {}).get("enumValues")
        if isinstance(body, dict)
        else None
    )
    if not isinstance(values, list):
        return None
    return [str(v.get("name")) for v in values if isinstance(v, dict) and v.get("name")]


def policy_options(gitlab: GitLabClient, version: str | None = None) -> PolicyOptions:
    """The policy values the connected GitLab accepts (its GraphQL enum, else its version)."""
    version = version if version is not None else gitlab_version(gitlab)
    return PolicyOptions.for_gitlab(version, older_than_enum(gitlab))


@dataclass(frozen=True)
class ProtectionRead:
    """A project's tag protection rules as far as they could be read.

    ``rules`` (empty when there are none or they could not be read) and
    ``note``: why regops could not see them (for plan warnings), else None.
    """

    rules: TagProtection
    note: str | None = None


def tag_protection(
    gitlab: GitLabClient, project_id: int | str, version: str | None
) -> ProtectionRead:
    """The project's tag protection rules, from GitLab's REST API where the version has it."""
    parsed = parse_version(version)
    if parsed is not None and parsed < PROTECTED_TAGS_SINCE:
        return ProtectionRead(TagProtection(source=f"GitLab {version}: no tag protection"))
    if parsed is not None and parsed < PROTECTION_REST_SINCE:
        return ProtectionRead(
            TagProtection(),
            f"GitLab {version} has tag protection rules but lists them over REST only from "
            "18.7: this plan cannot see them (GitLab's own run keeps the tags they match)",
        )
    path = PROTECTION_RULES_PATH.format(id=encode_id(project_id))
    try:
        rows = list(gitlab.paginate(path))
        return ProtectionRead(TagProtection.from_api(rows, source=f"GitLab {version or ''} REST"))
    except GitLabNotFound as exc:
        if parsed is None:  # an unknown version without the endpoint: an older GitLab
            return ProtectionRead(TagProtection(source="no REST tag protection endpoint"))
        note = f"tag protection rules of project {project_id} not found: {exc}"
    except (GitLabError, PolicyError) as exc:
        note = f"tag protection rules of project {project_id} could not be read: {exc}"
    return ProtectionRead(TagProtection(), note + " (GitLab's own run keeps the tags they match)")
