"""A Qarnot REST client over `requests`, with no Airflow imports: `QConnection`, `QTask` and the exceptions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_qarnot.client import states
from airflow_provider_qarnot.client.errors import ApiCall, error_message, map_error
from airflow_provider_qarnot.client.exceptions import (
    BucketStorageUnavailableException,
    CertificateVerificationException,
    InvalidRequestException,
    MalformedResponseException,
    MaxJobException,
    MaxPoolException,
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
    TaskNotSubmittedException,
    TransientFailureException,
    UnauthorizedException,
)
from airflow_provider_qarnot.client.models import InstanceInfo, TaskError, TaskSummary, failure_message
from airflow_provider_qarnot.client.retry import RetryPolicy
from airflow_provider_qarnot.client.spec import ResourceBucket, TaskSpec

if TYPE_CHECKING:
    from airflow_provider_qarnot.client.connection import DEFAULT_CLUSTER_URL, QConnection
    from airflow_provider_qarnot.client.storage import BucketStorage
    from airflow_provider_qarnot.client.task import QTask

# The transport pulls in `requests` (and storage, boto3): they load on first use, so that importing the
# light parts (states, models, exceptions) costs the triggerer's event loop almost nothing.
_LAZY = {
    "DEFAULT_CLUSTER_URL": "airflow_provider_qarnot.client.connection",
    "QConnection": "airflow_provider_qarnot.client.connection",
    "BucketStorage": "airflow_provider_qarnot.client.storage",
    "QTask": "airflow_provider_qarnot.client.task",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "DEFAULT_CLUSTER_URL",
    "ApiCall",
    "BucketStorage",
    "BucketStorageUnavailableException",
    "CertificateVerificationException",
    "InstanceInfo",
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
    "QConnection",
    "QTask",
    "QarnotApiError",
    "QarnotException",
    "ResourceBucket",
    "RetryPolicy",
    "TaskError",
    "TaskNotSubmittedException",
    "TaskSpec",
    "TaskSummary",
    "TransientFailureException",
    "UnauthorizedException",
    "error_message",
    "failure_message",
    "map_error",
    "states",
]
