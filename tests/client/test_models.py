"""Tolerant parsing of task JSON: missing and extra fields, both date formats, and junk."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_qarnot.client import (
    MalformedResponseException,
    QarnotException,
    QConnection,
    QTask,
    failure_message,
)
from airflow_provider_qarnot.client.errors import error_message
from airflow_provider_qarnot.client.models import (
    format_timespan,
    parse_datetime,
    parse_task_summary,
    parse_timespan,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-02T10:01:05Z", datetime(2024, 5, 2, 10, 1, 5, tzinfo=timezone.utc)),
        ("2024-05-02T10:01:05.537708Z", datetime(2024, 5, 2, 10, 1, 5, 537708, tzinfo=timezone.utc)),
        ("2024-05-02T10:01:05.5377081Z", datetime(2024, 5, 2, 10, 1, 5, 537708, tzinfo=timezone.utc)),
        ("2024-05-02T10:01:05+02:00", datetime(2024, 5, 2, 8, 1, 5, tzinfo=timezone.utc)),
        ("0001-01-01T00:00:00Z", None),
        ("", None),
        ("yesterday", None),
        (None, None),
        (12, None),
    ],
)
def test_parse_datetime(text: Any, expected: datetime | None) -> None:
    assert parse_datetime(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("00:01:10", timedelta(minutes=1, seconds=10)),
        ("1.03:16:50.5000000", timedelta(days=1, hours=3, minutes=16, seconds=50.5)),
        ("bogus", None),
        (None, None),
        (30, timedelta(seconds=30)),
    ],
)
def test_parse_timespan(text: Any, expected: timedelta | None) -> None:
    assert parse_timespan(text) == expected


def test_format_timespan_round_trips() -> None:
    for delta in (timedelta(0), timedelta(hours=5, seconds=3), timedelta(days=2, minutes=1)):
        assert parse_timespan(format_timespan(delta)) == delta


def test_full_task_is_parsed() -> None:
    summary = parse_task_summary(
        {
            "uuid": "u-1",
            "name": "render",
            "state": "Failure",
            "progress": 100.0,
            "tags": ["a", 3, "b"],
            "labels": {"dag": "d", "none": None},
            "creationDate": "2024-05-02T10:00:12Z",
            "endDate": "0001-01-01T00:00:00Z",
            "errors": [{"code": "E1", "message": "instance 1 failed", "debug": None}, "raw text", 42],
            "completedInstances": [
                {"instanceId": 0, "state": "Success", "results": ["s3://h/out/0.png"], "wallTimeSec": 1.5},
                {"instanceId": 1, "state": "Failure", "error": {"code": "E2", "message": "exit 3"}},
                {"state": "Success"},
            ],
            "status": {"failedRange": "1", "executionTimeByCpuModel": []},
            "resultsCount": 1,
            "unexpected": {"whatever": True},
        }
    )
    assert summary.uuid == "u-1"
    assert summary.state == "Failure"
    assert summary.tags == ("a", "b")
    assert summary.labels == {"dag": "d"}
    assert summary.end_date is None
    assert [str(e) for e in summary.errors] == ["[E1] instance 1 failed", "raw text"]
    assert [i.instance_id for i in summary.instances] == [0, 1]
    assert summary.instances[0].results == ("s3://h/out/0.png",)
    assert summary.failed_range == "1"
    message = failure_message(summary)
    assert "instance 1: Failure ([E2] exit 3)" in message
    assert "[E1] instance 1 failed" in message


def test_raw_document_is_kept_unless_asked_not_to() -> None:
    doc = {"uuid": "u", "state": "Success", "unexpected": {"whatever": True}}
    assert parse_task_summary(doc).raw is doc
    light = parse_task_summary(doc, keep_raw=False)
    assert light.raw == {}
    assert light == parse_task_summary(doc)  # raw takes no part in equality


def test_state_spelling_is_normalized() -> None:
    assert parse_task_summary({"uuid": "u", "state": "success"}).state == "Success"
    assert parse_task_summary({"uuid": "u", "state": "SomethingNew"}).state == "SomethingNew"


@pytest.mark.parametrize("body", [None, [], "task", 3, {}, {"uuid": ""}, {"uuid": 5}])
def test_malformed_task_raises_malformed_response(body: Any) -> None:
    with pytest.raises(MalformedResponseException):
        parse_task_summary(body)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=25,
)
_task_keys = st.sampled_from(
    [
        "uuid",
        "name",
        "state",
        "progress",
        "tags",
        "labels",
        "creationDate",
        "endDate",
        "errors",
        "completedInstances",
        "status",
        "resultsCount",
        "instanceCount",
        "advancedRanges",
        "constants",
        "advancedResourceBuckets",
        "retrySettings",
        "dependencies",
        "resultBucket",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_task_keys, _json, max_size=12) | _json)
def test_parser_raises_only_qarnot_exceptions(body: Any) -> None:
    """Whatever JSON the server sends, parsing gives a summary or a QarnotException: never KeyError or TypeError."""
    try:
        summary = parse_task_summary(body)
        failure_message(summary)
        task = QTask._from_json(_OFFLINE, body)  # what `QTask.retrieve` and `update` do with an answer
    except QarnotException:
        return
    task.result_keys()
    _ = task.resources


_OFFLINE = QConnection("http://127.0.0.1:9", "offline-token")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("advancedResourceBuckets", [{"bucketName": "b", "filtering": {"prefixFiltering": "x"}}]),
        ("tags", 1),
        ("dependencies", {"dependsOn": 1}),
        ("instanceCount", float("nan")),
        ("instanceCount", float("inf")),
        ("instanceCount", 10**400),
        ("completedInstances", [{"instanceId": float("inf"), "state": "Success"}]),
    ],
)
def test_fields_of_an_unexpected_shape_raise_malformed_response_or_are_ignored(field: str, value: Any) -> None:
    body = {"uuid": "u", "name": "n", "profile": "p", "state": "Success", field: value}
    try:
        task = QTask._from_json(_OFFLINE, body)
    except MalformedResponseException:
        return
    assert task.uuid == "u"
    task.result_keys()


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=100, max_value=599),
    st.binary(max_size=200) | _json.map(lambda v: __import__("json").dumps(v)),
)
def test_error_message_never_raises(status: int, body: Any) -> None:
    assert isinstance(error_message(status, body), str)
