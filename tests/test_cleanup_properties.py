"""Properties every cleanup plan keeps, whatever the tags and the policy.

What must never be deleted: ``latest`` (when kept), anything the keep regex
matches, the newest ``keep_n`` candidates, anything newer than the cutoff or
with an unknown date (when ``older_than`` is set). And every tag is decided once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from regops.ops.cleanup import LATEST_TAG, plan_cleanup
from regops.policy import compile_gitlab_regex

NOW = datetime(2026, 3, 1, tzinfo=timezone.utc)
TAG_ALPHABET = "abcAB01.-_"
# Patterns that are valid RE2 and exercise anchoring, alternation and classes.
PATTERNS = [".*", "a.*", "b|a", "[ab]+", "A.*|.*1", "latest", "(a|b)0", "", "x"]
# older_than values and their lengths, written out here (GitLab: a month is 30 days)
# rather than read back from the planner's own parse.
OLDER_THAN_SPANS = {
    "1d": timedelta(days=1),
    "7d": timedelta(days=7),
    "14d": timedelta(days=14),
    "1month": timedelta(days=30),
    "1h": timedelta(hours=1),
}
OLDER_THAN = [None, *OLDER_THAN_SPANS]


@dataclass(frozen=True)
class Tag:
    name: str
    created_at: datetime | None


@st.composite
def tag_lists(draw: Any) -> list[Tag]:
    names = draw(
        st.lists(
            st.one_of(st.just(LATEST_TAG), st.text(TAG_ALPHABET, min_size=1, max_size=4)),
            unique=True,
            max_size=25,
        )
    )
    ages = st.one_of(st.none(), st.integers(min_value=-3600, max_value=200 * 86400))
    return [
        Tag(name, None if (age := draw(ages)) is None else NOW - timedelta(seconds=age))
        for name in names
    ]


policies = st.fixed_dictionaries(
    {
        "name_regex_delete": st.sampled_from([*PATTERNS, None]),
        "name_regex_keep": st.sampled_from([*PATTERNS, None]),
        "keep_n": st.one_of(st.none(), st.integers(min_value=0, max_value=30)),
        "older_than": st.sampled_from(OLDER_THAN),
        "keep_latest": st.booleans(),
    }
)


def candidates(tags: list[Tag], policy: dict[str, Any]) -> list[Tag]:
    """Tags past the latest and name steps, computed independently of the planner."""
    delete = compile_gitlab_regex(policy["name_regex_delete"], "name_regex_delete")
    keep = compile_gitlab_regex(policy["name_regex_keep"], "name_regex_keep")
    return [
        tag
        for tag in tags
        if not (policy["keep_latest"] and tag.name == LATEST_TAG)
        and delete.search(tag.name)
        and not keep.search(tag.name)
    ]


@settings(max_examples=300, deadline=None, database=None)
@given(tags=tag_lists(), policy=policies)
def test_plan_invariants(tags: list[Tag], policy: dict[str, Any]) -> None:
    plan = plan_cleanup(tags, policy, now=NOW)
    deleted = {tag.name for tag in plan.to_delete}

    # every tag gets exactly one decision, in listing order, consistent with to_delete
    assert [d.name for d in plan.decisions] == [tag.name for tag in tags]
    assert {d.name for d in plan.decisions if d.delete} == deleted
    assert len(deleted) == len(plan.to_delete)
    assert set(plan.kept) | deleted == {tag.name for tag in tags}
    assert not set(plan.kept) & deleted

    # latest never deleted when kept
    if policy["keep_latest"]:
        assert LATEST_TAG not in deleted

    # nothing the keep regex matches, nothing the delete regex misses
    keep = compile_gitlab_regex(policy["name_regex_keep"], "name_regex_keep")
    delete = compile_gitlab_regex(policy["name_regex_delete"], "name_regex_delete")
    assert not any(keep.search(name) for name in deleted)
    assert all(delete.search(name) for name in deleted)

    # at least min(keep_n, candidates) candidates kept
    pool = candidates(tags, policy)
    if policy["keep_n"] is not None:
        kept_candidates = [tag for tag in pool if tag.name not in deleted]
        assert len(kept_candidates) >= min(policy["keep_n"], len(pool))
        if policy["older_than"] is None:  # keep_n alone: exactly the rest go
            assert len(deleted) == max(0, len(pool) - policy["keep_n"])
        # and they are the newest: no deleted tag is newer than a keep_n-kept one
        kept_by_n = [tag for tag in pool if plan.kept.get(tag.name) == "keep_n"]
        for tag in plan.to_delete:
            for newer in kept_by_n:
                assert (tag.created_at or NOW) <= (newer.created_at or NOW)

    # nothing newer than the cutoff, nothing with an unknown date, when older_than is set
    if policy["older_than"] is not None:
        cutoff = NOW - OLDER_THAN_SPANS[policy["older_than"]]
        assert all(tag.created_at is not None and tag.created_at < cutoff for tag in plan.to_delete)
        if policy["keep_n"] is None:  # older_than alone: exactly the dated, older candidates
            old = {tag.name for tag in pool if tag.created_at and tag.created_at < cutoff}
            assert deleted == old

    # without keep_n and older_than, every candidate goes (GitLab deletes all matches)
    if policy["keep_n"] is None and policy["older_than"] is None:
        assert deleted == {tag.name for tag in pool}

    assert plan.finished and plan.original_size == len(tags)


@settings(max_examples=200, deadline=None, database=None)
@given(tags=tag_lists(), policy=policies, max_list_size=st.integers(min_value=1, max_value=10))
def test_capped_plan_deletes_a_subset_and_stays_safe(
    tags: list[Tag], policy: dict[str, Any], max_list_size: int
) -> None:
    full = plan_cleanup(tags, policy, now=NOW)
    capped = plan_cleanup(tags, policy, now=NOW, max_list_size=max_list_size)
    capped_names = set(capped.names_to_delete)
    assert capped_names <= set(full.names_to_delete)
    assert capped.before_delete_size <= max_list_size
    assert len(capped.decisions) == len(tags)
    assert capped.finished == (capped.after_truncate_size == capped.before_truncate_size)
