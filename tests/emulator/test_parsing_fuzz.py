"""Property: whatever body a client sends, the emulator answers with a deliberate status, never a 500;
every 400 is an ASP.NET ProblemDetails document."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_qarnot.emulator import Emulator

from .conftest import Api

TASK_KEYS = [
    "name", "Name", "profile", "poolUuid", "jobUuid", "instanceCount", "InstanceCount", "advancedRanges",
    "constants", "constraints", "tags", "labels", "dependencies", "advancedResourceBuckets", "resourceBuckets",
    "resultBucket", "ResultsCacheTTLSec", "retrySettings", "maxRetriesPerInstance", "resultsWhitelist",
    "completionTimeToLive", "hardwareConstraints", "schedulingType", "shortname", "privileges",
    "forcedNetworkRules", "secretsAccessRights", "maxTimeQueueSeconds", "snapshotInterval",
]  # fmt: skip
FILTER_KEYS = ["operator", "Operator", "field", "Field", "value", "values", "Values", "filters", "Filters"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["docker-batch", "0-3", "3-1", "a", "Equal", "In", "Tags", "Uuid", "And", "Or", "Like", "("]),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8), st.sampled_from(TASK_KEYS + FILTER_KEYS)), children, max_size=5),
    ),
    max_leaves=12,
)
task_like = st.builds(
    lambda name, extra: {"name": name, "profile": "docker-batch", "instanceCount": 1, **extra},
    st.text(min_size=1, max_size=8),
    st.dictionaries(st.sampled_from(TASK_KEYS), json_values, max_size=6),
)
filter_like = st.recursive(
    st.fixed_dictionaries(
        {},
        optional={
            "operator": st.sampled_from(["Equal", "NotEqual", "In", "NotIn", "Like", "LessThan", "And", "Or", "x"]),
            "field": st.sampled_from(["Uuid", "Tags", "State", "CreationDate", "InstanceCount", "Labels.k", "nope"]),
            "value": json_values,
            "values": json_values,
        },
    ),
    lambda children: st.fixed_dictionaries({"operator": st.sampled_from(["And", "Or"]), "filters": st.lists(children)}),
    max_leaves=6,
)
raw_bodies = st.one_of(
    st.binary(max_size=64),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b"", b"{", b"[1,", b'{"name": NaN}', b"\xff", b"null", b"[]", b"[null]", b"1e999"]),
)
ENDPOINTS = [
    ("POST", "/tasks"),
    ("POST", "/tasks/paginate"),
    ("POST", "/tasks/summaries/paginate"),
    ("POST", "/tasks/search"),
    ("POST", "/jobs"),
    ("POST", "/pools"),
    ("POST", "/jobs/paginate"),
    ("PUT", "/_emulator/faults"),
]


@pytest.fixture(scope="module")
def fuzz_api() -> Iterator[Api]:
    with Emulator(token="fuzz", mode="simulate", sim_duration=3600) as emu:
        api = Api(emu)
        yield api
        api.session.close()


@pytest.fixture(scope="module")
def existing_task(fuzz_api: Api) -> str:
    return fuzz_api.submit()


def _check(response: Any) -> None:
    assert response.status_code < 500, response.text
    assert response.status_code in (200, 400, 402, 403, 404), response.text
    if response.status_code == 400:
        assert response.headers["content-type"].startswith("application/problem+json"), response.text
        body = response.json()
        assert body["status"] == 400 and isinstance(body["errors"], dict) and body["errors"]


SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(body=raw_bodies, endpoint=st.sampled_from(ENDPOINTS))
def test_raw_bodies_never_500(fuzz_api: Api, body: bytes, endpoint: tuple[str, str]) -> None:
    method, path = endpoint
    _check(fuzz_api.request(method, path, data=body, headers={"Content-Type": "application/json"}))


@SETTINGS
@given(body=task_like)
def test_task_like_bodies_never_500(fuzz_api: Api, existing_task: str, body: dict[str, Any]) -> None:
    _check(fuzz_api.post("/tasks", json=body))
    uuid = existing_task
    _check(fuzz_api.put(f"/tasks/{uuid}", json=body))
    _check(fuzz_api.post(f"/tasks/{uuid}/clone", json=body))


@SETTINGS
@given(filter_=filter_like, size=st.one_of(st.none(), st.integers(-5, 500), st.text(max_size=3)))
def test_filters_never_500(fuzz_api: Api, filter_: dict[str, Any], size: Any) -> None:
    for path in ("/tasks/paginate", "/tasks/search", "/jobs/search", "/pools/paginate"):
        _check(fuzz_api.post(path, json={"filter": filter_, "maximumResults": size}))
