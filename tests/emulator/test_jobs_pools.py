"""Jobs (with dependencies, terminate, delete) and pools (slots, constants, close, delete)."""

from __future__ import annotations

import time
from typing import Any

from .conftest import Api, assert_problem


def _job(api: Api, **fields: Any) -> str:
    response = api.post("/jobs", json={"name": "job", **fields})
    assert response.status_code == 200, response.text
    uuid: str = response.json()["uuid"]
    return uuid


def test_job_dependencies_hold_tasks_until_final(api: Api) -> None:
    job = _job(api, useDependencies=True, shortname="deps-job", tags=["j"])
    first = api.submit("sleep 0.5; echo first", jobUuid=job)
    second = api.submit("echo second", jobUuid=job, dependencies={"dependsOn": [first]})
    failing = api.submit("exit 3", jobUuid=job)
    third = api.submit(
        "echo third",
        jobUuid=job,
        dependencies={"advancedDependsOn": [{"taskUuid": failing, "taskFinalStateCondition": ["success"]}]},
    )
    waiting = api.task(second)
    assert waiting["state"] == "Submitted"
    assert waiting["dependencies"]["dependsOn"] == [first]
    assert waiting["dependencies"]["state"] == "waiting"
    done = api.wait(second)
    assert done["state"] == "Success"
    assert done["dependencies"]["state"] == "dependencyConditionsFulfilled"
    first_end = api.task(first)["endDate"]
    assert done["completedInstances"][0]["state"] == "Success"
    assert api.task(second)["creationDate"] < first_end
    blocked = api.wait(third)
    assert blocked["state"] == "Cancelled"
    assert blocked["dependencies"]["state"] == "dependencyConditionsNotFulfilled"
    assert blocked["dependencies"]["advancedDependsOn"][0]["actualFinalState"] == "failure"
    job_doc = api.get(f"/jobs/{job}").json()
    assert job_doc["state"] == "Active" and job_doc["useDependencies"] is True
    assert job_doc["shortname"] == "deps-job"
    assert api.get("/jobs/deps-job").json()["uuid"] == job
    assert [t["uuid"] for t in api.get(f"/jobs/{job}/tasks").json()] == [first, second, failing, third]
    assert [j["uuid"] for j in api.get("/jobs", params={"tag": "j"}).json()] == [job]
    page = api.post("/jobs/paginate", json={"filter": {"operator": "Equal", "field": "Uuid", "value": job}}).json()
    assert [j["uuid"] for j in page["data"]] == [job]


def test_dependencies_need_a_dependency_job(api: Api) -> None:
    plain = _job(api)
    other = api.submit("true")
    refused = api.post(
        "/tasks",
        json={
            "name": "x",
            "profile": "docker-batch",
            "instanceCount": 1,
            "jobUuid": plain,
            "dependencies": {"dependsOn": [other]},
        },
    )
    assert_problem(refused, "Dependencies")


def test_terminate_and_delete_jobs(api: Api) -> None:
    job = _job(api)
    running = api.submit("sleep 30", jobUuid=job)
    api.wait(running, ("FullyExecuting",))
    refused = api.delete(f"/jobs/{job}?force=False")
    assert refused.status_code == 403
    assert api.post(f"/jobs/{job}/terminate").status_code == 200
    assert api.wait(running, timeout=5)["state"] == "Cancelled"
    deadline = time.monotonic() + 5
    while api.get(f"/jobs/{job}").json()["state"] != "Completed":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert_problem(api.post("/tasks", json={"name": "late", "profile": "docker-batch", "instanceCount": 1,
                                            "jobUuid": job}), "JobUuid")  # fmt: skip
    assert api.delete(f"/jobs/{job}?force=True").status_code == 200
    assert api.get(f"/jobs/{job}").status_code == 404
    assert api.get(f"/tasks/{running}").status_code == 404

    forced = _job(api)
    busy = api.submit("sleep 30", jobUuid=forced)
    api.wait(busy, ("FullyExecuting",))
    assert api.delete(f"/jobs/{forced}", params={"force": "true"}).status_code == 200
    deadline = time.monotonic() + 5
    while api.get(f"/tasks/{busy}").status_code != 404:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_pool_runs_tasks_in_its_slots(api: Api) -> None:
    created = api.post(
        "/pools",
        json={
            "name": "pool",
            "profile": "docker-batch",
            "instanceCount": 1,
            "constants": [{"key": "GREETING", "value": "from-pool"}],
            "tags": ["p"],
        },
    )
    assert created.status_code == 200, created.text
    pool = created.json()["uuid"]
    deadline = time.monotonic() + 5
    while api.get(f"/pools/{pool}").json()["state"] != "FullyExecuting":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    body = {
        "name": "in-pool",
        "poolUuid": pool,
        "instanceCount": 2,
        "constants": [{"key": "DOCKER_CMD", "value": "echo $GREETING-$INSTANCE_ID; sleep 0.3"}],
    }
    task = api.post("/tasks", json=body).json()["uuid"]
    # one slot: the two instances never run together
    running_counts = set()
    while (doc := api.task(task))["state"] not in ("Success", "Failure", "Cancelled"):
        running_counts.add(doc["runningInstanceCount"])
        time.sleep(0.02)
    assert doc["state"] == "Success" and doc["poolUuid"] == pool and doc["profile"] is None
    assert max(running_counts) == 1
    assert sorted(api.get(f"/tasks/{task}/stdout").text.split()) == ["from-pool-0", "from-pool-1"]
    pool_doc = api.get(f"/pools/{pool}").json()
    assert pool_doc["totalSlotCapacity"] == 1 and pool_doc["profile"] == "docker-batch"
    assert [p["uuid"] for p in api.get("/pools", params={"tag": "p"}).json()] == [pool]
    assert [p["uuid"] for p in api.post("/pools/summaries/paginate", json={}).json()["data"]] == [pool]
    assert api.get(f"/pools/{pool}/stdout").status_code == 200
    assert api.post(f"/pools/{pool}/close").status_code == 200
    deadline = time.monotonic() + 5
    while api.get(f"/pools/{pool}").json()["state"] != "Closed":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert_problem(api.post("/tasks", json=body), "PoolUuid")
    assert api.delete(f"/pools/{pool}").status_code == 200
    assert api.get(f"/pools/{pool}").status_code == 404
