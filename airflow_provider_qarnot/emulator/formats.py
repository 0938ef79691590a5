"""Wire formats shared by the emulator: .NET-style dates and TimeSpans, instance ranges, ids.

The real API is ASP.NET: dates are ISO-8601 UTC with a ``Z``, ``0001-01-01T00:00:00Z`` means "no date",
and durations are TimeSpan strings ``[d.]hh:mm:ss[.fffffff]``.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import secrets
import uuid as uuid_mod

NO_DATE = "0001-01-01T00:00:00Z"

#: Largest number of instances one task may have (protects the emulator from "0-999999999").
MAX_INSTANCES = 10_000

#: ``TimeSpan.MaxValue`` in ticks (100 ns): ``10675199.02:48:05.4775807``.
MAX_TIMESPAN_TICKS = 2**63 - 1

_TIMESPAN_RE = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,7}))?$")


@functools.lru_cache(maxsize=65536)
def format_date(timestamp: float | None) -> str:
    """Render a POSIX timestamp as the API does (microseconds, ``Z``); ``None`` gives the no-date value.

    Cached: a task's dates rarely change, and GET /tasks/{uuid} renders several of them.
    """
    if timestamp is None:
        return NO_DATE
    moment = dt.datetime.fromtimestamp(timestamp, tz=dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_date(text: str) -> float:
    """Parse an API date (with or without fraction, ``Z`` or offset) to a POSIX timestamp."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    moment = dt.datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.timestamp()


def format_timespan(seconds: float) -> str:
    """Render seconds as a .NET TimeSpan string: ``hh:mm:ss``, ``d.hh:mm:ss`` or with ``.fffffff``."""
    seconds = max(0.0, seconds)
    ticks = round(seconds * 10_000_000)
    whole, frac = divmod(ticks, 10_000_000)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    if days:
        text = f"{days}.{text}"
    if frac:
        text = f"{text}.{frac:07d}"
    return text


def parse_timespan(text: str) -> float:
    """Parse a .NET TimeSpan string to seconds; raises ``ValueError`` when malformed or beyond
    ``TimeSpan.MaxValue`` (computed in integer ticks, so a huge day count never overflows a float)."""
    match = _TIMESPAN_RE.match(text.strip())
    if match is None:
        raise ValueError(f"invalid TimeSpan {text!r}")
    days, hours, minutes, secs, frac = match.groups()
    if int(hours) > 23 or int(minutes) > 59 or int(secs) > 59:
        raise ValueError(f"invalid TimeSpan {text!r}")
    whole = int(days or 0) * 86_400 + int(hours) * 3_600 + int(minutes) * 60 + int(secs)
    ticks = whole * 10_000_000 + (int(frac.ljust(7, "0")) if frac else 0)
    if ticks > MAX_TIMESPAN_TICKS:
        raise ValueError(f"TimeSpan {text!r} is beyond TimeSpan.MaxValue")
    return ticks / 10_000_000


def parse_ranges(text: str) -> list[int]:
    """Parse an ``advancedRanges`` string such as ``"1,3-5"`` into sorted unique instance ids.

    Raises ``ValueError`` for anything malformed: empty items, letters, negative numbers, ``3-1``,
    or more than :data:`MAX_INSTANCES` instances.
    """
    ids: set[int] = set()
    if not text.strip():
        raise ValueError("the range is empty")
    for raw in text.split(","):
        item = raw.strip()
        if re.fullmatch(r"\d{1,9}", item):
            ids.add(int(item))
        else:
            match = re.fullmatch(r"(\d{1,9})\s*-\s*(\d{1,9})", item)
            if match is None:
                raise ValueError(f"invalid range item {item!r}")
            low, high = int(match.group(1)), int(match.group(2))
            if low > high:
                raise ValueError(f"invalid range {item!r}: start is after end")
            if high - low + 1 + len(ids) > MAX_INSTANCES:
                raise ValueError(f"too many instances (at most {MAX_INSTANCES})")
            ids.update(range(low, high + 1))
        if len(ids) > MAX_INSTANCES:
            raise ValueError(f"too many instances (at most {MAX_INSTANCES})")
    return sorted(ids)


def format_ranges(ids: list[int] | set[int]) -> str:
    """Render instance ids compactly, the inverse of :func:`parse_ranges` (``[0,1,2,5]`` → ``"0-2,5"``)."""
    ordered = sorted(ids)
    parts: list[str] = []
    index = 0
    while index < len(ordered):
        start = end = ordered[index]
        while index + 1 < len(ordered) and ordered[index + 1] == end + 1:
            index += 1
            end = ordered[index]
        parts.append(str(start) if start == end else f"{start}-{end}")
        index += 1
    return ",".join(parts)


def new_uuid() -> str:
    """A fresh random uuid string, as the API gives tasks, jobs and pools."""
    return str(uuid_mod.uuid4())


def new_page_token() -> str:
    """An opaque pagination token shaped like the API's (24 hex digits)."""
    return secrets.token_hex(12)


def new_trace_id() -> str:
    """A W3C trace id as ASP.NET puts in ProblemDetails."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-00"
