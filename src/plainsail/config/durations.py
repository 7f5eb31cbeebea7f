"""Parse durations such as `10s`, `5m`, `500ms`, `1h30m` or a plain number of seconds."""

from __future__ import annotations

import math
import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# Longer than any sensible duration, short enough that no number is too big for a float.
_MAX_DIGITS = 30


def parse_duration(value: object) -> float:
    """Return seconds (finite, not negative); raise ValueError with a hint for anything else."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 10s, 5m or 500ms")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError("the duration is too long") from None
        if math.isnan(seconds):
            raise ValueError("expected a duration such as 10s, 5m or 500ms")
        if seconds < 0:
            raise ValueError("a duration cannot be negative")
        if math.isinf(seconds):
            raise ValueError("the duration is too long")
        return seconds
    text = str(value).strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text, re.ASCII):
        return _finite(text, float(_number(text)))
    pos, total = 0, 0.0
    for m in _PART.finditer(text):
        if m.start() != pos:
            break
        total += float(_number(m.group(1), text)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text or not text.isascii():
        raise ValueError(f"{_show(text)} is not a duration; write e.g. 10s, 5m, 500ms or 1h30m")
    return _finite(text, total)


def _number(digits: str, whole: str | None = None) -> str:
    if len(digits.partition(".")[0].lstrip("0")) > _MAX_DIGITS:
        raise ValueError(f"{_show(whole or digits)} is too long a duration")
    return digits


def _finite(text: str, seconds: float) -> float:
    if not math.isfinite(seconds):
        raise ValueError(f"{_show(text)} is too long a duration")
    return seconds


def _show(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def check_bounds(seconds: float, *, most: float, zero_ok: bool) -> str | None:
    """Why `seconds` is out of range (0 or more, or more than 0, up to `most`), or None."""
    if seconds > most:
        return f"{_seconds(seconds)} is too long: at most {_seconds(most)}"
    if seconds <= 0 and not zero_ok:
        return "must be longer than 0 (e.g. 500ms)"
    return None


def _seconds(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0 and seconds < 1e9:
        return f"{int(seconds // 3600)}h"
    return f"{seconds:.6g}s"


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    return f"{int(seconds // 60)}m{seconds % 60:02.0f}s"
