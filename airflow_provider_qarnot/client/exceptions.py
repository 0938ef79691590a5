"""The client's exceptions: one base class, one subclass per way a Qarnot call can fail.

Every exception carries the HTTP status (when there was a response) and the server's own message,
and never the API token (`QConnection` redacts it before an exception is built).
"""

from __future__ import annotations


class QarnotException(Exception):
    """Base class of every error the Qarnot client raises."""

    def __init__(self, message: str = "", *, status_code: int | None = None) -> None:
        self.message = message
        self.status_code = status_code
        super().__init__(message)

    def __str__(self) -> str:
        if self.status_code is None:
            return self.message
        return f"{self.message} (HTTP {self.status_code})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status_code={self.status_code!r})"


class QarnotApiError(QarnotException):
    """An API error that no more specific exception describes."""


class InvalidRequestException(QarnotApiError):
    """The API rejected the request body as invalid (HTTP 400); sending it again cannot help."""


class UnauthorizedException(QarnotException):
    """The token is missing, wrong, or not allowed to do this (HTTP 401, or a 403 that is not a quota)."""


class NotEnoughCreditsException(QarnotException):
    """The account has no credits left (HTTP 402)."""


class MaxTaskException(QarnotException):
    """The account's task quota is reached (HTTP 403 "Maximum number of tasks reached")."""


class MaxPoolException(QarnotException):
    """The account's pool quota is reached."""


class MaxJobException(QarnotException):
    """The account's job quota is reached."""


class MissingTaskException(QarnotException):
    """No task has this uuid or shortname (HTTP 404 on a task)."""


class MissingTaskInstanceException(MissingTaskException):
    """The task has no instance with this id (HTTP 404 on a per-instance call)."""


class MissingBucketException(QarnotException):
    """A bucket the call needs does not exist (HTTP 404 on submit, or S3 NoSuchBucket)."""


MissingDiskException = MissingBucketException
"""The first SDK's name for a missing storage location; an alias of :class:`MissingBucketException`."""


class MissingProfileException(QarnotException):
    """No profile has this name."""


class MissingPoolException(QarnotException):
    """No pool has this uuid."""


class MissingJobException(QarnotException):
    """No job has this uuid."""


class BucketStorageUnavailableException(QarnotException):
    """The cluster advertises no storage endpoint, so bucket operations are impossible."""


class TransientFailureException(QarnotException):
    """A call kept failing with transient errors (429, 5xx, timeouts, dropped connections) until retries ran out.

    `unsent` is True when the last attempt surely did not reach the server or was refused before being
    acted on (a failed connect, a 429), so resending cannot duplicate anything; `retry_after` is the
    server's `Retry-After` in seconds, when it sent one.
    """

    def __init__(
        self,
        message: str = "",
        *,
        status_code: int | None = None,
        attempts: int = 0,
        unsent: bool = False,
        retry_after: float | None = None,
        reason: str | None = None,
    ) -> None:
        self.attempts = attempts
        self.unsent = unsent
        self.retry_after = retry_after
        #: The last failure alone (the server's message, or the connection error), without the attempt count.
        self.reason = message if reason is None else reason
        super().__init__(message, status_code=status_code)


class CertificateVerificationException(QarnotException):
    """The server's TLS certificate could not be verified; retrying cannot help (give `verify` a CA bundle)."""


class MalformedResponseException(QarnotException):
    """The API answered with a body this client cannot read (not JSON, or missing required fields)."""


class TaskNotSubmittedException(QarnotException):
    """The operation needs a submitted task, and this one has not been submitted."""


__all__ = [
    "BucketStorageUnavailableException",
    "CertificateVerificationException",
    "InvalidRequestException",
    "MalformedResponseException",
    "MaxJobException",
    "MaxPoolException",
    "MaxTaskException",
    "MissingBucketException",
    "MissingDiskException",
    "MissingJobException",
    "MissingPoolException",
    "MissingProfileException",
    "MissingTaskException",
    "MissingTaskInstanceException",
    "NotEnoughCreditsException",
    "QarnotApiError",
    "QarnotException",
    "TaskNotSubmittedException",
    "TransientFailureException",
    "UnauthorizedException",
]
