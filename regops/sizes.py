"""Byte counts for people: one unit table for tables, summaries and chart axes.

>>> human_bytes(1536)
'1.5 KiB'
>>> byte_unit(3 * 1024**3)
('GiB', 1073741824)
"""

from __future__ import annotations

BYTE_UNITS = (("B", 1), ("KiB", 1024), ("MiB", 1024**2), ("GiB", 1024**3), ("TiB", 1024**4))


def byte_unit(largest: float) -> tuple[str, int]:
    """The unit to show values up to ``largest`` bytes in: ``("MiB", 1048576)``."""
    chosen = BYTE_UNITS[0]
    for name, factor in BYTE_UNITS:
        if largest >= factor:
            chosen = (name, factor)
    return chosen


def human_bytes(value: float | None, unknown: str = "unknown") -> str:
    """``1536`` -> ``1.5 KiB``; None -> ``unknown``."""
    if value is None:
        return unknown
    name, factor = byte_unit(abs(value))
    return f"{int(value)} B" if factor == 1 else f"{value / factor:.1f} {name}"
