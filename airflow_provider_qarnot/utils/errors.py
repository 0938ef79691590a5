"""The one place that turns Qarnot client errors and task outcomes into Airflow exceptions.

- Errors that a retry cannot fix (bad token, untrusted TLS certificate, unknown profile/bucket/pool/job,
  invalid request or argument, a task uuid that does not exist) become `AirflowFailException`: the task fails at once.
- Errors that may pass (quota reached, no credits, transient failures after the client's own retries,
  unreadable answers) become `AirflowException`, so Airflow's `retries` apply.
- A Qarnot task that ended in Failure or Cancelled becomes `AirflowException` (a retry resubmits),
  or `AirflowFailException` where a retry cannot change the outcome (the sensor).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_provider_qarnot.client import states
from airflow_provider_qarnot.client.exceptions import (
    BucketStorageUnavailableException,
    CertificateVerificationException,
    InvalidRequestException,
    MalformedResponseException,
    MissingBucketException,
    MissingJobException,
    MissingPoolException,
    MissingProfileException,
    MissingTaskException,
    QarnotApiError,
    QarnotException,
    TransientFailureException,
    UnauthorizedException,
)
from airflow_provider_qarnot.client.models import TaskSummary, failure_message

#: Client errors that no retry can fix: they fail the Airflow task without retrying.
NOT_RETRYABLE: tuple[type[BaseException], ...] = (
    UnauthorizedException,
    MissingProfileException,
    MissingBucketException,
    MissingPoolException,
    MissingJobException,
    MissingTaskException,
    InvalidRequestException,
    BucketStorageUnavailableException,
    CertificateVerificationException,
    ValueError,
    TypeError,
)

_HINTS: dict[type[BaseException], str] = {
    UnauthorizedException: "the Qarnot API rejected the token; check the connection's password",
    TransientFailureException: "the Qarnot API kept failing with transient errors",
}


def describe(exc: BaseException) -> str:
    """A one-line account of a client error, with a hint for the common ones (never the token)."""
    for kind, hint in _HINTS.items():
        if isinstance(exc, kind):
            return f"{hint}: {exc}"
    return f"{type(exc).__name__}: {exc}" if isinstance(exc, QarnotException) else str(exc)


def to_airflow_exception(exc: BaseException, action: str | None = None) -> AirflowException:
    """The Airflow exception to raise for `exc`; `action` says what was being done."""
    if isinstance(exc, AirflowException):
        return exc
    message = f"{action} failed: {describe(exc)}" if action else describe(exc)
    if isinstance(exc, NOT_RETRYABLE):
        return AirflowFailException(message)
    return AirflowException(message)


@contextmanager
def airflow_errors(action: str) -> Iterator[None]:
    """Re-raise client errors and argument errors met while doing `action` as Airflow exceptions."""
    try:
        yield
    except AirflowException:
        raise
    except (QarnotException, ValueError, TypeError) as exc:
        raise to_airflow_exception(exc, action) from exc


def is_transient(exc: BaseException) -> bool:
    """Whether polling again later may succeed (5xx, timeouts, dropped connections, unreadable answers)."""
    if isinstance(exc, TransientFailureException | MalformedResponseException):
        return True
    if isinstance(exc, QarnotApiError) and not isinstance(exc, InvalidRequestException):
        return exc.status_code is None or exc.status_code >= 500
    if isinstance(exc, QarnotException):
        return False
    return isinstance(exc, OSError)  # requests' ConnectionError and Timeout are OSErrors


def task_outcome_message(summary: TaskSummary, redact: Callable[[str], str] | None = None) -> str:
    """What happened to a final task, in one line: success, or the failure/cancellation with its errors.

    The errors come from Qarnot (and may quote the task's output): pass the hook's `redact` to hide the token.
    """
    who = f"Qarnot task {summary.uuid}" + (f" ({summary.name!r})" if summary.name else "")
    if states.is_success(summary.state):
        message = f"{who} succeeded"
    elif summary.state == states.CANCELLED:
        details = failure_message(summary) if (summary.errors or summary.instances) else ""
        message = f"{who} was cancelled" + (
            f": {details}" if details and details != "no error details reported" else ""
        )
    else:
        message = f"{who} ended in state {summary.state}: {failure_message(summary)}"
    return redact(message) if redact is not None else message


def task_outcome_exception(
    summary: TaskSummary, *, retryable: bool = True, redact: Callable[[str], str] | None = None
) -> AirflowException:
    """The exception for a task that ended without success (Failure or Cancelled)."""
    message = task_outcome_message(summary, redact)
    return AirflowException(message) if retryable else AirflowFailException(message)


__all__ = [
    "NOT_RETRYABLE",
    "airflow_errors",
    "describe",
    "is_transient",
    "task_outcome_exception",
    "task_outcome_message",
    "to_airflow_exception",
]
