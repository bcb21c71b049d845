"""Durations as GitLab writes them (``7d``, ``14d``, ``1month``, ``1 day``, ``1h``).

GitLab parses ``older_than`` and ``cadence`` with ChronicDuration (GitLab's fork,
``gitlab-chronic-duration``). This module reproduces the part of it those fields
use: numbers with unit words, several terms (``1 day 2 hours``, ``1d2h``), a unit
without a number (``day`` = 1 day), the clock form ``1:30`` (1 min 30 s) and a
bare number (seconds).

Where ChronicDuration is lenient, regops is strict, on purpose: ChronicDuration
silently drops unknown words and returns nil for garbage (a GitLab cleanup run
then fails), while :func:`parse_duration` raises :class:`ValidationError`
naming the field.

>>> parse_duration("14d")
datetime.timedelta(days=14)
>>> parse_duration("1month")
datetime.timedelta(days=30)
"""

from __future__ import annotations

import re
from datetime import timedelta

from regops.errors import ValidationError

SECONDS_PER_DAY = 86_400
# ChronicDuration's multipliers. A month is 30 days (ChronicDuration.days_per_month),
# a week is days_per_month // 4 = 7 days, a year is 365.25 days (31_557_600 s).
UNIT_SECONDS: dict[str, float] = {
    "seconds": 1,
    "minutes": 60,
    "hours": 3_600,
    "days": SECONDS_PER_DAY,
    "weeks": 7 * SECONDS_PER_DAY,
    "months": 30 * SECONDS_PER_DAY,
    "years": 31_557_600,
}
# ChronicDuration's word list (its ``mappings``): every spelling it knows.
UNIT_WORDS: dict[str, str] = {
    **dict.fromkeys(("seconds", "second", "secs", "sec", "s"), "seconds"),
    **dict.fromkeys(("minutes", "minute", "mins", "min", "m"), "minutes"),
    **dict.fromkeys(("hours", "hour", "hrs", "hr", "h"), "hours"),
    **dict.fromkeys(("days", "day", "dy", "d"), "days"),
    **dict.fromkeys(("weeks", "week", "wks", "wk", "w"), "weeks"),
    **dict.fromkeys(("months", "month", "mos", "mo"), "months"),
    **dict.fromkeys(("years", "year", "yrs", "yr", "y"), "years"),
}
# Words ChronicDuration skips between terms ("1 day and 2 hours").
JOIN_WORDS = frozenset({"and", "with", "plus"})
# The clock form, right to left: seconds, minutes, hours, days, months, years
# (ChronicDuration leaves weeks out of it).
CLOCK_UNITS = ("seconds", "minutes", "hours", "days", "months", "years")
# Longest text worth parsing; policy durations are a few characters.
MAX_DURATION_LENGTH = 100

_NUMBER = re.compile(r"[0-9]*\.?[0-9]+")
_CLOCK = re.compile(r"^[0-9]+:[0-9]+(:[0-9]+){0,4}(\.[0-9]*)?$")


def parse_duration(text: str | timedelta, field: str = "older_than") -> timedelta:
    """Parse a ChronicDuration string GitLab accepts into a positive timedelta.

    >>> parse_duration("1 day 2 hours")
    datetime.timedelta(days=1, seconds=7200)
    """
    if isinstance(text, timedelta):
        return _positive(text, text, field)
    if not isinstance(text, str):
        raise ValidationError(field, f"expected a duration such as '7d', got {text!r}")
    if len(text) > MAX_DURATION_LENGTH:
        raise ValidationError(field, f"duration longer than {MAX_DURATION_LENGTH} characters")
    cleaned = text.strip().lower()
    if not cleaned:
        raise ValidationError(field, "empty duration")
    compact = cleaned.replace(" ", "")
    clock = _CLOCK.match(compact)
    tokens = _clock_tokens(compact) if clock else _word_tokens(cleaned, text, field)
    return _positive(timedelta(seconds=_total_seconds(tokens, text, field)), text, field)


def _clock_tokens(compact: str) -> list[str]:
    """``1:30`` -> ``['1', 'minutes', '30', 'seconds']`` (right to left)."""
    parts = compact.split(":")
    units = CLOCK_UNITS[: len(parts)][::-1]
    return [token for part, unit in zip(parts, units, strict=True) for token in (part, unit)]


def _word_tokens(cleaned: str, original: str, field: str) -> list[str]:
    """Split ``1d2h`` / ``1 day, 2 hours`` into numbers and canonical unit names."""
    spaced = _NUMBER.sub(lambda match: f" {match.group()} ", cleaned)
    tokens: list[str] = []
    for word in spaced.split():
        word = word.strip(",")
        if not word or word in JOIN_WORDS:
            continue
        if _NUMBER.fullmatch(word):
            tokens.append(word)
        elif word in UNIT_WORDS:
            tokens.append(UNIT_WORDS[word])
        else:
            raise ValidationError(field, f"unknown word {word!r} in duration {original!r}")
    if tokens and tokens[0] in UNIT_SECONDS:
        tokens.insert(0, "1")  # "day" means "1 day", as in ChronicDuration
    return tokens


def _total_seconds(tokens: list[str], original: str, field: str) -> float:
    """Sum number*unit pairs; a trailing bare number counts as seconds."""
    total = 0.0
    index = 0
    while index < len(tokens):
        number = tokens[index]
        if number in UNIT_SECONDS:
            raise ValidationError(field, f"unit without a number in duration {original!r}")
        unit = tokens[index + 1] if index + 1 < len(tokens) else "seconds"
        if unit not in UNIT_SECONDS:
            raise ValidationError(field, f"number without a unit in duration {original!r}")
        total += float(number) * UNIT_SECONDS[unit]
        index += 2
    return total


def _positive(value: timedelta, original: object, field: str) -> timedelta:
    """ChronicDuration returns nil for a zero duration; GitLab then fails: refuse it."""
    if value <= timedelta(0):
        raise ValidationError(field, f"duration must be longer than zero, got {original!r}")
    return value
