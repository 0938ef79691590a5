"""The one error mapper: from (call, HTTP status, body) to the exception that describes the failure."""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from airflow_provider_qarnot.client.exceptions import (
    InvalidRequestException,
    MaxJobException,
    MaxPoolException,
    MaxTaskException,
    MissingBucketException,
    MissingJobException,
    MissingPoolException,
    MissingProfileException,
    MissingTaskException,
    MissingTaskInstanceException,
    NotEnoughCreditsException,
    QarnotApiError,
    QarnotException,
    TransientFailureException,
    UnauthorizedException,
)

_MAX_MESSAGE_CHARS = 2000


class ApiCall(enum.Enum):
    """What kind of resource a call addressed; decides what a 404 or a 403 means."""

    GENERIC = "generic"
    SUBMIT_TASK = "submit_task"
    TASK = "task"
    TASK_INSTANCE = "task_instance"
    PROFILE = "profile"
    SUBMIT_POOL = "submit_pool"
    POOL = "pool"
    SUBMIT_JOB = "submit_job"
    JOB = "job"


def error_message(status: int, body: bytes | str, content_type: str = "", redact: Callable[[str], str] = str) -> str:
    """The server's message from any body shape the API uses, else the body text, else the reason phrase.

    `redact` runs before the message is cut to length, so that no part of a secret survives the cut.

    Shapes read: `{"message"}`, `{"error": str}`, `{"error": {"message"}}`, ASP.NET problem+json
    (`title`, `detail`, `errors: {field: [msgs]}`) and `{"errors": {field: [msgs]}}`.
    """
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = text.strip()
    message = ""
    if text:
        try:
            data: Any = json.loads(text)
        except ValueError:
            message = text
        else:
            message = _message_from_json(data) or ("" if isinstance(data, dict | list) else text)
    if not message:
        try:
            message = HTTPStatus(status).phrase
        except ValueError:
            message = f"HTTP {status}"
    message = redact(message)
    if len(message) > _MAX_MESSAGE_CHARS:
        message = message[:_MAX_MESSAGE_CHARS] + "…"
    return message


def _message_from_json(data: Any) -> str:
    if isinstance(data, str):
        return data
    if not isinstance(data, dict):
        return ""
    lowered = {str(k).lower(): v for k, v in data.items()}
    parts: list[str] = []
    message = lowered.get("message")
    error = lowered.get("error")
    if isinstance(message, str) and message:
        parts.append(message)
    elif isinstance(error, str) and error:
        parts.append(error)
    elif isinstance(error, dict):
        nested = _message_from_json(error)
        if nested:
            parts.append(nested)
    if not parts:
        for key in ("title", "detail"):
            value = lowered.get(key)
            if isinstance(value, str) and value and value not in parts:
                parts.append(value)
    errors = lowered.get("errors")
    if isinstance(errors, dict):
        for field, msgs in errors.items():
            items = msgs if isinstance(msgs, list) else [msgs]
            parts.append(f"{field}: " + "; ".join(str(m) for m in items))
    elif isinstance(errors, list):
        parts.extend(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors)
    return " | ".join(parts)


def _mentions(message: str, *words: str) -> bool:
    lowered = message.lower()
    return any(w in lowered for w in words)


#: What a submit's "not found" message may name, and the exception for each.
_SUBMIT_MISSING: tuple[tuple[tuple[str, ...], type[QarnotException]], ...] = (
    (("pool",), MissingPoolException),
    (("job",), MissingJobException),
    (("profile",), MissingProfileException),
    (("bucket", "disk"), MissingBucketException),
)


_MISSING_THING = re.compile(r"\bmissing\s+(pool|job|profile|bucket|disk)\b", re.IGNORECASE)


def _missing_for_submit(message: str) -> type[QarnotException] | None:
    """On submit, what a "not found" message names: the kind of thing mentioned first.

    "First" matters because names quote user text: in "Bucket 'nightly-jobs' not found" the subject is
    the bucket, not a job.
    """
    named = _MISSING_THING.search(message)  # "missing pool 42" names its kind; "missing value for..." does not
    if named is not None:
        kind = named.group(1).lower()
        return next(cls for words, cls in _SUBMIT_MISSING if kind in words)
    if not _mentions(message, "not found", "unknown", "does not exist", "doesn't exist", "no such"):
        return None
    if _mentions(message, "required"):  # "the profile field is required": a validation error, not a missing thing
        return None
    lowered = message.lower()
    best: tuple[int, type[QarnotException]] | None = None
    for words, cls in _SUBMIT_MISSING:
        positions = [lowered.find(w) for w in words if w in lowered]
        if positions and (best is None or min(positions) < best[0]):
            best = (min(positions), cls)
    return best[1] if best is not None else None


_NOT_FOUND: dict[ApiCall, type[QarnotException]] = {
    ApiCall.TASK: MissingTaskException,
    ApiCall.TASK_INSTANCE: MissingTaskInstanceException,
    ApiCall.PROFILE: MissingProfileException,
    ApiCall.POOL: MissingPoolException,
    ApiCall.JOB: MissingJobException,
    ApiCall.SUBMIT_POOL: MissingBucketException,
    ApiCall.SUBMIT_JOB: MissingJobException,
}

_QUOTA: dict[ApiCall, tuple[str, type[QarnotException]]] = {
    ApiCall.SUBMIT_TASK: ("maximum number of tasks", MaxTaskException),
    ApiCall.SUBMIT_POOL: ("maximum number of pools", MaxPoolException),
    ApiCall.SUBMIT_JOB: ("maximum number of jobs", MaxJobException),
}


def map_error(
    call: ApiCall, status: int, message: str, *, attempts: int = 1, retry_after: float | None = None
) -> QarnotException:
    """Build the exception for a failed call; `message` is the server's, already read and redacted.

    A 404 on submit names a missing bucket unless the message says otherwise (a missing pool or job is
    normally a 400 that names it).
    """
    cls: type[QarnotException]
    if status == 401:
        cls = UnauthorizedException
    elif status == 402:
        cls = QarnotApiError if _mentions(message, "hardware constraint") else NotEnoughCreditsException
    elif status == 403:
        quota = _QUOTA.get(call)
        if quota is not None and _mentions(message, quota[0]):
            cls = quota[1]
        elif _mentions(message, "maximum number of tasks"):
            cls = MaxTaskException
        else:
            cls = UnauthorizedException
    elif status == 404:
        if call is ApiCall.SUBMIT_TASK:
            cls = _missing_for_submit(message) or MissingBucketException
        else:
            cls = _NOT_FOUND.get(call, QarnotApiError)
    elif status == 400:
        found = _missing_for_submit(message) if call in (ApiCall.SUBMIT_TASK, ApiCall.SUBMIT_JOB) else None
        cls = found or InvalidRequestException
    elif status in (429, 500, 502, 503, 504):
        return TransientFailureException(
            f"{message} (gave up after {attempts} attempt{'s' if attempts != 1 else ''})",
            status_code=status,
            attempts=attempts,
            unsent=status == 429,
            retry_after=retry_after,
            reason=f"{message} (HTTP {status})",
        )
    else:
        cls = QarnotApiError
    return cls(message, status_code=status)
