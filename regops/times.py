"""Points in time as GitLab, the registry and regops's own records write them."""

from __future__ import annotations

from datetime import datetime, timezone

from regops.errors import ValidationError


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def utc_time(value: str | datetime, field: str = "time") -> datetime:
    """An aware datetime from ISO 8601 text (``Z`` accepted) or a datetime; a time
    without an offset is UTC. ValidationError naming ``field`` when unreadable."""
    if not isinstance(value, datetime):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except (TypeError, ValueError, AttributeError):
            raise ValidationError(field, f"not an ISO 8601 time: {value!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
