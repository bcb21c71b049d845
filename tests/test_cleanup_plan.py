"""plan_cleanup against GitLab's own cleanup scenarios, plus the plan's outputs.

The scenarios are rebuilt from GitLab's specs:
spec/services/projects/container_repository/third_party/cleanup_tags_service_spec.rb
and spec/support/shared_examples/.../cleanup_tags_service_shared_examples.rb
(tags ``latest A Ba Bb C D E``; latest and A built 1 hour ago, Ba and Bb 5 days
ago, C 1 month ago, D with a config without a date, E without a manifest).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from regops.errors import PolicyError, ValidationError
from regops.ops.cleanup import (
    KEEP_LATEST,
    KEEP_N,
    KEEP_NAME_REGEX_KEEP,
    KEEP_NEWER,
    KEEP_NOT_MATCHED,
    KEEP_OVER_LIST_SIZE,
    KEEP_UNKNOWN_DATE,
    CleanupPlan,
    TagDecision,
    plan_cleanup,
    referenced_blobs,
)
from regops.policy import validate_policy_attributes

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
GITLAB_DATES = {
    "latest": NOW - timedelta(hours=1),
    "A": NOW - timedelta(hours=1),
    "Ba": NOW - timedelta(days=5),
    "Bb": NOW - timedelta(days=5),
    "C": NOW - timedelta(days=30),  # 1.month.ago
    "D": None,
    "E": None,
}


@dataclass
class FakeTag:
    name: str
    created_at: datetime | None
    path: str = ""
    total_size: int | None = None
    manifest: Any = None
    digest: str | None = None


def gitlab_tags() -> list[FakeTag]:
    return [FakeTag(name, date, path=f"group/app:{name}") for name, date in GITLAB_DATES.items()]


def plan(params: dict[str, Any], **kwargs: Any) -> CleanupPlan:
    return plan_cleanup(gitlab_tags(), params, now=NOW, **kwargs)


@pytest.mark.parametrize(
    ("params", "deleted", "before_delete_size"),
    [
        # 'when no params are specified': nothing removed
        ({}, [], 0),
        # 'when regex matching everything is specified' (and the deprecated name_regex)
        ({"name_regex_delete": ".*"}, ["A", "Ba", "Bb", "C", "D", "E"], 6),
        ({"name_regex": ".*"}, ["A", "Ba", "Bb", "C", "D", "E"], 6),
        # '... and latest is not kept'
        (
            {"name_regex_delete": ".*", "keep_latest": False},
            ["latest", "A", "Ba", "Bb", "C", "D", "E"],
            7,
        ),
        # 'when delete regex matching specific tags is used'
        ({"name_regex_delete": "C|D"}, ["C", "D"], 2),
        # '... with overriding allow regex'
        ({"name_regex_delete": "C|D", "name_regex_keep": "C"}, ["D"], 1),
        # 'with name_regex_delete overriding deprecated name_regex'
        ({"name_regex": "C|D", "name_regex_delete": "D"}, ["D"], 1),
        # 'with allow regex value'
        ({"name_regex_delete": ".*", "name_regex_keep": "B.*"}, ["A", "C", "D", "E"], 4),
        # 'when keeping only N tags' (sorted by date; ties come out Bb before Ba)
        ({"name_regex": "A|B.*|C", "keep_n": 1}, ["Bb", "Ba", "C"], 3),
        # 'when not keeping N tags' (not sorted)
        ({"name_regex": "A|B.*|C"}, ["A", "Ba", "Bb", "C"], 4),
        # 'when removing keeping only 3' (D and E, dates unknown, sort as now)
        ({"name_regex_delete": ".*", "keep_n": 3}, ["Bb", "Ba", "C"], 3),
        # 'when removing older than 1 day' (D and E, dates unknown, never deleted)
        ({"name_regex_delete": ".*", "older_than": "1 day"}, ["Ba", "Bb", "C"], 3),
        # 'when combining all parameters' / 'when running a container_expiration_policy'
        ({"name_regex_delete": ".*", "keep_n": 1, "older_than": "1 day"}, ["Bb", "Ba", "C"], 3),
    ],
)
def test_gitlab_scenarios(params: dict[str, Any], deleted: list[str], before_delete_size: int):
    result = plan(params)
    assert result.names_to_delete == deleted
    assert result.before_delete_size == before_delete_size
    assert result.deleted_size == len(deleted)
    assert result.original_size == 7
    assert result.finished
    assert set(result.kept) == set(GITLAB_DATES) - set(deleted)


def test_counts_match_gitlabs_service_response() -> None:
    # 'when keeping only N tags': before_truncate_size 4, after 4, before_delete 3
    assert plan({"name_regex": "A|B.*|C", "keep_n": 1}).counts == {
        "original_size": 7,
        "before_truncate_size": 4,
        "after_truncate_size": 4,
        "before_delete_size": 3,
        "deleted_size": 3,
    }


def test_reasons_for_every_kept_tag() -> None:
    result = plan(
        {
            "name_regex_delete": "[A-D].*",
            "name_regex_keep": "Bb",
            "keep_n": 1,
            "older_than": "1 day",
        }
    )
    assert result.kept == {
        "latest": KEEP_LATEST,
        "Bb": KEEP_NAME_REGEX_KEEP,
        "E": KEEP_NOT_MATCHED,
        "D": KEEP_N,  # unknown date sorts as now: the newest
        "A": KEEP_NEWER,
    }
    assert result.names_to_delete == ["Ba", "C"]
    unknown = plan({"name_regex_delete": ".*", "older_than": "1d"})
    assert unknown.kept["D"] == KEEP_UNKNOWN_DATE and unknown.kept["E"] == KEEP_UNKNOWN_DATE


def test_every_tag_has_one_decision_in_listing_order() -> None:
    result = plan({"name_regex_delete": ".*", "keep_n": 1, "older_than": "1 day"})
    assert [d.name for d in result.decisions] == list(GITLAB_DATES)
    assert all(isinstance(d, TagDecision) for d in result.decisions)
    assert {d.name for d in result.decisions if d.delete} == set(result.names_to_delete)
    assert all(d.reason == "older than 1 day" for d in result.decisions if d.delete)


@pytest.mark.parametrize(
    ("max_list_size", "truncated"), [(10, False), (3, True), (0, False), (None, False)]
)
def test_truncation_like_gitlab(max_list_size: int | None, truncated: bool) -> None:
    # GitLab's 'when truncating the tags list' table (keep_n 1, 7 tags)
    result = plan({"name_regex_delete": ".*", "keep_n": 1}, max_list_size=max_list_size)
    assert result.before_truncate_size == 6
    assert result.after_truncate_size == (3 + 1 if truncated else 6)
    assert result.before_delete_size == (3 if truncated else 5)
    assert result.finished is not truncated


def test_truncation_keeps_the_newest_and_considers_the_oldest() -> None:
    result = plan({"name_regex_delete": ".*", "keep_n": 1}, max_list_size=2)
    # newest first: E D A Bb Ba C -> keep_n keeps E; the oldest two are considered
    assert result.names_to_delete == ["Ba", "C"]
    assert result.kept["E"] == KEEP_N
    assert {n for n, r in result.kept.items() if r == KEEP_OVER_LIST_SIZE} == {"D", "A", "Bb"}
    assert "unfinished" in result.summary()


@pytest.mark.parametrize("field", ["name_regex_delete", "name_regex", "name_regex_keep"])
def test_invalid_regex_raises_policy_error(field: str) -> None:
    # GitLab's 'with invalid regular expressions': '*test*' -> 'invalid regex', nothing deleted
    params = {"name_regex_delete": ".*"} if field == "name_regex_keep" else {}
    with pytest.raises(PolicyError) as caught:
        plan({**params, field: "*test*"})
    assert caught.value.field == field
    assert "not valid RE2 syntax" in str(caught.value)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"keep_n": "many"}, "keep_n"),
        ({"keep_n": -1}, "keep_n"),
        ({"keep_n": True}, "keep_n"),
        ({"older_than": "soon"}, "older_than"),
        ({"keep_latest": "sometimes"}, "keep_latest"),
        ({"name_regex_delete": 5}, "name_regex_delete"),
        ({"name_regex_delete": r"(a)\1"}, "name_regex_delete"),
    ],
)
def test_invalid_policy_names_the_field(params: dict[str, Any], field: str) -> None:
    with pytest.raises(PolicyError) as caught:
        plan(params)
    assert caught.value.field == field


@pytest.mark.parametrize("unset", ["", "null", "None", None])
def test_unset_keep_n_and_older_than_read_alike_in_a_run_and_a_stored_policy(unset) -> None:
    # One parser: "null" (and blank) means unset for a run as for a stored policy.
    everything = plan({"name_regex_delete": ".*", "keep_n": unset, "older_than": unset})
    assert everything.names_to_delete == plan({"name_regex_delete": ".*"}).names_to_delete
    assert everything.names_to_delete  # no keep_n, no older_than: every candidate goes
    stored = validate_policy_attributes({"keep_n": unset, "older_than": unset})
    assert stored == {"keep_n": None, "older_than": None}


def test_blank_name_regex_delete_wins_over_name_regex() -> None:
    # GitLab: name_regex_delete || name_regex, and "" is truthy in Ruby
    assert plan({"name_regex_delete": "", "name_regex": ".*"}).names_to_delete == []


def test_policy_object_and_attributes_dict() -> None:
    @dataclass
    class Policy:
        name_regex: str = ".*"
        name_regex_keep: str | None = "Ba"
        keep_n: int | None = 1
        older_than: str | None = "1d"

    assert plan_cleanup(gitlab_tags(), Policy(), now=NOW).names_to_delete == ["Bb", "C"]

    class OnlyAttributes:
        def __init__(self) -> None:
            self.attributes = {"name_regex": "C", "keep_n": None, "older_than": None}

    assert plan_cleanup(gitlab_tags(), OnlyAttributes(), now=NOW).names_to_delete == ["C"]


def test_keep_n_given_as_digits() -> None:
    assert plan({"name_regex_delete": ".*", "keep_n": "3"}).names_to_delete == ["Bb", "Ba", "C"]


def test_default_now_is_the_current_time() -> None:
    tags = [
        FakeTag("old", datetime.now(timezone.utc) - timedelta(days=8)),
        FakeTag("new", datetime.now(timezone.utc) - timedelta(days=6)),
    ]
    assert plan_cleanup(tags, {"name_regex": ".*", "older_than": "7d"}).names_to_delete == ["old"]


def test_created_at_as_iso_string() -> None:
    tags = [FakeTag("a", "2026-01-01T00:00:00Z"), FakeTag("b", "2026-02-28T00:00:00+00:00")]
    result = plan_cleanup(tags, {"name_regex": ".*", "older_than": "7d"}, now=NOW)
    assert result.names_to_delete == ["a"]


@pytest.mark.parametrize(
    ("tags", "field"),
    [
        ([FakeTag("a", datetime(2026, 1, 1))], "created_at"),  # naive
        ([FakeTag("a", "yesterday")], "created_at"),
        ([FakeTag("a", None), FakeTag("a", None)], "tags"),
        ([FakeTag("", None)], "tags"),
    ],
)
def test_bad_tags_are_refused(tags: list[FakeTag], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        plan_cleanup(tags, {"name_regex": ".*"}, now=NOW)
    assert caught.value.field == field


def test_bad_now_and_max_list_size() -> None:
    with pytest.raises(ValidationError) as caught:
        plan_cleanup([], {}, now=datetime(2026, 1, 1))
    assert caught.value.field == "now"
    with pytest.raises(ValidationError) as caught:
        plan_cleanup([], {}, now=NOW, max_list_size=-1)
    assert caught.value.field == "max_list_size"


def test_anchoring_difference_is_reported() -> None:
    tags = [FakeTag(n, None) for n in ["C", "Cx", "D", "xD", "E"]]
    result = plan_cleanup(tags, {"name_regex_delete": "C|D"}, now=NOW)
    assert result.names_to_delete == ["C", "D"]  # the whole pattern is anchored
    assert len(result.warnings) == 1
    assert "Cx, xD" in result.warnings[0]
    assert plan_cleanup(tags, {"name_regex_delete": "(C|D)"}, now=NOW).warnings == []


# --- freed_bytes -------------------------------------------------------------


@dataclass(frozen=True)
class Descriptor:
    digest: str
    size: int


@dataclass(frozen=True)
class Manifest:
    digest: str
    raw: bytes
    config: Descriptor | None
    layers: tuple[Descriptor, ...]
    children: tuple[Descriptor, ...] = field(default=())


def image(name: str, digest: str, layers: dict[str, int], age_days: float) -> FakeTag:
    manifest = Manifest(
        digest=digest,
        raw=b"x" * 100,
        config=Descriptor(f"config-{digest}", 10),
        layers=tuple(Descriptor(d, s) for d, s in layers.items()),
    )
    return FakeTag(name, NOW - timedelta(days=age_days), manifest=manifest, digest=digest)


def test_freed_bytes_counts_only_blobs_no_kept_tag_uses() -> None:
    tags = [
        image("keep", "m1", {"base": 1000, "app1": 200}, age_days=1),
        image("old1", "m2", {"base": 1000, "app2": 300}, age_days=30),
        image("old2", "m2", {"base": 1000, "app2": 300}, age_days=30),  # same manifest
        image("old3", "m3", {"base": 1000, "app3": 50}, age_days=30),
    ]
    result = plan_cleanup(tags, {"name_regex": "old.*"}, now=NOW)
    assert result.names_to_delete == ["old1", "old2", "old3"]
    # m2 (100) + its config (10) + app2 (300), m3 (100) + config (10) + app3 (50);
    # "base" is still used by "keep"; m2 counted once although two tags point at it.
    assert result.freed_bytes == 100 + 10 + 300 + 100 + 10 + 50


def test_freed_bytes_zero_when_a_kept_tag_shares_the_manifest() -> None:
    tags = [image("v1", "m1", {"l": 5}, 30), image("stable", "m1", {"l": 5}, 30)]
    result = plan_cleanup(tags, {"name_regex": "v1"}, now=NOW)
    assert result.names_to_delete == ["v1"]
    assert result.freed_bytes == 0


def test_freed_bytes_unknown() -> None:
    assert plan({"name_regex": ".*"}).freed_bytes is None  # no manifests
    index = image("multi", "m9", {}, 30)
    index.manifest = Manifest("m9", b"{}", None, (), children=(Descriptor("m-amd64", 500),))
    assert referenced_blobs(index) is None
    tags = [image("a", "m1", {"l": 5}, 30), index]
    assert plan_cleanup(tags, {"name_regex": "a"}, now=NOW).freed_bytes is None


# --- outputs ---------------------------------------------------------------------


def test_repr_is_a_table_with_the_columns() -> None:
    result = plan({"name_regex_delete": ".*", "keep_n": 1, "older_than": "1 day"})
    text = repr(result)
    header = text.splitlines()[1].split()
    assert header == ["repository", "tag", "created_at", "size", "decision", "reason"]
    assert text.splitlines()[0] == "group/app: 7 tags, 3 to delete, 4 kept"
    assert "unknown created_at" in text and "older than 1 day" in text


def test_repr_truncates_long_plans() -> None:
    tags = [FakeTag(f"t{i:03}", None) for i in range(120)]
    text = repr(plan_cleanup(tags, {"name_regex": ".*"}, now=NOW))
    assert "... 70 more" in text
    assert len(text.splitlines()) < 60


def test_html_repr_escapes() -> None:
    result = plan_cleanup([FakeTag("a<b>", None)], {"name_regex": ".*"}, now=NOW)
    html = result._repr_html_()
    assert "<table>" in html and "a&lt;b&gt;" in html and "a<b>" not in html


def test_to_dicts() -> None:
    rows = plan({"name_regex": "C"}).to_dicts()
    assert len(rows) == 7
    assert rows[4] == {
        "repository": "group/app",
        "tag": "C",
        "created_at": (NOW - timedelta(days=30)).isoformat(),
        "size": None,
        "delete": True,
        "decision": "delete",
        "reason": "matched by name_regex",
    }
    assert rows[5]["created_at"] is None and rows[5]["decision"] == "keep"


def test_repr_without_repository_drops_the_column() -> None:
    text = repr(plan_cleanup([FakeTag("a", None)], {"name_regex": ".*"}, now=NOW))
    assert text.splitlines()[1].split() == ["tag", "created_at", "size", "decision", "reason"]
    named = plan_cleanup([FakeTag("a", None)], {"name_regex": ".*"}, now=NOW, repository="g/p")
    assert repr(named).splitlines()[0].startswith("g/p: 1 tags")
