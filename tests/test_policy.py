"""GitLab's ContainerExpirationPolicy rules: allowed values, RE2, messages, 400 body.

Source of the rules and messages: app/models/container_expiration_policy.rb
(inclusion lists, name_regex presence when enabled), app/validators/
untrusted_regexp_validator.rb ("not valid RE2 syntax: <RE2 error>") and Rails'
default messages. spec/models/container_expiration_policy_spec.rb's cases are
rebuilt below.
"""

from __future__ import annotations

import re

import pytest

from regops.errors import PolicyError, ValidationError
from regops.policy import (
    ALLOWED,
    MSG_BLANK,
    MSG_INCLUSION,
    POLICY_DEFAULTS,
    collect_policy_errors,
    compile_gitlab_literal_regex,
    compile_gitlab_regex,
    policy_error_body,
    re2_error,
    validate_policy_attributes,
)

# Valid in Python's re, rejected by RE2 (and so by GitLab).
RE2_ONLY_REJECTED = [r"(a)\1", r"(?=a)", r"(?!a)b", r"(?<=a)b", r"a++", r"(?P<x>a)(?P=x)"]


def test_defaults_are_gitlabs() -> None:
    assert POLICY_DEFAULTS == {
        "enabled": False,
        "cadence": "1d",
        "keep_n": 10,
        "older_than": "90d",
        "name_regex": ".*",
        "name_regex_keep": None,
    }
    assert validate_policy_attributes(POLICY_DEFAULTS, partial=False) == POLICY_DEFAULTS


@pytest.mark.parametrize("cadence", ["1d", "7d", "14d", "1month", "3month"])
def test_allowed_cadences(cadence: str) -> None:
    assert validate_policy_attributes({"cadence": cadence}) == {"cadence": cadence}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        # spec/models/container_expiration_policy_spec.rb
        ("cadence", "123asdf"),
        ("older_than", "123asdf"),
        ("keep_n", "foo"),
        ("enabled", None),
        # outside GitLab's lists
        ("cadence", "2d"),
        ("older_than", "2d"),
        ("older_than", "45d"),
        ("keep_n", 3),
        ("keep_n", 0),
        ("keep_n", True),
        ("enabled", "maybe"),
    ],
)
def test_values_outside_the_lists_are_refused(field: str, value: object) -> None:
    with pytest.raises(PolicyError) as caught:
        validate_policy_attributes({field: value})
    assert caught.value.field == field
    assert MSG_INCLUSION in str(caught.value)


def test_cadence_nil_is_blank_and_not_included() -> None:
    _, errors = collect_policy_errors({"cadence": None})
    assert errors == {"cadence": [MSG_BLANK, MSG_INCLUSION]}


@pytest.mark.parametrize(("field", "value"), [("older_than", None), ("keep_n", None)])
def test_nil_allowed_where_gitlab_allows_it(field: str, value: object) -> None:
    assert validate_policy_attributes({field: value}) == {field: None}


def test_cli_strings_are_normalised() -> None:
    attrs = {"enabled": "TRUE", "keep_n": "25", "older_than": "null", "name_regex": "v.*"}
    assert validate_policy_attributes(attrs) == {
        "enabled": True,
        "keep_n": 25,
        "older_than": None,
        "name_regex": "v.*",
    }
    assert validate_policy_attributes({"enabled": "false", "keep_n": ""}) == {
        "enabled": False,
        "keep_n": None,
    }


def test_every_allowed_keep_n_passes_as_int_and_as_digits() -> None:
    for value in ALLOWED["keep_n"]:
        if value is not None:
            assert validate_policy_attributes({"keep_n": value}) == {"keep_n": value}
            assert validate_policy_attributes({"keep_n": str(value)}) == {"keep_n": value}


def test_name_regex_required_when_enabled() -> None:
    with pytest.raises(PolicyError) as caught:
        validate_policy_attributes({"enabled": True, "name_regex": ""})
    assert caught.value.field == "name_regex"
    assert str(caught.value) == "name_regex: can't be blank"


def test_name_regex_may_be_blank_when_disabled() -> None:
    assert validate_policy_attributes({"enabled": False, "name_regex": None}) == {
        "enabled": False,
        "name_regex": None,
    }


def test_enabling_checks_the_stored_name_regex() -> None:
    current = {**POLICY_DEFAULTS, "name_regex": None}
    with pytest.raises(PolicyError) as caught:
        validate_policy_attributes({"enabled": "true"}, current=current)
    assert caught.value.field == "name_regex"
    record = validate_policy_attributes({"enabled": True, "name_regex": "v.*"}, current=current)
    assert record == {**POLICY_DEFAULTS, "enabled": True, "name_regex": "v.*"}


@pytest.mark.parametrize("pattern", RE2_ONLY_REJECTED)
def test_re2_only_rejections(pattern: str) -> None:
    re.compile(pattern)  # Python's re accepts it ...
    assert re2_error(pattern) is not None  # ... RE2 does not
    for field in ("name_regex", "name_regex_keep"):
        with pytest.raises(PolicyError) as caught:
            validate_policy_attributes({"enabled": True, "name_regex": ".*", field: pattern})
        assert caught.value.field == field
        assert "not valid RE2 syntax: " in str(caught.value)
        with pytest.raises(PolicyError):
            compile_gitlab_regex(pattern, field)


def test_re2_message_is_gitlabs() -> None:
    # GitLab's own spec for tag protection rules shows RE2's text after the prefix:
    # "not valid RE2 syntax: no argument for repetition operator: *"
    with pytest.raises(PolicyError) as caught:
        validate_policy_attributes({"enabled": True, "name_regex": "*test*"})
    assert str(caught.value) == (
        "name_regex: not valid RE2 syntax: no argument for repetition operator: *"
    )


def test_invalid_regex_accepted_on_a_disabled_policy_like_gitlab() -> None:
    assert validate_policy_attributes({"enabled": False, "name_regex": "*test*"})


def test_name_regex_keep_length_limit() -> None:
    ok = "a" * 255
    assert validate_policy_attributes({"name_regex_keep": ok}) == {"name_regex_keep": ok}
    with pytest.raises(PolicyError) as caught:
        validate_policy_attributes({"name_regex_keep": ok + "a"})
    assert caught.value.field == "name_regex_keep"
    assert "is too long (maximum is 255 characters)" in str(caught.value)


def test_name_regex_delete_is_an_alias_that_wins() -> None:
    attrs = {"name_regex": "old", "name_regex_delete": "new"}
    assert validate_policy_attributes(attrs) == {"name_regex": "new"}


def test_unknown_attribute_is_refused() -> None:
    with pytest.raises(PolicyError) as caught:
        validate_policy_attributes({"keepn": 5})
    assert caught.value.field == "keepn"


def test_policy_error_is_a_validation_error_with_all_errors() -> None:
    with pytest.raises(ValidationError) as caught:
        validate_policy_attributes({"keep_n": 3, "cadence": "2d"})
    assert caught.value.errors == {  # type: ignore[attr-defined]
        "keep_n": [MSG_INCLUSION],
        "cadence": [MSG_INCLUSION],
    }


def test_policy_error_body_has_gitlabs_shape() -> None:
    with pytest.raises(PolicyError) as caught:
        validate_policy_attributes({"keep_n": 3, "older_than": "2d"})
    assert policy_error_body(caught.value) == {
        "message": {
            "container_expiration_policy.keep_n": [MSG_INCLUSION],
            "container_expiration_policy.older_than": [MSG_INCLUSION],
        }
    }
    single = PolicyError("cadence", "is not included in the list")
    assert policy_error_body(single) == {
        "message": {"container_expiration_policy.cadence": ["is not included in the list"]}
    }


def test_compiled_regex_is_fully_anchored() -> None:
    regex = compile_gitlab_regex("C|D", "name_regex")
    assert regex.search("C") and regex.search("D")
    assert not regex.search("Cx") and not regex.search("xD") and not regex.search("xCx")
    literal = compile_gitlab_literal_regex("C|D", "name_regex")
    assert literal.search("Cx") and literal.search("xD")  # GitLab's own anchoring


@pytest.mark.parametrize("pattern", [None, ""])
def test_blank_regex_matches_no_tag(pattern: str | None) -> None:
    regex = compile_gitlab_regex(pattern, "name_regex_keep")
    assert not any(regex.search(name) for name in ["latest", "a", "v1.0", ".*"])


def test_a_refused_value_names_the_allowed_ones_but_gitlab_bodies_stay_gitlabs():
    with pytest.raises(PolicyError) as info:
        validate_policy_attributes({"keep_n": 7})
    assert str(info.value) == (
        "keep_n: is not included in the list (allowed: 1, 5, 10, 25, 50, 100, null)"
    )
    # the stand-in answers with GitLab's exact words (lib/api/helpers.rb render_validation_error!)
    assert policy_error_body(info.value) == {
        "message": {"container_expiration_policy.keep_n": ["is not included in the list"]}
    }
