"""Durations, sizes and rates as flow authors and operators write them: one grammar for all of Hookline.

Step timeouts, retry delays, destination limits, verification tolerances, body limits and settings all
read their values here, so ``500ms`` or ``1d`` means the same thing in every key that takes a duration.

- duration: a number of seconds, or ``<number><unit>`` with ``ms``, ``s``, ``m``, ``h``, ``d`` (``1.5s``, ``10m``)
- size: a whole number of bytes, or ``<whole number><unit>`` with ``b``, ``kb``/``mb``/``gb`` (powers of 1000),
  ``kib``/``mib``/``gib`` and the short ``k``/``m``/``g`` (powers of 1024); any case
- rate: a number per second, or ``<number>/<unit>`` with the duration units (``10/s``, ``600/m``, ``1000/h``),
  also spelled ``sec``, ``second``, ``min``, ``minute``, ``hour``, ``day``

Each parser raises ValueError with a one-line message saying what was expected.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["DURATION_UNITS", "RATE_UNITS", "SIZE_UNITS", "parse_duration", "parse_rate", "parse_size"]

DURATION_UNITS: dict[str, float] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
SIZE_UNITS: dict[str, int] = {
    "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
    "k": 1024, "m": 1024**2, "g": 1024**3,
}
RATE_UNITS: dict[str, float] = {
    **DURATION_UNITS,
    "sec": 1.0, "second": 1.0, "min": 60.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0,
}

_NUMBER = r"(\d+(?:\.\d+)?)"
_DURATION = re.compile(rf"\s*{_NUMBER}\s*({'|'.join(DURATION_UNITS)})?\s*")
_SIZE = re.compile(rf"\s*(\d+)\s*({'|'.join(sorted(SIZE_UNITS, key=len, reverse=True))})?\s*", re.IGNORECASE)
_RATE = re.compile(rf"\s*{_NUMBER}\s*/\s*({'|'.join(sorted(RATE_UNITS, key=len, reverse=True))})\s*")


def _number(value: Any) -> float | None:
    """A real int or float (``True`` is not a number here)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def parse_duration(value: Any) -> float:
    """Seconds from ``10s``, ``2m``, ``500ms``, ``1h``, ``1d`` or a number of seconds; raises ValueError."""
    number = _number(value)
    if number is not None:
        if number < 0:
            raise ValueError("a duration cannot be negative")
        return number
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"expected a duration like 10s, 2m, 500ms or 1d, got {value!r}")
    return float(match.group(1)) * DURATION_UNITS[match.group(2) or "s"]


def parse_size(value: Any) -> int:
    """Bytes from ``1048576``, ``512KiB``, ``10MiB``, ``5mb``; raises ValueError."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"expected a size like 1048576, 512KiB or 10MiB, got {value!r}")
    return int(match.group(1)) * SIZE_UNITS[(match.group(2) or "b").lower()]


def parse_rate(value: Any) -> float:
    """Requests per second from ``"10/s"``, ``"600/m"``, ``"1000/h"`` or a number per second; raises ValueError."""
    number = _number(value)
    if number is not None and number > 0:
        return number
    match = _RATE.fullmatch(value) if isinstance(value, str) else None
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"expected a rate like 10/s or 600/m, got {value!r}")
    return float(match.group(1)) / RATE_UNITS[match.group(2)]
