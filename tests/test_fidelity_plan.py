"""plan_cleanup against GitLab's metadata-database cleanup service, protection rules,
and anchoring warnings computed as a second plan.

Scenarios rebuilt from gitlabhq's
spec/services/projects/container_repository/gitlab/cleanup_tags_service_spec.rb
(commit 0c872e02b2c822e3397515ec324051ff540f0cd5) and the shared examples
spec/support/shared_examples/services/container_registry_cleanup_tags_service_shared_examples.rb:
tags ``latest A Ba Bb C D E`` listed in that order; latest and A pushed 1 hour
ago, Ba re-pushed (``updated_at``) 5 days ago, Bb 6 days ago, C pushed a month
ago, D and E without a date; pages of 1000 (one page) or of 2
(``stub_const TAGS_PAGE_SIZE``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from regops.errors import ValidationError
from regops.ops.cleanup import (
    KEEP_IMMUTABLE,
    KEEP_N,
    KEEP_NEWER,
    KEEP_NOT_MATCHED,
    KEEP_PROTECTED,
    plan_cleanup,
)
from regops.policy import TagProtection, TagProtectionRule

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


@dataclass
class ApiTag:
    """A tag as the registry's GitLab API hands it: name, created_at, updated_at."""

    name: str
    created_at: datetime | None = None
    updated_at: datetime | None = None


def spec_tags() -> list[ApiTag]:
    # tag_raw_response: B* tags carry the time as updated_at, the others as created_at.
    hour, month = NOW - timedelta(hours=1), NOW - timedelta(days=30)
    return [
        ApiTag("latest", created_at=hour),
        ApiTag("A", created_at=hour),
        ApiTag("Ba", updated_at=NOW - timedelta(days=5)),
        ApiTag("Bb", updated_at=NOW - timedelta(days=6)),
        ApiTag("C", created_at=month),
        ApiTag("D"),
        ApiTag("E"),
    ]


ALL = {"name_regex_delete": ".*"}
KEEP_N_1 = {"name_regex": "A|B.*|C", "keep_n": 1}
NOT_KEEP_N = {"name_regex": "A|B.*|C"}
KEEP_3 = {"name_regex_delete": ".*", "keep_n": 3}
OLDER_1D = {"name_regex_delete": ".*", "older_than": "1 day"}
COMBINED = {"name_regex_delete": ".*", "keep_n": 1, "older_than": "1 day"}

# (params, page size, deleted per page) from GitLab's spec, verbatim.
GITLAB_SPEC = [
    (ALL, 2, [["A"], ["Ba", "Bb"], ["C", "D"], ["E"]]),
    ({**ALL, "keep_latest": False}, 2, [["latest", "A"], ["Ba", "Bb"], ["C", "D"], ["E"]]),
    ({"name_regex_delete": "C|D"}, 2, [["C", "D"]]),
    ({"name_regex_delete": "C|D", "name_regex_keep": "C"}, 2, [["D"]]),
    ({"name_regex_delete": ".*", "name_regex_keep": "B.*"}, 2, [["A"], ["C", "D"], ["E"]]),
    (KEEP_N_1, 2, [["Bb"]]),
    (NOT_KEEP_N, 2, [["A"], ["Ba", "Bb"], ["C"]]),
    (KEEP_3, 2, []),
    (OLDER_1D, 2, [["Ba", "Bb"], ["C"]]),
    (COMBINED, 2, [["Bb"], ["C"]]),
    (ALL, 1000, [["A", "Ba", "Bb", "C", "D", "E"]]),
    ({"name_regex_delete": "C|D"}, 1000, [["C", "D"]]),
    ({"name_regex_delete": "C|D", "name_regex_keep": "C"}, 1000, [["D"]]),
    ({"name_regex_delete": ".*", "name_regex_keep": "B.*"}, 1000, [["A", "C", "D", "E"]]),
    (KEEP_N_1, 1000, [["Ba", "Bb", "C"]]),
    (NOT_KEEP_N, 1000, [["A", "Ba", "Bb", "C"]]),
    (KEEP_3, 1000, [["Ba", "Bb", "C"]]),
    (OLDER_1D, 1000, [["Ba", "Bb", "C"]]),
    (COMBINED, 1000, [["Ba", "Bb", "C"]]),
]


@pytest.mark.parametrize(("params", "page_size", "pages"), GITLAB_SPEC)
def test_gitlab_service_spec_scenarios(params: dict[str, Any], page_size: int, pages: list):
    plan = plan_cleanup(spec_tags(), params, now=NOW, service="gitlab", page_size=page_size)
    deleted = [name for page in pages for name in page]
    assert plan.names_to_delete == deleted
    # expected_service_response: original_size = all tags, before_delete_size = deleted.size
    assert plan.counts == {
        "original_size": 7,
        "before_delete_size": len(deleted),
        "deleted_size": len(deleted),
    }
    assert plan.pages == (4 if page_size == 2 else 1)


def test_four_single_page_scenarios_differ_between_the_services():
    """The issue's count: of GitLab's single-page cases, these give other deletes under
    the third-party rules (build time = created_at only, one list)."""
    differ = []
    for params, page_size, pages in GITLAB_SPEC:
        if page_size != 1000:
            continue
        third = plan_cleanup(spec_tags(), params, now=NOW).names_to_delete
        if third != [n for page in pages for n in page]:
            differ.append(params)
    assert differ == [KEEP_N_1, KEEP_3, OLDER_1D, COMBINED]


def test_thousand_two_hundred_tags_keep_n_ten_keeps_twenty():
    tags = [
        ApiTag(f"t{i:04d}", created_at=NOW - timedelta(days=100, minutes=i)) for i in range(1200)
    ]
    policy = {"name_regex_delete": ".*", "keep_n": 10}
    gitlab = plan_cleanup(tags, policy, now=NOW, service="gitlab")
    kept = [name for name, why in gitlab.kept.items() if why == KEEP_N]
    # page 1 = t0000..t0999 (newest t0000..t0009), page 2 = t1000..t1199 (t1000..t1009)
    assert kept == [f"t{i:04d}" for i in (*range(10), *range(1000, 1010))]
    assert gitlab.pages == 2 and gitlab.deleted_size == 1180
    third = plan_cleanup(tags, policy, now=NOW)
    assert len(third.kept) == 10 and third.deleted_size == 1190


def test_a_re_pushed_tag_is_dated_by_its_push():
    """Built 120 days ago, re-pushed yesterday: GitLab's metadata-database service keeps it
    under older_than 90d; the third-party one dates by build time and deletes it."""
    built = NOW - timedelta(days=120)
    tag = ApiTag("v1", created_at=built, updated_at=NOW - timedelta(days=1))
    policy = {"name_regex_delete": ".*", "older_than": "90d"}
    assert plan_cleanup([tag], policy, now=NOW, service="gitlab").kept == {"v1": KEEP_NEWER}

    @dataclass
    class Built:  # the third-party service reads the image config's build time
        name: str
        created_at: datetime

    assert plan_cleanup([Built("v1", built)], policy, now=NOW).names_to_delete == ["v1"]


def test_the_gitlab_service_refuses_a_cap_and_odd_arguments():
    with pytest.raises(ValidationError, match="third-party service only"):
        plan_cleanup(spec_tags(), ALL, now=NOW, service="gitlab", max_list_size=3)
    with pytest.raises(ValidationError) as caught:
        plan_cleanup(spec_tags(), ALL, now=NOW, service="GitLab")
    assert caught.value.field == "service"
    with pytest.raises(ValidationError) as caught:
        plan_cleanup(spec_tags(), ALL, now=NOW, service="gitlab", page_size=0)
    assert caught.value.field == "page_size"
    with pytest.raises(ValidationError) as caught:
        plan_cleanup([ApiTag("x", updated_at="yesterday")], ALL, service="gitlab")  # type: ignore[arg-type]
    assert caught.value.field == "updated_at"


# -- protection ------------------------------------------------------------------


def test_protected_and_immutable_tags_are_kept_after_every_other_step():
    rules = TagProtection(
        (
            TagProtectionRule("^B", "maintainer", "owner"),  # unanchored: GitLab's match?
            TagProtectionRule("C", None, None),  # both levels null: immutable
        )
    )
    tags = [ApiTag(t.name, t.created_at or t.updated_at) for t in spec_tags()]  # both services
    for service in ("third_party", "gitlab"):
        plan = plan_cleanup(tags, COMBINED, now=NOW, service=service, protection=rules)
        assert plan.names_to_delete == []
        assert plan.protected == {"Ba": KEEP_PROTECTED, "Bb": KEEP_PROTECTED, "C": KEEP_IMMUTABLE}
        # keep_n counted them as candidates, as GitLab drops them only when deleting
        assert plan.kept["E"] in (KEEP_N, "unknown created_at")
        assert plan.before_delete_size == 3 and plan.deleted_size == 0


def test_protection_rule_matches_like_untrusted_regexp():
    rule = TagProtectionRule("v.*-release")
    assert rule.matches("v1-release") and rule.matches("xv1-release-y")  # unanchored
    assert not rule.matches("release")
    assert TagProtectionRule("latest", "owner", "owner").immutable is False
    assert (
        TagProtection((TagProtectionRule("a"), TagProtectionRule("a", "owner", "owner"))).reason(
            "a"
        )
        == KEEP_IMMUTABLE
    )  # the most restrictive rule


# -- anchoring: a second plan GitLab's way -----------------------------------------


@dataclass
class Built:
    name: str
    created_at: datetime | None


def test_quote_pattern_plans_without_error_and_warns():
    tags = [Built("v1.0", NOW - timedelta(days=9)), Built("v2.0", NOW - timedelta(days=9))]
    plan = plan_cleanup(tags, {"name_regex_delete": r"v\Q1.0"}, now=NOW)
    assert plan.names_to_delete == ["v1.0"]  # regops closes the quote: literal "v1.0"
    # GitLab's \Av\Q1.0\z quotes the \z (and its scan's ")"): it matches nothing.
    assert len(plan.warnings) == 1 and "GitLab would keep v1.0" in plan.warnings[0]


def test_knock_on_keep_n_effects_are_named():
    """``v1|main-.*`` with keep_n 1: GitLab's \\Av1|main-.*\\z also lets ``v10`` in, which
    takes the keep_n slot, so GitLab deletes ``main-1`` too; v10 itself is kept both ways."""
    tags = [
        Built("v10", NOW - timedelta(days=1)),
        Built("main-1", NOW - timedelta(days=2)),
        Built("main-2", NOW - timedelta(days=3)),
        Built("v1", NOW - timedelta(days=4)),
    ]
    plan = plan_cleanup(tags, {"name_regex_delete": "v1|main-.*", "keep_n": 1}, now=NOW)
    assert plan.names_to_delete == ["main-2", "v1"]
    assert plan.kept == {"v10": KEEP_NOT_MATCHED, "main-1": KEEP_N}
    assert len(plan.warnings) == 1
    assert plan.warnings[0].endswith("GitLab would also delete main-1")


def test_no_warning_when_both_anchorings_agree():
    tags = [Built("C", None), Built("Cx", None)]
    assert plan_cleanup(tags, {"name_regex_delete": "(C|D)"}, now=NOW).warnings == []
