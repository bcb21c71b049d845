"""GitLab's registry application settings and project registry access, with GitLab's rules.

What ``PUT /application/settings`` accepts for the registry settings, as
``ApplicationSetting`` validates them (app/models/application_setting.rb):

- ``container_registry_token_expire_delay``: presence, integer, greater than 0
  (minutes; default 5).
- ``container_registry_cleanup_tags_service_max_list_size``,
  ``container_registry_delete_tags_service_timeout``,
  ``container_registry_expiration_policies_worker_capacity``: integers greater
  than or equal to 0 (``with_options(numericality: { only_integer: true,
  greater_than_or_equal_to: 0 })``).
- ``container_registry_expiration_policies_caching``,
  ``container_expiration_policies_enable_historic_entries``: ``inclusion: { in:
  [true, false], message: 'must be a boolean value' }``.

A refused update answers 400 ``{"message": {"<field>": ["<message>"]}}``
(``render_validation_error!``). A project's ``container_registry_access_level``
is one of ``disabled``, ``private``, ``enabled`` (lib/api/helpers/projects_helpers.rb
``values: %w[disabled private enabled]``; Grape answers 400 ``"<param> does not
have a valid value"`` otherwise).

>>> validate_settings({"container_registry_token_expire_delay": "30"})
{'container_registry_token_expire_delay': 30}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from regops.errors import ValidationError

# The registry application settings and GitLab's defaults (doc/api/settings.md).
REGISTRY_SETTINGS: dict[str, Any] = {
    "container_registry_token_expire_delay": 5,
    "container_registry_cleanup_tags_service_max_list_size": 200,
    "container_registry_delete_tags_service_timeout": 250,
    "container_registry_expiration_policies_worker_capacity": 4,
    "container_registry_expiration_policies_caching": True,
    "container_expiration_policies_enable_historic_entries": False,
}
POSITIVE_INTEGERS = frozenset({"container_registry_token_expire_delay"})
NON_NEGATIVE_INTEGERS = frozenset(
    {
        "container_registry_cleanup_tags_service_max_list_size",
        "container_registry_delete_tags_service_timeout",
        "container_registry_expiration_policies_worker_capacity",
    }
)
BOOLEANS = frozenset(
    {
        "container_registry_expiration_policies_caching",
        "container_expiration_policies_enable_historic_entries",
    }
)
ACCESS_LEVELS = ("disabled", "private", "enabled")  # the API's container_registry_access_level
# Rails' boolean casting (ActiveModel::Type::Boolean) for values sent as text.
TRUE_TEXT = frozenset({"true", "1", "t", "on"})
FALSE_TEXT = frozenset({"false", "0", "f", "off"})
_INTEGER_TEXT = re.compile(r"\A[+-]?\d+\Z")  # Rails' only_integer pattern
MSG_BLANK = "can't be blank"
MSG_NUMBER = "is not a number"
MSG_INTEGER = "must be an integer"
MSG_POSITIVE = "must be greater than 0"
MSG_NON_NEGATIVE = "must be greater than or equal to 0"
MSG_BOOLEAN = "must be a boolean value"


class SettingsError(ValidationError):
    """A registry setting GitLab would refuse; ``errors`` maps each field to its messages."""

    def __init__(self, errors: Mapping[str, list[str]]) -> None:
        self.errors = {k: list(v) for k, v in errors.items()}
        field, messages = next(iter(self.errors.items()))
        super().__init__(field, messages[0])


def collect_settings_errors(
    attrs: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """(normalised values, field -> messages) for registry settings ``attrs``."""
    values: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for name, raw in attrs.items():
        if name not in REGISTRY_SETTINGS:
            known = ", ".join(sorted(REGISTRY_SETTINGS))
            errors[name] = [f"is not a registry application setting (known: {known})"]
            continue
        if name in BOOLEANS:
            value = _boolean(raw)
            if value is None:
                errors[name] = [MSG_BOOLEAN]
            else:
                values[name] = value
            continue
        number, problem = _integer(raw, name in POSITIVE_INTEGERS)
        if problem:
            errors[name] = [problem]
        else:
            values[name] = number
    return values, errors


def validate_settings(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The normalised values, or SettingsError with GitLab's messages."""
    values, errors = collect_settings_errors(attrs)
    if errors:
        raise SettingsError(errors)
    return values


def _boolean(raw: Any) -> bool | None:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        text = raw.strip().lower()
        if text in TRUE_TEXT:
            return True
        if text in FALSE_TEXT:
            return False
    return None


def _integer(raw: Any, positive: bool) -> tuple[int | None, str | None]:
    """Rails' ``numericality: { only_integer: true }`` on the value as sent."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None, MSG_BLANK if positive else MSG_NUMBER
    if isinstance(raw, bool):
        return None, MSG_NUMBER
    if isinstance(raw, float):
        return None, MSG_INTEGER
    if isinstance(raw, str):
        text = raw.strip()
        if not _INTEGER_TEXT.match(text):
            try:
                float(text)
            except ValueError:
                return None, MSG_NUMBER
            return None, MSG_INTEGER
        raw = int(text)
    if not isinstance(raw, int):
        return None, MSG_NUMBER
    if positive and raw <= 0:
        return None, MSG_POSITIVE
    if raw < 0:
        return None, MSG_NON_NEGATIVE
    return raw, None


def validate_access_level(value: Any) -> str:
    """One of disabled/private/enabled, else ValidationError with Grape's message."""
    if value not in ACCESS_LEVELS:
        raise ValidationError(
            "container_registry_access_level",
            f"does not have a valid value (one of {', '.join(ACCESS_LEVELS)})",
        )
    return str(value)
