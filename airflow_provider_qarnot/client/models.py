"""Read-only views of the API's task JSON, parsed tolerantly.

Missing and extra fields are fine; a body that is not an object, or a task without a uuid, raises
`MalformedResponseException` — never KeyError or TypeError.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_provider_qarnot.client.exceptions import MalformedResponseException
from airflow_provider_qarnot.client.states import normalize_state

_NO_DATE_YEAR = 1
_TIMESPAN = re.compile(r"^(?:(?P<days>\d+)\.)?(?P<h>\d+):(?P<m>\d{1,2}):(?P<s>\d{1,2})(?:\.(?P<frac>\d+))?$")


def parse_datetime(value: Any) -> datetime | None:
    """Parse `YYYY-MM-DDTHH:MM:SS[.f]Z` (or any ISO 8601 form); `0001-01-01T00:00:00Z` and junk read as None."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    match = re.match(r"^(.*T\d{2}:\d{2}:\d{2})\.(\d+)(.*)$", text)
    if match:  # Python < 3.11 accepts at most 6 fractional digits; .NET sends 7.
        text = f"{match.group(1)}.{match.group(2)[:6].ljust(6, '0')}{match.group(3)}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.year == _NO_DATE_YEAR:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def parse_timespan(value: Any) -> timedelta | None:
    """Parse a .NET TimeSpan string `[d.]hh:mm:ss[.fffffff]`; None when absent or unreadable."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=float(value))
    if not isinstance(value, str):
        return None
    match = _TIMESPAN.match(value.strip())
    if not match:
        return None
    frac = match.group("frac") or "0"
    return timedelta(
        days=int(match.group("days") or 0),
        hours=int(match.group("h")),
        minutes=int(match.group("m")),
        seconds=int(match.group("s")) + float("0." + frac),
    )


def format_timespan(delta: timedelta) -> str:
    """Format a duration as a .NET TimeSpan string, as the API expects."""
    total = int(delta.total_seconds())
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    core = f"{hours:02d}:{minutes:02d}:{seconds:02d}"
    return f"{days}.{core}" if days else core


def _str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


def _num(data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        return None
    return number if math.isfinite(number) else None  # Python's json reads NaN and Infinity


def _int(data: Mapping[str, Any], key: str) -> int | None:
    value = _num(data, key)
    return None if value is None else int(value)


def _list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    return value if isinstance(value, list) else []


@dataclass(frozen=True)
class TaskError:
    """One error the API reports on a task or an instance."""

    code: str | None
    message: str
    debug: str | None = None

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}" if self.code else self.message

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form (for trigger events)."""
        return {"code": self.code, "message": self.message, "debug": self.debug}


def parse_error(data: Any) -> TaskError | None:
    """Read an error object; plain strings are accepted too."""
    if isinstance(data, str):
        return TaskError(None, data)
    if not isinstance(data, Mapping):
        return None
    message = _str(data, "message") or _str(data, "debug") or ""
    return TaskError(_str(data, "code"), message, _str(data, "debug"))


@dataclass(frozen=True)
class InstanceInfo:
    """What the API says of one completed instance."""

    instance_id: int
    state: str | None
    wall_time_sec: float | None = None
    exec_time_sec: float | None = None
    attempts: int | None = None
    error: TaskError | None = None
    results: tuple[str, ...] = ()

    @property
    def succeeded(self) -> bool:
        """Whether this instance ended successfully."""
        return (self.state or "").lower() == "success"


def parse_instance(data: Any) -> InstanceInfo | None:
    """Read one `completedInstances` entry; None when it has no instance id."""
    if not isinstance(data, Mapping):
        return None
    instance_id = _int(data, "instanceId")
    if instance_id is None:
        return None
    results = tuple(r for r in _list(data, "results") if isinstance(r, str))
    return InstanceInfo(
        instance_id=instance_id,
        state=_str(data, "state"),
        wall_time_sec=_num(data, "wallTimeSec"),
        exec_time_sec=_num(data, "execTimeSec"),
        attempts=_int(data, "executionAttemptCount"),
        error=parse_error(data.get("error")),
        results=results,
    )


@dataclass(frozen=True)
class TaskSummary:
    """The fields of a task that decide what to do next: its state, progress, errors and instances.

    Built from a summary or from a full task; fields a summary lacks are empty.
    """

    uuid: str
    name: str | None = None
    state: str | None = None
    progress: float | None = None
    tags: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    creation_date: datetime | None = None
    end_date: datetime | None = None
    errors: tuple[TaskError, ...] = ()
    instances: tuple[InstanceInfo, ...] = ()
    results_count: int | None = None
    result_bucket: str | None = None
    results_bucket_prefix: str | None = None
    instance_count: int | None = None
    advanced_ranges: str | None = None
    failed_range: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


def _require_object(data: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise MalformedResponseException(f"Expected a {what} object, got {type(data).__name__}")
    return data


def parse_task_summary(data: Any, *, keep_raw: bool = True) -> TaskSummary:
    """Read a task or task summary; raises `MalformedResponseException` when it has no uuid.

    `keep_raw=False` leaves `raw` empty instead of holding the whole decoded document (for summaries
    kept in bulk, where the document's hundred-odd objects per task would only weigh on memory and GC).
    """
    obj = _require_object(data, "task")
    uuid = _str(obj, "uuid")
    if not uuid:
        raise MalformedResponseException("Task object without a 'uuid'")
    labels_raw = obj.get("labels")
    labels = {str(k): str(v) for k, v in labels_raw.items() if v is not None} if isinstance(labels_raw, Mapping) else {}
    status = obj.get("status")
    failed_range = _str(status, "failedRange") if isinstance(status, Mapping) else None
    errors = tuple(e for e in (parse_error(x) for x in _list(obj, "errors")) if e is not None)
    instances = tuple(i for i in (parse_instance(x) for x in _list(obj, "completedInstances")) if i is not None)
    return TaskSummary(
        uuid=uuid,
        name=_str(obj, "name"),
        state=normalize_state(_str(obj, "state")),
        progress=_num(obj, "progress"),
        tags=tuple(t for t in _list(obj, "tags") if isinstance(t, str)),
        labels=labels,
        creation_date=parse_datetime(obj.get("creationDate")),
        end_date=parse_datetime(obj.get("endDate")),
        errors=errors,
        instances=instances,
        results_count=_int(obj, "resultsCount"),
        result_bucket=_str(obj, "resultBucket"),
        results_bucket_prefix=_str(obj, "resultsBucketPrefix"),
        instance_count=_int(obj, "instanceCount"),
        advanced_ranges=_str(obj, "advancedRanges"),
        failed_range=failed_range,
        raw=obj if keep_raw else {},
    )


def failure_message(summary: TaskSummary, limit: int = 10) -> str:
    """A one-paragraph account of why a task failed: its errors and its failed instances."""
    parts: list[str] = [str(e) for e in summary.errors[:limit]]
    failed = [i for i in summary.instances if not i.succeeded]
    for inst in failed[:limit]:
        detail = f"instance {inst.instance_id}: {inst.state or 'unknown state'}"
        if inst.error is not None:
            detail += f" ({inst.error})"
        parts.append(detail)
    if len(failed) > limit:
        parts.append(f"... and {len(failed) - limit} more failed instances")
    if not parts and summary.failed_range:
        parts.append(f"failed instances: {summary.failed_range}")
    return "; ".join(parts) if parts else "no error details reported"
