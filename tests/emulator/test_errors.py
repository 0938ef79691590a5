"""Errors exactly as the real API gives them: 400 ProblemDetails, 401, 402, 403, 404; lenient request keys."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from airflow_provider_qarnot.emulator import Emulator

from .conftest import Api, assert_problem

VALID = {"name": "ok", "profile": "docker-batch", "instanceCount": 1}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"instanceCount": 2, "advancedRanges": "0-1"}, "InstanceCount"),
        ({"instanceCount": None}, "InstanceCount"),
        ({"instanceCount": 0}, "InstanceCount"),
        ({"instanceCount": -3}, "InstanceCount"),
        ({"instanceCount": "two"}, "InstanceCount"),
        ({"instanceCount": None, "advancedRanges": "3-1"}, "AdvancedRanges"),
        ({"instanceCount": None, "advancedRanges": "a"}, "AdvancedRanges"),
        ({"instanceCount": None, "advancedRanges": "1,,2"}, "AdvancedRanges"),
        ({"instanceCount": None, "advancedRanges": "0-999999999"}, "AdvancedRanges"),
        ({"poolUuid": "0b9c6c1e-6a52-4f3e-9b53-3f2f7a1d2c10"}, "Profile"),
        ({"name": None}, "Name"),
        ({"name": ""}, "Name"),
        ({"profile": "no-such-profile"}, "Profile"),
        ({"profile": None}, "Profile"),
        ({"constants": [{"key": "A", "value": {"x": 1}}]}, "Constants"),
        ({"tags": "not-a-list"}, "Tags"),
        ({"resultsWhitelist": "("}, "ResultsWhitelist"),
        ({"completionTimeToLive": "forever"}, "CompletionTimeToLive"),
        ({"retrySettings": {"maxPerInstanceRetries": -1}}, "RetrySettings.MaxPerInstanceRetries"),
    ],
)
def test_invalid_task_bodies_are_problem_details(shared_api: Api, change: dict[str, Any], field: str) -> None:
    body = {**VALID, **change}
    body = {k: v for k, v in body.items() if not (k == "name" and v is None)}
    assert_problem(shared_api.post("/tasks", json=body), field)
    assert shared_api.emu.tasks() == []


def test_unknown_pool_and_job_are_400(api: Api) -> None:
    missing = "0b9c6c1e-6a52-4f3e-9b53-3f2f7a1d2c10"
    assert_problem(api.post("/tasks", json={"name": "p", "poolUuid": missing, "instanceCount": 1}), "PoolUuid")
    assert_problem(api.post("/tasks", json={**VALID, "jobUuid": missing}), "JobUuid")


def test_invalid_json_and_wrong_shapes(api: Api) -> None:
    assert_problem(api.post("/tasks", data=b"{not json", headers={"Content-Type": "application/json"}))
    assert_problem(api.post("/tasks", data=b""))
    assert_problem(api.post("/tasks", json="a string"))
    assert_problem(api.post("/tasks", data=b"\xff\xfe"))
    assert_problem(api.post("/tasks", data=b'{"name": NaN}'))
    assert_problem(api.post("/tasks/paginate", json={"maximumResults": 0}))
    assert_problem(api.post("/tasks/paginate", json={"token": "unknown"}))
    assert_problem(api.post("/tasks/search", json={"filter": {"operator": "Bogus"}}))
    assert_problem(api.post("/tasks/search", json={"filter": {"operator": "Equal", "field": "NoSuchField"}}))
    assert_problem(api.post("/jobs", json={"useDependencies": True}), "Name")
    assert_problem(api.post("/pools", json={"name": "p", "profile": "docker-batch", "instanceCount": 0}))
    assert api.emu.tasks() == []


def test_missing_resource_bucket_is_404_and_result_bucket_is_created(api: Api, qarnot_emulator: Emulator) -> None:
    missing = api.post("/tasks", json={**VALID, "advancedResourceBuckets": [{"bucketName": "no-such-bucket"}]})
    assert missing.status_code == 404
    assert "no-such-bucket" in missing.json()["message"]
    legacy = api.post("/tasks", json={**VALID, "resourceBuckets": ["no-such-bucket"]})
    assert legacy.status_code == 404
    created = api.post("/tasks", json={**VALID, "resultBucket": "made-on-demand"})
    assert created.status_code == 200
    qarnot_emulator.s3_client().head_bucket(Bucket="made-on-demand")


def test_every_path_needs_the_token(qarnot_emulator: Emulator) -> None:
    base = qarnot_emulator.api_url
    for method, path in [
        ("GET", "/settings"),
        ("GET", "/v1/settings"),
        ("GET", "/info"),
        ("POST", "/tasks"),
        ("GET", "/tasks/whatever"),
        ("GET", "/no/such/path"),
        ("GET", "/_emulator/stats"),
    ]:
        for headers in ({}, {"Authorization": "wrong"}, {"Authorization": f"Bearer {qarnot_emulator.token}"}):
            response = requests.request(method, base + path, headers=headers, timeout=10)
            assert response.status_code == 401, (method, path, headers)
            assert "message" in response.json()


def test_quota_is_403_with_the_sdk_message(qarnot_emulator_factory: Any) -> None:
    emu = qarnot_emulator_factory(max_tasks=2, mode="simulate", sim_duration=60)
    api = Api(emu)
    first = api.submit()
    api.submit()
    refused = api.post("/tasks", json=VALID)
    assert refused.status_code == 403
    assert refused.json() == {"message": "Maximum number of tasks reached"}
    bulk = api.post("/tasks", json=[VALID]).json()
    assert bulk[0]["statusCode"] == 403 and bulk[0]["uuid"] is None
    assert api.get("/info").json()["maxTask"] == 2
    assert api.delete(f"/tasks/{first}").status_code == 200
    assert api.post("/tasks", json=VALID).status_code == 200  # deleted tasks free the quota


def test_credits_exhausted_is_402(qarnot_emulator_factory: Any) -> None:
    emu = qarnot_emulator_factory(credits_exhausted=True, mode="simulate")
    api = Api(emu)
    refused = api.post("/tasks", json=VALID)
    assert refused.status_code == 402
    assert refused.json() == {"message": "Not enough credits"}
    assert api.post("/pools", json={"name": "p", "profile": "docker-batch", "instanceCount": 1}).status_code == 402
    faults = api.put("/_emulator/faults", json={"credits_exhausted": False})
    assert faults.status_code == 200 and faults.json()["credits_exhausted"] is False
    assert api.post("/tasks", json=VALID).status_code == 200
    emu.set_credits_exhausted(True)
    assert api.post("/tasks", json=VALID).status_code == 402


def test_not_found_answers(api: Api) -> None:
    missing = "0b9c6c1e-6a52-4f3e-9b53-3f2f7a1d2c10"
    for method, path in [
        ("GET", f"/tasks/{missing}"),
        ("PUT", f"/tasks/{missing}"),
        ("DELETE", f"/tasks/{missing}"),
        ("POST", f"/tasks/{missing}/abort"),
        ("GET", f"/tasks/{missing}/stdout"),
        ("POST", f"/tasks/{missing}/stderr"),
        ("GET", f"/jobs/{missing}"),
        ("GET", f"/pools/{missing}"),
        ("GET", "/profiles/no-such-profile"),
        ("GET", "/nothing-here"),
    ]:
        response = api.request(method, path, json=VALID if method == "PUT" else None)
        assert response.status_code == 404, (method, path, response.text)
        assert isinstance(response.json()["message"], str)
    assert api.request("PATCH", "/settings").status_code == 405


def test_keys_are_case_insensitive_and_responses_camel_case(api: Api) -> None:
    body = {
        "NAME": "shouty",
        "Profile": "docker-batch",
        "InstanceCount": 2,
        "Constants": [{"Key": "DOCKER_CMD", "VALUE": "echo $INSTANCE_ID > r$INSTANCE_ID"}],
        "Tags": ["case"],
        "Labels": {"Owner": "Me"},
        "AdvancedResourceBuckets": [],
        "ResultBucket": "case-results",
        "resultsCacheTTLSec": 30,
        "RetrySettings": {"MaxTotalRetries": 1, "maxperinstanceretries": 1},
        "HardwareConstraints": [{"Discriminator": "MinimumCoreHardwareConstraint", "CoreCount": 4}],
    }
    response = api.post("/tasks", json=body)
    assert response.status_code == 200, response.text
    task = api.wait(response.json()["uuid"])
    assert task["state"] == "Success"
    assert task["name"] == "shouty" and task["instanceCount"] == 2 and task["tags"] == ["case"]
    assert task["labels"] == {"Owner": "Me"}
    assert task["constants"][0]["key"] == "DOCKER_CMD"
    assert task["ResultsCacheTTLSec"] == 30
    assert task["retrySettings"] == {"maxTotalRetries": 1, "maxPerInstanceRetries": 1}
    assert task["hardwareConstraints"] == [{"discriminator": "MinimumCoreHardwareConstraint", "coreCount": 4}]
    assert task["resultsCount"] == 2
    for key in ("creationDate", "lastModified", "stateTransitionTime", "endDate", "previousStateTransitionTime"):
        assert task[key].endswith("Z")
    assert task["completionTimeToLive"] == "00:00:00"


def test_v1_prefix_and_trailing_slashes(qarnot_emulator: Emulator) -> None:
    api = Api(qarnot_emulator, prefix="/v1")
    assert api.get("/settings").json() == {"storage": qarnot_emulator.storage_url}
    uuid = api.submit("true")
    assert api.get(f"/tasks/{uuid}/").json()["uuid"] == uuid
    plain = Api(qarnot_emulator)
    assert plain.get(f"/tasks/{uuid}").json()["uuid"] == uuid
    job = plain.post("/jobs/", json={"name": "slash"})  # the Python SDK posts to /jobs/
    assert job.status_code == 200
    assert api.get("/versions").json()[0]["version"]
    stats = qarnot_emulator.stats()["requests"]
    assert stats["GET /settings"] == 1 and stats["GET /tasks/{uuid}"] == 2 and stats["POST /jobs"] == 1


def test_bulk_submission(api: Api) -> None:
    response = api.post("/tasks", json=[VALID, {"name": "bad"}, {**VALID, "name": "second"}])
    assert response.status_code == 200
    items = response.json()
    assert [i["statusCode"] for i in items] == [200, 400, 200]
    assert items[1]["uuid"] is None and items[1]["message"]
    assert {t["uuid"] for t in api.emu.tasks()} == {items[0]["uuid"], items[2]["uuid"]}


def test_info_settings_profiles_and_hardware(api: Api, qarnot_emulator: Emulator) -> None:
    info = api.get("/info").json()
    assert info["email"] == "emulator@qarnot.local"
    assert {"maxTask", "taskCount", "runningTaskCount", "maxBucket", "computingQuotas"} <= set(info)
    names = api.get("/profiles").json()
    assert {"docker-batch", "docker-network", "docker-batch-gpu", "ubuntu", "docker-bash"} <= set(names)
    profile = api.get("/profiles/docker-batch").json()
    assert profile["name"] == "docker-batch"
    assert {"name", "value"} <= set(profile["constants"][0])
    page = api.get("/hardware-constraints", params={"limit": 3, "offset": 2}).json()
    assert page["offset"] == 2 and page["limit"] == 3 and len(page["data"]) == 3 and page["total"] > 3
    assert all("discriminator" in c for c in page["data"])
    assert_problem(api.get("/hardware-constraints", params={"limit": "x"}))
