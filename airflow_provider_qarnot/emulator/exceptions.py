"""Errors that carry their HTTP status and body, raised by the model and the parsers, rendered by the app.

Bodies follow the real API: ``{"message": ...}`` for most errors, and ASP.NET ProblemDetails
(``application/problem+json``) for validation errors.
"""

from __future__ import annotations

from typing import Any

from .formats import new_trace_id

JSON = "application/json"
PROBLEM_JSON = "application/problem+json"


class EmulatorError(Exception):
    """An error answered with ``status`` and a JSON ``body``."""

    status: int = 500
    content_type: str = JSON

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, Any]:
        """The JSON body of the error response."""
        return {"message": self.message}

    def headers(self) -> dict[str, str]:
        """Extra response headers."""
        return {}


class Unauthorized(EmulatorError):
    """401: missing or wrong ``Authorization`` token."""

    status = 401

    def __init__(self, message: str = "Unauthorized") -> None:
        super().__init__(message)


class NotEnoughCredits(EmulatorError):
    """402: the account has no credits left."""

    status = 402

    def __init__(self, message: str = "Not enough credits") -> None:
        super().__init__(message)


class Forbidden(EmulatorError):
    """403: quota reached, or an operation invalid in the resource's current state."""

    status = 403


class MaxTasksReached(Forbidden):
    """403 with the message the SDKs look for to raise ``MaxTaskException``."""

    def __init__(self) -> None:
        super().__init__("Maximum number of tasks reached")


class NotFound(EmulatorError):
    """404: unknown task, job, pool, profile, instance, snapshot or resource bucket."""

    status = 404


class MethodNotAllowed(EmulatorError):
    """405: the path exists but not with this method."""

    status = 405

    def __init__(self) -> None:
        super().__init__("Method Not Allowed")


class Conflict(EmulatorError):
    """409: a unique name is already taken."""

    status = 409


class ValidationProblem(EmulatorError):
    """400 ``application/problem+json`` with per-field messages, like ASP.NET model validation."""

    status = 400
    content_type = PROBLEM_JSON

    def __init__(self, errors: dict[str, list[str]], title: str = "One or more validation errors occurred.") -> None:
        summary = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in errors.items())
        super().__init__(summary or title)
        self.errors = errors
        self.title = title

    @classmethod
    def single(cls, field: str, message: str) -> ValidationProblem:
        """A problem about one field."""
        return cls({field: [message]})

    def body(self) -> dict[str, Any]:
        return {
            "type": "https://tools.ietf.org/html/rfc9110#section-15.5.1",
            "title": self.title,
            "status": 400,
            "detail": self.message,
            "traceId": new_trace_id(),
            "errors": self.errors,
        }
