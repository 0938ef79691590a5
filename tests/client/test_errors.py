"""The error mapper: every body shape the API uses, and the exception each (call, status) becomes."""

from __future__ import annotations

import json

import pytest

from airflow_provider_qarnot.client import (
    InvalidRequestException,
    MaxTaskException,
    MissingBucketException,
    MissingDiskException,
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
from airflow_provider_qarnot.client.errors import ApiCall, error_message, map_error


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (json.dumps({"message": "Maximum number of tasks reached"}), "Maximum number of tasks reached"),
        (json.dumps({"Message": "case differs"}), "case differs"),
        (json.dumps({"error": "plain error"}), "plain error"),
        (json.dumps({"error": {"message": "nested error"}}), "nested error"),
        (
            json.dumps(
                {
                    "type": "https://tools.ietf.org/html/rfc7231#section-6.5.1",
                    "title": "One or more validation errors occurred.",
                    "status": 400,
                    "errors": {"InstanceCount": ["must be at least 1"]},
                }
            ),
            "One or more validation errors occurred. | InstanceCount: must be at least 1",
        ),
        (json.dumps({"errors": {"name": ["required"]}}), "name: required"),
        ("<html>Bad gateway</html>", "<html>Bad gateway</html>"),
        ("", "Service Unavailable"),
    ],
)
def test_error_message_reads_every_body_shape(body: str, expected: str) -> None:
    status = 503 if body == "" else 400
    assert error_message(status, body) == expected


def test_error_message_of_unknown_status_and_empty_body() -> None:
    assert error_message(599, b"") == "HTTP 599"


def test_long_messages_are_truncated() -> None:
    assert len(error_message(400, "x" * 10_000)) < 2100


@pytest.mark.parametrize(
    ("call", "status", "message", "expected"),
    [
        (ApiCall.TASK, 401, "Unauthorized", UnauthorizedException),
        (ApiCall.SUBMIT_TASK, 403, "Maximum number of tasks reached", MaxTaskException),
        (ApiCall.SUBMIT_TASK, 403, "MAXIMUM NUMBER OF TASKS REACHED", MaxTaskException),
        (ApiCall.SUBMIT_TASK, 403, "Forbidden", UnauthorizedException),
        (ApiCall.TASK, 403, "invalid operation on non running task", UnauthorizedException),
        (ApiCall.SUBMIT_TASK, 402, "Not enough credits", NotEnoughCreditsException),
        (ApiCall.SUBMIT_TASK, 402, "No hardware constraint matches", QarnotApiError),
        (ApiCall.SUBMIT_TASK, 404, "Bucket in-bucket not found", MissingBucketException),
        (ApiCall.SUBMIT_TASK, 404, "", MissingBucketException),
        (ApiCall.SUBMIT_TASK, 404, "Profile nope not found", MissingProfileException),
        (ApiCall.SUBMIT_TASK, 400, "Pool 1234 not found", MissingPoolException),
        (ApiCall.SUBMIT_TASK, 400, "Job 1234 does not exist", MissingJobException),
        (ApiCall.SUBMIT_TASK, 400, "instanceCount must be positive", InvalidRequestException),
        # The kind mentioned first is the missing one: names quote user text ("nightly-jobs", "pool-inputs").
        (ApiCall.SUBMIT_TASK, 404, "Bucket 'nightly-jobs' not found", MissingBucketException),
        (ApiCall.SUBMIT_TASK, 404, "The bucket pool-inputs does not exist", MissingBucketException),
        (ApiCall.SUBMIT_TASK, 400, "Unknown profile docker-batch-jobs", MissingProfileException),
        (ApiCall.SUBMIT_TASK, 400, "The profile field is required", InvalidRequestException),
        # "Missing" about a value, not a pool, job or profile: the profile exists, the request is invalid.
        (
            ApiCall.SUBMIT_TASK,
            400,
            "Constants: Missing value for the constant DOCKER_REPO in profile docker-batch",
            InvalidRequestException,
        ),
        (ApiCall.SUBMIT_TASK, 400, "Missing pool 1234", MissingPoolException),
        (ApiCall.SUBMIT_TASK, 400, "Job nightly-1: missing pool 42", MissingPoolException),
        (ApiCall.SUBMIT_TASK, 400, "Missing poolUuid in the request", InvalidRequestException),
        (ApiCall.TASK, 404, "Task not found", MissingTaskException),
        (ApiCall.TASK_INSTANCE, 404, "Instance not found", MissingTaskInstanceException),
        (ApiCall.PROFILE, 404, "not found", MissingProfileException),
        (ApiCall.POOL, 404, "not found", MissingPoolException),
        (ApiCall.JOB, 404, "not found", MissingJobException),
        (ApiCall.GENERIC, 404, "not found", QarnotApiError),
        (ApiCall.GENERIC, 409, "conflict", QarnotApiError),
        (ApiCall.TASK, 503, "Service Unavailable", TransientFailureException),
        (ApiCall.TASK, 429, "Too Many Requests", TransientFailureException),
    ],
)
def test_map_error(call: ApiCall, status: int, message: str, expected: type[QarnotException]) -> None:
    exc = map_error(call, status, message, attempts=3)
    assert type(exc) is expected
    assert exc.status_code == status
    assert message in str(exc)


def test_exhausted_retries_say_how_many_attempts() -> None:
    exc = map_error(ApiCall.TASK, 503, "Service Unavailable", attempts=6)
    assert isinstance(exc, TransientFailureException)
    assert exc.attempts == 6
    assert "6 attempts" in str(exc)


def test_missing_disk_is_missing_bucket() -> None:
    assert MissingDiskException is MissingBucketException


def test_missing_instance_is_a_missing_task() -> None:
    assert issubclass(MissingTaskInstanceException, MissingTaskException)
