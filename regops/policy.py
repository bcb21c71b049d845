"""Cleanup policies: GitLab's rules for their attributes, and the value a run uses.

Two things, one set of coercions (``keep_n: "null"`` means unset everywhere):

- :func:`validate_policy_attributes`: what GitLab's API accepts for a stored
  policy (``PUT /projects/:id`` with ``container_expiration_policy_attributes``);
- :class:`CleanupPolicy`: the frozen value a cleanup run (the planner, the
  sandbox's bulk delete, the models) takes, parsed once from a mapping with
  the API's names or from a policy object.

What ``ContainerExpirationPolicy`` accepts (app/models/container_expiration_policy.rb):
the allowed values of ``cadence``, ``keep_n`` and ``older_than``, RE2-only
regexes (``UntrustedRegexpValidator``: ``not valid RE2 syntax: <RE2 error>``),
``name_regex`` required when the policy is enabled, with Rails' standard messages
(``is not included in the list``, ``can't be blank``). Used by the models, the
cleanup planner and the sandbox's GitLab stand-in, so all three agree.

The ``older_than`` values differ by GitLab version (:class:`PolicyOptions`):
``7d 14d 30d 90d``, ``60d`` since GitLab 14.4 (commit c7be549c), and in current
GitLab the eleven values of ``Types::ContainerExpirationPolicyOlderThanEnum``
(``1d 3d 7d 14d 30d 60d 90d 180d 365d 730d 1095d``), which regops reads from the
connected GitLab's GraphQL schema. Without a connected GitLab every value some
GitLab accepts passes (a stored policy never fails to load); GitLab has the
last word when the value is sent.

Deliberate differences from GitLab, each stricter:

- unknown attribute names are refused (GitLab's API drops them silently), so a
  typo on the command line (``keepn=5``) is an error, not a no-op;
- ``name_regex_keep`` longer than 255 characters is a validation error here; in
  GitLab it is a database text limit (migration ``add_text_limit``), so the API
  answers with a server error instead of a 400.

Tag protection rules (``ContainerRegistry::Protection::TagRule``) are values
too: :class:`TagProtection` says which tag names a rule keeps, with GitLab's
unanchored RE2 match.

>>> validate_policy_attributes({"keep_n": "5", "enabled": "true", "name_regex": ".*"})
{'keep_n': 5, 'enabled': True, 'name_regex': '.*'}
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import re2

from regops.durations import parse_duration
from regops.errors import PolicyError, ValidationError


class CompiledRegex(Protocol):
    """What regops uses of a compiled RE2 pattern (the re2 package has no type information)."""

    def search(self, text: str) -> object: ...  # a match object, or None

    @property
    def groups(self) -> int: ...  # capture groups in the pattern


LATEST_TAG = "latest"  # GitLab's Tag#latest?: the name, never deleted by a policy run

CADENCE_OPTIONS = ("1d", "7d", "14d", "1month", "3month")
KEEP_N_OPTIONS = (1, 5, 10, 25, 50, 100)
# older_than before GitLab 14.4 ...
OLDER_THAN_CLASSIC = ("7d", "14d", "30d", "90d")
# ... 60d added in GitLab 14.4 (gitlab-org/gitlab commit c7be549c, 2021-09-29) ...
OLDER_THAN_60D_SINCE = (14, 4)
# ... and current GitLab's GraphQL enum (app/graphql/types/
# container_expiration_policy_older_than_enum.rb, OPTIONS_MAPPING), which lists
# the model's older_than_options: enum value name -> the stored value.
OLDER_THAN_ENUM = {
    "ONE_DAY": "1d",
    "THREE_DAYS": "3d",
    "SEVEN_DAYS": "7d",
    "FOURTEEN_DAYS": "14d",
    "THIRTY_DAYS": "30d",
    "SIXTY_DAYS": "60d",
    "NINETY_DAYS": "90d",
    "ONE_HUNDRED_EIGHTY_DAYS": "180d",
    "THREE_HUNDRED_SIXTY_FIVE_DAYS": "365d",
    "SEVEN_HUNDRED_THIRTY_DAYS": "730d",
    "ONE_THOUSAND_NINETY_FIVE_DAYS": "1095d",
}
# Every older_than some GitLab accepts, in GitLab's order.
OLDER_THAN_OPTIONS = tuple(OLDER_THAN_ENUM.values())
# Allowed values per attribute; None means "unset" where GitLab allows nil.
ALLOWED: dict[str, tuple[Any, ...]] = {
    "enabled": (True, False),
    "cadence": CADENCE_OPTIONS,
    "keep_n": (*KEEP_N_OPTIONS, None),
    "older_than": (*OLDER_THAN_OPTIONS, None),
}
# GitLab's database text limit on name_regex_keep.
NAME_REGEX_KEEP_MAX_LENGTH = 255
# What a new project's policy looks like in GitLab.
POLICY_DEFAULTS: dict[str, Any] = {
    "enabled": False,
    "cadence": "1d",
    "keep_n": 10,
    "older_than": "90d",
    "name_regex": ".*",
    "name_regex_keep": None,
}
POLICY_ATTRIBUTES = tuple(POLICY_DEFAULTS)
# The API's newer name for name_regex; it wins when both are given (as in GitLab).
NAME_REGEX_ALIAS = "name_regex_delete"

# Rails' default validation messages, as GitLab returns them.
MSG_INCLUSION = "is not included in the list"
MSG_BLANK = "can't be blank"
MSG_TOO_LONG = "is too long (maximum is {count} characters)"
MSG_RE2 = "not valid RE2 syntax: {error}"
MSG_UNKNOWN = "is not a container expiration policy attribute"

TRUE_WORDS = frozenset({"true", "t", "yes", "y", "1", "on"})
FALSE_WORDS = frozenset({"false", "f", "no", "n", "0", "off"})
# Words that mean "unset" in key=value input (keep_n=null, older_than=).
NULL_WORDS = frozenset({"", "null", "none", "nil"})
# Patterns compiled per process; policies reuse a handful of patterns.
REGEX_CACHE_SIZE = 256
# Never log RE2 parse errors to stderr: regops reports them as PolicyError.
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False
_MATCH_NOTHING = r"\A\z"
# RE2's \Q quotes everything up to \E or the end of the pattern: a pattern ending
# inside \Q would swallow the closing group of \A(?:p)\z, so \E closes it first.
_END_QUOTE = r"\E"


@dataclass(frozen=True)
class PolicyOptions:
    """The ``cadence``, ``keep_n`` and ``older_than`` values one GitLab accepts.

    ``PolicyOptions()`` accepts every value some GitLab version accepts (used
    when no GitLab is connected); :meth:`for_gitlab` narrows ``older_than`` to
    what the connected GitLab accepts.

    >>> PolicyOptions.for_gitlab("14.3.0").older_than
    ('7d', '14d', '30d', '90d')
    >>> "60d" in PolicyOptions.for_gitlab("14.4.2-ee").older_than
    True
    """

    older_than: tuple[str, ...] = OLDER_THAN_OPTIONS
    keep_n: tuple[int, ...] = KEEP_N_OPTIONS
    cadence: tuple[str, ...] = CADENCE_OPTIONS
    source: str = "any GitLab version"

    @classmethod
    def for_gitlab(
        cls, version: str | None, older_than_enum: Iterable[str] | None = None
    ) -> PolicyOptions:
        """What GitLab ``version`` accepts; ``older_than_enum`` (the enum value names
        its GraphQL schema lists) wins when given, as it is GitLab's own list."""
        if older_than_enum is not None:
            names = list(older_than_enum)
            values = tuple(v for name, v in OLDER_THAN_ENUM.items() if name in names)
            if values:
                return cls(older_than=values, source=f"GitLab {version or '?'} GraphQL enum")
        parsed = parse_version(version)
        if parsed is None:
            return cls()
        if parsed < OLDER_THAN_60D_SINCE:
            return cls(older_than=OLDER_THAN_CLASSIC, source=f"GitLab {version}")
        classic = (*OLDER_THAN_CLASSIC, "60d")
        return cls(older_than=tuple(v for v in OLDER_THAN_OPTIONS if v in classic),
                   source=f"GitLab {version}")  # fmt: skip

    def allowed(self, field: str) -> tuple[Any, ...]:
        """The allowed values of ``field`` (None where GitLab allows nil)."""
        if field == "older_than":
            return (*self.older_than, None)
        if field == "keep_n":
            return (*self.keep_n, None)
        if field == "cadence":
            return self.cadence
        return ALLOWED[field]


def parse_version(version: str | None) -> tuple[int, int] | None:
    """``"17.5.1-ee"`` -> ``(17, 5)``; None when unknown or unreadable."""
    if not isinstance(version, str):
        return None
    parts = version.strip().split(".")
    if len(parts) < 2 or not parts[0].isdigit():
        return None
    minor = "".join(ch for ch in parts[1] if ch.isdigit()) if parts[1] else ""
    return (int(parts[0]), int(minor)) if minor else None


def re2_error(pattern: str) -> str | None:
    """RE2's complaint about ``pattern`` (as GitLab reports it), or None when valid.

    >>> re2_error(r"(a)\\1")
    'invalid escape sequence: \\\\1'
    """
    try:
        _compile(pattern)
    except re2.error as exc:
        return _error_text(exc)
    return None


def _error_text(exc: re2.error) -> str:
    detail = exc.args[0] if exc.args else str(exc)
    return detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)


def compile_gitlab_regex(pattern: str | None, field: str) -> CompiledRegex:
    """Compile a policy regex as RE2, fully anchored ``\\A(?:pattern)\\z``.

    None or blank gives ``\\A\\z``, which matches no tag. Invalid RE2 raises
    :class:`PolicyError` with GitLab's message. A pattern GitLab accepts that
    ends inside a ``\\Q`` quote (``v\\Q1.0``) is closed with ``\\E`` before the
    group. Use ``.search(name)`` on the result.

    >>> bool(compile_gitlab_regex("v.+", "name_regex").search("v1.0"))
    True
    >>> bool(compile_gitlab_regex("v\\\\Q1.0", "name_regex").search("v1.0"))
    True
    """
    if pattern is None or pattern == "":
        return _compile(_MATCH_NOTHING)
    if not isinstance(pattern, str):
        raise PolicyError(field, f"expected a regular expression string, got {pattern!r}")
    error = re2_error(pattern)
    if error is not None:
        raise PolicyError(field, MSG_RE2.format(error=error))
    try:
        return _compile(rf"\A(?:{pattern})\z")
    except re2.error:
        pass
    try:
        return _compile(rf"\A(?:{pattern}{_END_QUOTE})\z")
    except re2.error as exc:
        raise PolicyError(
            field, f"valid RE2 that cannot be anchored as a whole: {_error_text(exc)}"
        ) from None


class GitLabMatcher:
    """A regex matched as GitLab's ``Gitlab::UntrustedRegexp#match?`` does.

    GitLab compiles the source, and when it has no capture group it scans with
    ``(`` + source + ``)``; a name matches when the scan finds anything. A
    source whose scan form does not compile (``\\Av\\Q1.0\\z``: the quote
    swallows the closing parenthesis) matches nothing. ``.search(name)`` is
    truthy on a match, like a compiled regex's.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        compiled = _compile(source)  # re2.error when GitLab's own compile fails too
        self._scan: Any = compiled
        if compiled.groups == 0:
            try:
                self._scan = _compile(f"({source})")
            except re2.error:
                self._scan = None

    def __repr__(self) -> str:
        return f"GitLabMatcher({self.source!r})"

    def search(self, text: str) -> bool:
        return bool(text) and self._scan is not None and self._scan.search(text) is not None


def compile_gitlab_literal_regex(pattern: str | None, field: str) -> GitLabMatcher:
    """The regex exactly as GitLab builds it: ``\\A`` + pattern + ``\\z``, no group.

    With a top-level ``|`` this anchors only the first and last alternatives
    (``C|D`` becomes ``\\AC|D\\z`` and matches ``Cx``); regops uses
    :func:`compile_gitlab_regex` and reports where the two disagree. Raises
    PolicyError for a pattern GitLab refuses, and when the pattern is valid but
    GitLab's anchored form is not (GitLab's run then fails with a RegexpError).
    """
    compile_gitlab_regex(pattern, field)  # same validation and errors
    try:
        return GitLabMatcher(rf"\A{pattern or ''}\z")
    except re2.error as exc:
        raise PolicyError(
            field, f"GitLab's anchored form \\A<pattern>\\z is not valid RE2: {_error_text(exc)}"
        ) from None


@functools.lru_cache(maxsize=REGEX_CACHE_SIZE)
def _compile(pattern: str) -> CompiledRegex:
    compiled: CompiledRegex = re2.compile(pattern, options=_RE2_OPTIONS)
    return compiled


def collect_policy_errors(
    attrs: Mapping[str, Any],
    *,
    current: Mapping[str, Any] | None = None,
    partial: bool = True,
    options: PolicyOptions | None = None,
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Normalise and check ``attrs``; return ``(normalised, errors)``.

    ``errors`` maps a field to GitLab's messages for it (empty when valid).
    See :func:`validate_policy_attributes` for what ``normalised`` holds.
    """
    options = options or PolicyOptions()
    given, errors = _normalise(attrs)
    if current is not None:
        record = {**_normalise(current)[0], **given}
    elif partial:
        record = dict(given)
    else:
        record = {**POLICY_DEFAULTS, **given}
    whole = current is not None or not partial
    for field in record if whole else given:
        for message in _field_errors(field, record, options):
            errors.setdefault(field, []).append(message)
    return (record if whole else given), errors


def validate_policy_attributes(
    attrs: Mapping[str, Any],
    *,
    current: Mapping[str, Any] | None = None,
    partial: bool = True,
    options: PolicyOptions | None = None,
) -> dict[str, Any]:
    """Normalise policy attributes or raise :class:`PolicyError` like GitLab.

    Accepts ``keep_n`` as int or digits, booleans as ``"true"``/``"false"``,
    ``name_regex_delete`` as the API's alias of ``name_regex``, and ``null`` or
    an empty value for "unset". Returns the normalised given attributes; with
    ``current`` (the stored policy) the whole record after the update, validated
    as GitLab validates on save; with ``partial=False`` the defaults filled in.
    ``options``: the values the connected GitLab accepts (default: any version's).
    The raised error carries every problem in ``.errors`` (field -> GitLab's
    messages); its own text adds the allowed values to GitLab's "is not
    included in the list".
    """
    result, errors = collect_policy_errors(attrs, current=current, partial=partial, options=options)
    if errors:
        field, messages = next(iter(errors.items()))
        error = PolicyError(field, with_allowed_values(field, messages[0]))
        error.errors = errors
        raise error
    return result


def with_allowed_values(field: str, message: str) -> str:
    """GitLab's message, plus the values it allows when it only says "not in the list"."""
    if message != MSG_INCLUSION or field not in ALLOWED:
        return message
    shown = ", ".join("null" if value is None else str(value).lower() for value in ALLOWED[field])
    return f"{message} (allowed: {shown})"


def policy_error_body(errors: Mapping[str, Iterable[str]] | PolicyError) -> dict[str, Any]:
    """GitLab's 400 body for an invalid ``container_expiration_policy_attributes``.

    The API answers with ``{"message": model.errors.messages}``
    (lib/api/helpers.rb ``render_validation_error!``); errors of the nested
    policy carry the association prefix (ActiveRecord autosave), hence
    ``container_expiration_policy.<field>``.

    >>> policy_error_body({"keep_n": ["is not included in the list"]})
    {'message': {'container_expiration_policy.keep_n': ['is not included in the list']}}
    """
    if isinstance(errors, PolicyError):
        errors = errors.errors or {errors.field: [errors.reason]}
    return {
        "message": {
            f"container_expiration_policy.{field}": list(messages)
            for field, messages in errors.items()
        }
    }


def _normalise(attrs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Coerce CLI-style values; unknown keys and uncoercible values become errors."""
    if not isinstance(attrs, Mapping):
        raise PolicyError("container_expiration_policy", f"expected a mapping, got {attrs!r}")
    result: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for key, value in attrs.items():
        field = "name_regex" if key == NAME_REGEX_ALIAS else key
        if field not in POLICY_DEFAULTS:
            if key not in ("project_id", "next_run_at"):
                errors.setdefault(str(key), []).append(MSG_UNKNOWN)
            continue
        if key == "name_regex" and NAME_REGEX_ALIAS in attrs:
            continue  # name_regex_delete wins
        coerced, ok = _coerce(field, value)
        result[field] = coerced
        if not ok:
            errors.setdefault(field, []).append(MSG_INCLUSION)
    return result, errors


def _coerce(field: str, value: Any) -> tuple[Any, bool]:
    """Return ``(value, ok)``; ok False when the value cannot be of the field's type."""
    if field == "enabled":
        return _coerce_bool(value)
    if field == "keep_n":
        return _coerce_int(value)
    if isinstance(value, str) and field in ("cadence", "older_than"):
        return (None, True) if value.strip().lower() in NULL_WORDS else (value.strip(), True)
    if field == "name_regex_keep" and isinstance(value, str) and value.lower() in NULL_WORDS:
        return None, True
    return value, value is None or isinstance(value, str)


def _coerce_bool(value: Any) -> tuple[Any, bool]:
    if isinstance(value, bool):
        return value, True
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True, True
        if word in FALSE_WORDS:
            return False, True
    return value, False


def _coerce_int(value: Any) -> tuple[Any, bool]:
    if value is None:
        return None, True
    if isinstance(value, bool):
        return value, False
    if isinstance(value, int):
        return value, True
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in NULL_WORDS:
            return None, True
        if text.isascii() and text.isdigit():
            return int(text), True
    return value, False


def _field_errors(field: str, record: Mapping[str, Any], options: PolicyOptions) -> list[str]:
    """GitLab's messages for one field of a (normalised) policy record."""
    value = record.get(field)
    # Unknown (a partial update without "enabled"): check RE2 syntax, not presence.
    enabled = record.get("enabled", None)
    if field in ALLOWED:
        messages = [MSG_BLANK] if field == "cadence" and value in (None, "") else []
        if not _allowed(options.allowed(field), value):
            messages.append(MSG_INCLUSION)
        return messages
    if field == "name_regex":
        if enabled is False:
            return []  # GitLab validates the regexes only of an enabled policy
        if value is None or (isinstance(value, str) and not value.strip()):
            return [MSG_BLANK] if enabled is True else []
        return _regex_errors(value)
    if field == "name_regex_keep":
        messages = []
        if isinstance(value, str) and len(value) > NAME_REGEX_KEEP_MAX_LENGTH:
            messages.append(MSG_TOO_LONG.format(count=NAME_REGEX_KEEP_MAX_LENGTH))
        if enabled is not False and isinstance(value, str) and value:
            messages.extend(_regex_errors(value))
        return messages
    return []


def _allowed(options: tuple[Any, ...], value: Any) -> bool:
    """Inclusion check that does not let True pass as 1 or 1 as True."""
    return any(type(value) is type(option) and value == option for option in options)


def _regex_errors(value: Any) -> list[str]:
    if not isinstance(value, str):
        return [MSG_INCLUSION]
    error = re2_error(value)
    return [] if error is None else [MSG_RE2.format(error=error)]


# --------------------------------------------------------------------------- the run's value

# What a cleanup run reads from a policy or from the bulk-delete API's parameters.
RUN_KEYS = ("name_regex_delete", "name_regex", "name_regex_keep", "keep_n", "older_than")
KEEP_LATEST_KEY = "keep_latest"  # a run parameter only (the bulk-delete API has it)


@dataclass(frozen=True)
class CleanupPolicy:
    """What one cleanup run uses, validated and typed: parsed once, then passed along.

    ``name_regex`` is GitLab's delete regex (the API also calls it
    ``name_regex_delete``; ``regex_field`` remembers which name it came from,
    for messages). Unlike a stored policy, a run takes any ``keep_n`` >= 0 and
    any duration GitLab can parse (the bulk-delete API does).

    >>> CleanupPolicy.parse({"name_regex_delete": "main-.*", "keep_n": "5"}).keep_n
    5
    """

    name_regex: str | None = None
    name_regex_keep: str | None = None
    keep_n: int | None = None
    older_than: str | None = None
    keep_latest: bool = True
    regex_field: str = "name_regex"

    def __post_init__(self) -> None:
        compile_gitlab_regex(self.name_regex, self.regex_field)  # PolicyError now, not later
        compile_gitlab_regex(self.name_regex_keep, "name_regex_keep")
        self.older_than_delta  # noqa: B018 - parses (PolicyError) once, now

    @classmethod
    def parse(cls, policy: object) -> CleanupPolicy:
        """From a mapping of the API's names, a policy object, or a CleanupPolicy.

        ``name_regex_delete`` wins over ``name_regex`` when both are given and
        not None (as in GitLab's service); ``keep_n`` and ``older_than`` accept
        ``null``/empty for unset; ``keep_latest`` defaults to true.
        """
        if isinstance(policy, CleanupPolicy):
            return policy
        values = _run_values(policy)
        if values.get("name_regex_delete") is not None:
            field, pattern = "name_regex_delete", values["name_regex_delete"]
        else:
            field, pattern = "name_regex", values.get("name_regex")
        return cls(
            name_regex=_run_pattern(pattern, field),
            name_regex_keep=_run_pattern(values.get("name_regex_keep"), "name_regex_keep"),
            keep_n=_run_keep_n(values.get("keep_n")),
            older_than=_run_older_than(values.get("older_than")),
            keep_latest=_run_bool(values.get(KEEP_LATEST_KEY, True), KEEP_LATEST_KEY),
            regex_field=field,
        )

    @functools.cached_property
    def older_than_delta(self) -> timedelta | None:
        """``older_than`` as a duration (None: unset)."""
        if self.older_than is None:
            return None
        try:
            return parse_duration(self.older_than, field="older_than")
        except ValidationError as exc:
            raise PolicyError("older_than", exc.reason) from None

    @functools.cached_property
    def delete_regex(self) -> CompiledRegex:
        """The delete regex, anchored ``\\A(?:p)\\z`` (matches nothing when unset)."""
        return compile_gitlab_regex(self.name_regex, self.regex_field)

    @functools.cached_property
    def keep_regex(self) -> CompiledRegex:
        return compile_gitlab_regex(self.name_regex_keep, "name_regex_keep")


def _run_values(policy: object) -> dict[str, object]:
    """The run's keys from a mapping, an object's attributes, or its ``attributes`` dict."""
    if policy is None:
        raise PolicyError("policy", "no cleanup policy given")
    if isinstance(policy, Mapping):
        return {k: policy[k] for k in (*RUN_KEYS, KEEP_LATEST_KEY) if k in policy}
    attributes = getattr(policy, "attributes", None)
    attributes = attributes if isinstance(attributes, Mapping) else {}
    values = {}
    for key in (*RUN_KEYS, KEEP_LATEST_KEY):
        try:
            value = getattr(policy, key)
        except AttributeError:
            if key not in attributes:
                continue
            value = attributes[key]
        values[key] = value
    return values


def _run_pattern(value: object, field: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise PolicyError(field, f"expected a regular expression string, got {value!r}")


def _run_keep_n(value: object) -> int | None:
    coerced, ok = _coerce_int(value)
    if not ok or (coerced is not None and coerced < 0):
        raise PolicyError("keep_n", f"expected a whole number of tags to keep, got {value!r}")
    return coerced


def _run_older_than(value: object) -> str | None:
    coerced, ok = _coerce("older_than", value)
    if not ok:
        raise PolicyError("older_than", f"expected a duration like 14d, got {value!r}")
    return coerced


def _run_bool(value: object, field: str) -> bool:
    coerced, ok = _coerce_bool(value)
    if not ok:
        raise PolicyError(field, f"expected true or false, got {value!r}")
    return bool(coerced)


# --------------------------------------------------------------------------- tag protection

PROTECTED = "protected"  # a protection rule with access levels matches the tag
IMMUTABLE = "immutable"  # an immutability rule (both access levels null) matches the tag
# GitLab's limit on tag_name_pattern (ContainerRegistry::Protection::TagRule).
TAG_NAME_PATTERN_MAX_LENGTH = 100


@dataclass(frozen=True)
class TagProtectionRule:
    """One ``ContainerRegistry::Protection::TagRule``: a pattern and who may push/delete.

    A rule with both access levels null is an immutability rule (GitLab 18.1+).
    The pattern is RE2 matched unanchored, as GitLab's
    ``Gitlab::UntrustedRegexp.new(pattern).match?(tag)`` (``v.*`` matches ``xv1``).
    """

    pattern: str
    minimum_access_level_for_push: str | None = None
    minimum_access_level_for_delete: str | None = None
    id: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.pattern, str) or not self.pattern:
            raise PolicyError(
                "tag_name_pattern", f"expected a non-empty pattern, got {self.pattern!r}"
            )
        error = re2_error(self.pattern)
        if error is not None:
            raise PolicyError("tag_name_pattern", MSG_RE2.format(error=error))

    @property
    def immutable(self) -> bool:
        return self.minimum_access_level_for_push is None and (
            self.minimum_access_level_for_delete is None
        )

    @functools.cached_property
    def matcher(self) -> GitLabMatcher:
        return GitLabMatcher(self.pattern)

    def matches(self, tag: str) -> bool:
        return self.matcher.search(tag)

    @classmethod
    def from_api(cls, row: Mapping[str, Any]) -> TagProtectionRule:
        """From a row of ``GET /projects/:id/registry/protection/tag/rules``."""
        if not isinstance(row, Mapping):
            raise PolicyError("tag_protection_rule", f"expected an object, got {row!r}")
        return cls(
            pattern=row.get("tag_name_pattern"),  # type: ignore[arg-type]
            minimum_access_level_for_push=row.get("minimum_access_level_for_push") or None,
            minimum_access_level_for_delete=row.get("minimum_access_level_for_delete") or None,
            id=row.get("id"),
        )


@dataclass(frozen=True)
class TagProtection:
    """A project's tag protection rules; :meth:`reason` tells whether a tag is kept.

    GitLab's cleanup policy runs without a user, so every rule applies
    (``protected_patterns_for_delete(current_user: nil)``); regops does the same
    for every plan and delete, whoever runs it. ``source`` says where the rules
    came from (for messages).

    >>> rules = TagProtection((TagProtectionRule("^v", "maintainer", "maintainer"),))
    >>> rules.reason("v1.0"), rules.reason("main")
    ('protected', None)
    """

    rules: tuple[TagProtectionRule, ...] = ()
    source: str = ""

    def __bool__(self) -> bool:
        return bool(self.rules)

    def __repr__(self) -> str:
        if not self.rules:
            return f"<TagProtection: no rules{f' ({self.source})' if self.source else ''}>"
        lines = [
            f"<TagProtection {len(self.rules)} rules{f' ({self.source})' if self.source else ''}:"
        ]
        for rule in self.rules:
            kind = (
                IMMUTABLE
                if rule.immutable
                else (
                    f"push {rule.minimum_access_level_for_push}, "
                    f"delete {rule.minimum_access_level_for_delete}"
                )
            )
            lines.append(f"  {rule.pattern!r}: {kind}")
        return "\n".join(lines) + ">"

    def rule_for(self, tag: str) -> TagProtectionRule | None:
        """The rule that keeps ``tag`` (an immutability rule first), or None."""
        matching = [rule for rule in self.rules if rule.matches(tag)]
        immutable = [rule for rule in matching if rule.immutable]
        chosen = immutable or matching
        return chosen[0] if chosen else None

    def reason(self, tag: str) -> str | None:
        """``immutable``, ``protected`` or None (the tag may be deleted)."""
        rule = self.rule_for(tag)
        if rule is None:
            return None
        return IMMUTABLE if rule.immutable else PROTECTED

    def describe(self, tag: str) -> str | None:
        """``protected by rule 'v.*'`` or None, for messages."""
        rule = self.rule_for(tag)
        if rule is None:
            return None
        kind = IMMUTABLE if rule.immutable else PROTECTED
        return f"{kind} by GitLab tag rule {rule.pattern!r}" + (
            f" ({self.source})" if self.source else ""
        )

    @classmethod
    def from_api(cls, rows: Iterable[Mapping[str, Any]], source: str = "") -> TagProtection:
        return cls(tuple(TagProtectionRule.from_api(row) for row in rows), source)
