"""Request bodies: whatever a client sends is either stored in a form the emulator can render back, or
refused with a 400 ProblemDetails; nested objects the emulator acts on are read case-insensitively."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_qarnot.emulator.validation import DEFAULT_ELASTIC

from .conftest import Api, assert_problem

VALID = {"name": "ok", "profile": "docker-batch", "instanceCount": 1}
JSON = {"Content-Type": "application/json"}


def _raw(task_extra: str) -> bytes:
    """A valid task body with ``task_extra`` (raw JSON text, e.g. ``"labels": {...}``) added."""
    return (json.dumps(VALID)[:-1] + ", " + task_extra + "}").encode()


def _strict(text: str) -> Any:
    """Parse as strict JSON: NaN and Infinity are not JSON."""

    def refuse(name: str) -> Any:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def _listings_still_render(api: Api) -> None:
    for path in ("/tasks", "/tasks/summaries", "/pools"):
        response = api.get(path)
        assert response.status_code == 200, response.text
        _strict(response.text)
    response = api.post("/tasks/paginate", json={})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/tasks", {**VALID, "name": "\ud800"}),
        ("POST", "/tasks", {**VALID, "labels": {"\udc00": "key"}}),
        ("POST", "/tasks", [{**VALID, "tags": ["ok", "bad\udfff"]}]),
        ("POST", "/tasks/search", {"filter": {"operator": "Equal", "field": "Name", "value": "\ud800"}}),
        ("POST", "/jobs", {"name": "\ud800"}),
        ("POST", "/pools", {"name": "p", "profile": "docker-batch", "instanceCount": 1, "tags": ["\ud801"]}),
        ("PUT", "/_emulator/faults", {"rules": [{"pattern": "GET /\ud800"}]}),
    ],
)
def test_lone_surrogates_are_refused(shared_api: Api, method: str, path: str, body: Any) -> None:
    before = len(shared_api.emu.tasks())
    problem = assert_problem(shared_api.request(method, path, json=body))
    assert "surrogate" in problem["detail"]
    assert len(shared_api.emu.tasks()) == before
    _listings_still_render(shared_api)


def test_surrogates_refused_in_updates_and_pairs_accepted(shared_api: Api) -> None:
    uuid = shared_api.submit(name="\ud83d\ude00 emoji")  # an escaped surrogate *pair* is one character
    assert shared_api.task(uuid)["name"] == "\U0001f600 emoji"
    assert_problem(shared_api.put(f"/tasks/{uuid}", json={"name": "\udbff"}))
    assert shared_api.task(uuid)["name"] == "\U0001f600 emoji"
    _listings_still_render(shared_api)


@pytest.mark.parametrize(
    "extra",
    [
        '"labels": {"x": 1e400}',
        '"labels": {"x": -1e400}',
        '"privileges": {"a": 1e400}',
        '"hardwareConstraints": [{"discriminator": "MinimumCoreHardwareConstraint", "coreCount": 1e999}]',
        '"maxTimeQueueSeconds": 1e400',
    ],
)
def test_non_finite_numbers_are_refused(shared_api: Api, extra: str) -> None:
    before = len(shared_api.emu.tasks())
    problem = assert_problem(shared_api.post("/tasks", data=_raw(extra), headers=JSON))
    assert "out of range" in problem["detail"]
    assert len(shared_api.emu.tasks()) == before
    _listings_still_render(shared_api)


def test_non_finite_numbers_refused_on_every_endpoint(shared_api: Api) -> None:
    pool = b'{"name": "p", "profile": "docker-batch", "instanceCount": 0, "elasticProperty": {"isElastic": true, '
    pool += b'"maxTotalSlots": 1e400}}'
    assert_problem(shared_api.post("/pools", data=pool, headers=JSON))
    search = b'{"filter": {"operator": "GreaterThan", "field": "CreationDate", "value": 1e400}}'
    assert_problem(shared_api.post("/tasks/search", data=search, headers=JSON))
    faults = b'{"rules": [{"pattern": "GET /x", "latency_ms": 1e400}]}'
    assert_problem(shared_api.put("/_emulator/faults", data=faults, headers=JSON))
    assert shared_api.get("/_emulator/faults").json()["rules"] == []
    _listings_still_render(shared_api)


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [70, 500, 950, 5000])
def test_deep_nesting_is_refused(shared_api: Api, depth: int) -> None:
    before = len(shared_api.emu.tasks())
    body = _raw('"privileges": {"a": ' + "[" * depth + "]" * depth + "}")
    assert_problem(shared_api.post("/tasks", data=body, headers=JSON))
    ands = depth // 2  # each And node is two levels: the node and its filters array
    leaf = '{"operator": "Equal", "field": "Uuid", "value": "x"}'
    deep_filter = '{"operator": "And", "filters": [' * ands + leaf + "]}" * ands
    response = shared_api.post("/tasks/search", data='{"filter": ' + deep_filter + "}", headers=JSON)
    assert_problem(response)
    assert len(shared_api.emu.tasks()) == before


def test_nesting_up_to_64_levels_is_accepted(shared_api: Api) -> None:
    # body (1) > hardwareConstraints (2) > constraint object (3) > 61 nested arrays (4..64)
    constraint = {"discriminator": "X", "deep": _nested(61)}
    uuid = shared_api.submit(hardwareConstraints=[constraint])
    assert shared_api.task(uuid)["hardwareConstraints"] == [constraint]
    too_deep = {"discriminator": "X", "deep": _nested(62)}
    problem = assert_problem(shared_api.post("/tasks", json={**VALID, "hardwareConstraints": [too_deep]}))
    assert "deeper than 64" in problem["detail"]


@pytest.mark.parametrize(
    ("path", "change", "field"),
    [
        ("/tasks", {"maxTimeQueueSeconds": 2**31}, "MaxTimeQueueSeconds"),
        ("/tasks", {"maxTimeQueueSeconds": 10**30}, "MaxTimeQueueSeconds"),
        ("/tasks", {"priority": -(2**63)}, "Priority"),
        ("/tasks", {"snapshotInterval": 10**20}, "SnapshotInterval"),
        ("/tasks", {"completionTimeToLive": "99999999999.00:00:00"}, "CompletionTimeToLive"),
        ("/tasks", {"completionTimeToLive": "10675199.02:48:05.4775808"}, "CompletionTimeToLive"),
        ("/jobs", {"maxWallTime": "9" * 400 + ".00:00:00"}, "MaxWallTime"),
        ("/jobs", {"completionTimeToLive": "99999999999.00:00:00"}, "CompletionTimeToLive"),
        ("/pools", {"maxTimeQueueSeconds": 2**40}, "MaxTimeQueueSeconds"),
        ("/tasks/paginate", {"maximumResults": 2**63}, "MaximumResults"),
    ],
)
def test_out_of_range_numbers_and_timespans_are_400(
    shared_api: Api, path: str, change: dict[str, Any], field: str
) -> None:
    bases: dict[str, dict[str, Any]] = {
        "/tasks": VALID,
        "/jobs": {"name": "j"},
        "/pools": {"name": "p", "profile": "docker-batch", "instanceCount": 1},
        "/tasks/paginate": {},
    }
    base = bases[path]
    before = len(shared_api.emu.tasks())
    assert_problem(shared_api.post(path, json={**base, **change}), field)
    assert len(shared_api.emu.tasks()) == before
    _listings_still_render(shared_api)


def test_periodic_snapshot_interval_is_bounded(shared_api: Api) -> None:
    uuid = shared_api.submit("sleep 30")
    for interval in (2**31, 10**30, 0, -5, 1.5, "60", None):
        response = shared_api.post(f"/tasks/{uuid}/snapshot/periodic", json={"interval": interval})
        assert_problem(response, "Interval")
    assert shared_api.task(uuid)["snapshotInterval"] == 0
    assert shared_api.post(f"/tasks/{uuid}/snapshot/periodic", json={"Interval": 2**31 - 1}).status_code == 200
    assert shared_api.task(uuid)["snapshotInterval"] == 2**31 - 1
    assert shared_api.post(f"/tasks/{uuid}/abort").status_code == 200


def test_privileges_are_read_case_insensitively(api: Api) -> None:
    uuid = api.submit(
        'echo "token=$QARNOT_CLIENT_TOKEN"', privileges={"EXPORTAPIANDSTORAGECREDENTIALSINENVIRONMENT": True}
    )
    task = api.wait(uuid)
    assert task["state"] == "Success"
    assert task["privileges"] == {"exportApiAndStorageCredentialsInEnvironment": True}
    assert api.get(f"/tasks/{uuid}/stdout").text == f"token={api.emu.token}\n"
    plain = api.task(api.submit(None, privileges={}))
    assert plain["privileges"] == {"exportApiAndStorageCredentialsInEnvironment": False}
    bad = {**VALID, "privileges": {"exportapiandstoragecredentialsinenvironment": "yes"}}
    assert_problem(api.post("/tasks", json=bad), "Privileges.ExportApiAndStorageCredentialsInEnvironment")


def test_secrets_access_rights_are_read_case_insensitively(api: Api) -> None:
    rights = {"BYSECRET": [{"KEY": "db/password"}], "ByPrefix": [{"PREFIX": "shared/"}]}
    uuid = api.submit(None, secretsAccessRights=rights)
    assert api.task(uuid)["secretsAccessRights"] == {
        "bySecret": [{"key": "db/password"}],
        "byPrefix": [{"prefix": "shared/"}],
    }
    bad = {**VALID, "secretsAccessRights": {"bySecret": [{"key": 3}]}}
    assert_problem(api.post("/tasks", json=bad), "SecretsAccessRights.BySecret[0].Key")


def test_pool_nested_objects_are_read_case_insensitively(api: Api) -> None:
    body = {
        "name": "elastic",
        "profile": "docker-batch",
        "instanceCount": 0,
        "ELASTICPROPERTY": {"ISELASTIC": True, "maxtotalslots": 3, "RampResizeFactor": 0.5},
        "Privileges": {"EXPORTAPIANDSTORAGECREDENTIALSINENVIRONMENT": True},
    }
    response = api.post("/pools", json=body)
    assert response.status_code == 200, response.text
    pool = api.get(f"/pools/{response.json()['uuid']}").json()
    expected = {**DEFAULT_ELASTIC, "isElastic": True, "maxTotalSlots": 3, "rampResizeFactor": 0.5}
    assert pool["elasticProperty"] == expected
    assert pool["totalSlotCapacity"] == 3
    assert pool["privileges"] == {"exportApiAndStorageCredentialsInEnvironment": True}
    body["ELASTICPROPERTY"] = {"isElastic": True, "maxTotalSlots": "many"}
    assert_problem(api.post("/pools", json=body), "ElasticProperty.MaxTotalSlots")


def test_huge_numbers_in_filters_and_fault_rules_are_400(shared_api: Api) -> None:
    huge = "1" + "0" * 400
    search = '{"filter": {"operator": "GreaterThan", "field": "CreationDate", "value": ' + huge + "}}"
    assert_problem(shared_api.post("/tasks/search", data=search, headers=JSON), "Filter")
    for rule in ({"latency_ms": 2**31}, {"rate_503": 10**400}, {"max_faults": 2**40}, {"retry_after": 1e300}):
        body = {"rules": [{"pattern": "GET /settings", **rule}]}
        assert_problem(shared_api.put("/_emulator/faults", json=body), "Rules")
    assert shared_api.get("/_emulator/faults").json()["rules"] == []
    assert shared_api.get("/settings", timeout=5).status_code == 200
