"""Policy values by GitLab version, every RE2 pattern GitLab accepts, tag protection rules.

Sources: gitlabhq app/models/container_expiration_policy.rb (older_than_options;
60d added in commit c7be549c, GitLab 14.4), app/graphql/types/
container_expiration_policy_older_than_enum.rb (OPTIONS_MAPPING) and its spec
(spec/graphql/types/container_expiration_policy_older_than_enum_spec.rb: eleven
values), lib/gitlab/untrusted_regexp.rb (match?: scan with "(" + source + ")"),
doc/api/container_registry_protection_tag_rules.md (GitLab 18.7, example rows).
"""

from __future__ import annotations

import pytest
import responses

from regops.errors import PolicyError
from regops.gitlab.client import GitLabClient
from regops.gitlab.features import older_than_enum, policy_options, tag_protection
from regops.policy import (
    PolicyOptions,
    compile_gitlab_literal_regex,
    compile_gitlab_regex,
    validate_policy_attributes,
)

GITLAB = "https://gitlab.example.com"
ENUM_NAMES = [  # the GraphQL enum spec's expected_values
    "ONE_DAY",
    "THREE_DAYS",
    "SEVEN_DAYS",
    "FOURTEEN_DAYS",
    "THIRTY_DAYS",
    "SIXTY_DAYS",
    "NINETY_DAYS",
    "ONE_HUNDRED_EIGHTY_DAYS",
    "THREE_HUNDRED_SIXTY_FIVE_DAYS",
    "SEVEN_HUNDRED_THIRTY_DAYS",
    "ONE_THOUSAND_NINETY_FIVE_DAYS",
]


@pytest.mark.parametrize(
    ("version", "value", "accepted"),
    [
        ("14.3.2-ee", "60d", False),
        ("14.4.0", "60d", True),
        ("17.5.1", "60d", True),
        ("17.5.1", "90d", True),
        ("14.3.0", "90d", True),
        ("17.5.1", "1095d", False),  # by version alone: only what the model is known to list
        (None, "1095d", True),  # no GitLab known: any value some GitLab accepts
        (None, "2d", False),
    ],
)
def test_older_than_by_version(version: str | None, value: str, accepted: bool):
    options = PolicyOptions.for_gitlab(version)
    if accepted:
        assert validate_policy_attributes({"older_than": value}, options=options) == {
            "older_than": value
        }
    else:
        with pytest.raises(PolicyError, match="older_than: is not included in the list"):
            validate_policy_attributes({"older_than": value}, options=options)


def test_the_graphql_enum_decides_when_known():
    options = PolicyOptions.for_gitlab("14.3.0", ENUM_NAMES)  # the schema wins over the version
    assert options.older_than == (
        "1d", "3d", "7d", "14d", "30d", "60d", "90d", "180d", "365d", "730d", "1095d"
    )  # fmt: skip
    assert validate_policy_attributes({"older_than": "3d"}, options=options)


@responses.activate
def test_policy_options_read_the_enum_by_graphql_introspection():
    enum = responses.post(
        GITLAB + "/api/graphql",
        json={"data": {"__type": {"enumValues": [{"name": n} for n in ENUM_NAMES[2:7]]}}},
    )
    options = policy_options(GitLabClient(GITLAB, "t0k3n"), version="17.5.1")
    assert options.older_than == ("7d", "14d", "30d", "60d", "90d")
    body = enum.calls[0].request.body
    assert b"ContainerExpirationPolicyOlderThanEnum" in body and b"__type" in body


@responses.activate
def test_policy_options_fall_back_to_the_version():
    responses.post(GITLAB + "/api/graphql", status=403, json={"message": "403 Forbidden"})
    client = GitLabClient(GITLAB, "t0k3n")
    assert older_than_enum(client) is None
    assert policy_options(client, version="14.3.0").older_than == ("7d", "14d", "30d", "90d")


# -- RE2 patterns GitLab accepts ----------------------------------------------------


def test_quote_without_end_compiles_and_matches_the_literal():
    assert compile_gitlab_regex(r"v\Q1.0", "name_regex").search("v1.0")
    assert not compile_gitlab_regex(r"v\Q1.0", "name_regex").search("v1x0")
    literal = compile_gitlab_literal_regex(r"v\Q1.0", "name_regex")
    assert not literal.search("v1.0")  # GitLab's scan form "(\Av\Q1.0\z)" does not compile


@pytest.mark.parametrize(
    ("pattern", "name", "gitlab"),
    [
        ("C|D", "Cx", True),  # \AC|D\z: only the outer alternatives anchored
        ("C|D", "xD", True),
        ("(C|D)", "Cx", False),
        ("(a)|b", "b", True),  # a capture group: GitLab scans with the regex itself
        ("(a)|b", "xa", False),
        (".*", "", False),  # match? is false for a blank name
    ],
)
def test_gitlab_literal_matching(pattern: str, name: str, gitlab: bool):
    assert bool(compile_gitlab_literal_regex(pattern, "name_regex").search(name)) is gitlab


def test_invalid_re2_is_a_policy_error_naming_the_field():
    with pytest.raises(PolicyError) as caught:
        compile_gitlab_regex("(a", "name_regex_keep")
    assert caught.value.field == "name_regex_keep"
    assert "not valid RE2 syntax: missing )" in str(caught.value)


# -- tag protection rules from GitLab ------------------------------------------------


@responses.activate
def test_tag_protection_read_from_rest_on_18_7():
    # The example response of doc/api/container_registry_protection_tag_rules.md
    rows = [
        {
            "id": 1,
            "project_id": 7,
            "tag_name_pattern": "v*-release",
            "minimum_access_level_for_push": "maintainer",
            "minimum_access_level_for_delete": "maintainer",
        },
        {
            "id": 2,
            "project_id": 7,
            "tag_name_pattern": "latest",
            "minimum_access_level_for_push": "owner",
            "minimum_access_level_for_delete": "owner",
        },
    ]
    listed = responses.get(GITLAB + "/api/v4/projects/7/registry/protection/tag/rules", json=rows)
    read = tag_protection(GitLabClient(GITLAB, "t0k3n"), 7, "18.7.0")
    assert listed.call_count == 1 and read.note is None
    assert [r.pattern for r in read.rules.rules] == ["v*-release", "latest"]
    # RE2, unanchored: "v*-release" is "any v's, then -release" somewhere in the name
    assert read.rules.reason("1.0-release") == "protected"
    assert read.rules.reason("latest-x") == "protected" and read.rules.reason("main") is None


def test_tag_protection_by_version_without_a_request():
    client = GitLabClient(GITLAB, "t0k3n")  # no HTTP mock: a request would fail
    assert not tag_protection(client, 7, "17.5.0").rules
    assert tag_protection(client, 7, "17.5.0").note is None
    unreadable = tag_protection(client, 7, "18.2.1")
    assert not unreadable.rules and "REST only from 18.7" in (unreadable.note or "")


@responses.activate
def test_unreadable_rules_become_a_note_not_a_silent_empty_list():
    responses.get(
        GITLAB + "/api/v4/projects/7/registry/protection/tag/rules",
        status=403,
        json={"message": "403 Forbidden"},
    )
    read = tag_protection(GitLabClient(GITLAB, "t0k3n"), 7, "18.7.0")
    assert not read.rules
    assert "could not be read" in (read.note or "") and "403" in (read.note or "")
