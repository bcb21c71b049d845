"""Byte counts for people (regops.sizes), pinned to literal strings."""

from __future__ import annotations

import pytest

from regops.sizes import byte_unit, human_bytes


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (5 * 1024**2 + 1024**2 // 2, "5.5 MiB"),
        (3 * 1024**3, "3.0 GiB"),
        (2048 * 1024**4, "2048.0 TiB"),
        (-1536, "-1.5 KiB"),
        (None, "unknown"),
    ],
)
def test_human_bytes(value, shown):
    assert human_bytes(value) == shown


def test_unknown_text_and_axis_unit():
    assert human_bytes(None, unknown="") == ""
    assert byte_unit(1023) == ("B", 1)
    assert byte_unit(1024**2) == ("MiB", 1048576)
