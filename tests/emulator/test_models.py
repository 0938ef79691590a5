"""The model: snapshots of finished tasks, dependency release, and bulk endings that stay cheap."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from airflow_provider_qarnot.emulator import Emulator

from .conftest import Api, assert_problem


def test_periodic_snapshot_of_a_finished_task_only_records_the_interval(api: Api) -> None:
    uuid = api.submit("true")
    assert api.wait(uuid)["state"] == "Success"
    response = api.post(f"/tasks/{uuid}/snapshot/periodic", json={"interval": 5})
    assert response.status_code == 200 and response.text == ""
    task = api.task(uuid)
    assert task["snapshotInterval"] == 5 and task["state"] == "Success"
    assert_problem(api.post(f"/tasks/{uuid}/snapshot/periodic", json={"interval": 0}), "Interval")
    assert api.post(f"/tasks/{uuid}/snapshot").status_code == 403  # an instant snapshot still needs a running task


def _state(api: Api, uuid: str) -> tuple[str, str | None]:
    task = api.task(uuid)
    return task["state"], (task["dependencies"] or {}).get("state")


def test_dependents_start_when_their_dependencies_end_even_after_a_restart(tmp_path: Path) -> None:
    with Emulator(token="tok", mode="simulate", sim_duration=3600, state_dir=tmp_path) as first:
        api = Api(first)
        job = api.post("/jobs", json={"name": "deps", "useDependencies": True}).json()["uuid"]
        a = api.submit(jobUuid=job)
        b = api.submit(jobUuid=job)
        both = api.submit(jobUuid=job, dependencies={"dependsOn": [a, b]})
        only_b = api.submit(jobUuid=job, dependencies={"dependsOn": [b, b]})
        needs_a_success = api.submit(
            jobUuid=job, dependencies={"advancedDependsOn": [{"taskUuid": a, "taskFinalStateCondition": ["success"]}]}
        )
        assert _state(api, both) == ("Submitted", "waiting")
        assert api.post(f"/tasks/{a}/abort").status_code == 200
        assert api.wait(needs_a_success, timeout=5)["state"] == "Cancelled"
        assert _state(api, needs_a_success)[1] == "dependencyConditionsNotFulfilled"
        assert _state(api, both) == ("Submitted", "waiting")  # b still runs
        assert _state(api, only_b) == ("Submitted", "waiting")

    with Emulator(token="tok", mode="simulate", sim_duration=3600, state_dir=tmp_path) as second:
        api = Api(second)
        assert _state(api, both) == ("Submitted", "waiting")
        assert api.delete(f"/tasks/{b}").status_code == 200  # a dependency that vanishes releases too
        for uuid in (both, only_b):
            assert _state(api, uuid)[1] == "dependencyConditionsFulfilled"
        late = api.submit(jobUuid=job, dependencies={"dependsOn": [a]})  # depends on a task already final
        assert _state(api, late)[1] == "dependencyConditionsFulfilled"


def test_ending_thousands_of_tasks_at_once_is_cheap(qarnot_emulator_factory: Any) -> None:
    """Terminating a job, closing a pool or deleting a job ends each task in O(1): the whole request takes
    a fraction of the time it took to submit those tasks (it used to scan every task for each one)."""
    emu = qarnot_emulator_factory(mode="simulate", sim_duration=3600)
    api = Api(emu)
    count = 4000
    job = api.post("/jobs", json={"name": "bulk", "useDependencies": True}).json()["uuid"]
    pool = api.post("/pools", json={"name": "bulk", "profile": "docker-batch", "instanceCount": 1}).json()["uuid"]
    deadline = time.monotonic() + 5
    while api.get(f"/pools/{pool}").json()["state"] != "FullyExecuting":
        assert time.monotonic() < deadline, "the pool did not start"
        time.sleep(0.02)

    def submit(owner: dict[str, str]) -> float:
        started = time.perf_counter()
        for first in range(0, count, 500):
            body = [{"name": f"t{n}", "instanceCount": 1, **owner} for n in range(first, first + 500)]
            items = api.post("/tasks", json=body).json()
            assert all(item["statusCode"] == 200 for item in items), items[:1]
        return time.perf_counter() - started

    def timed(method: str, path: str) -> float:
        started = time.perf_counter()
        assert api.request(method, path).status_code == 200
        return time.perf_counter() - started

    submit_job = submit({"jobUuid": job, "profile": "docker-batch"})
    submit_pool = submit({"poolUuid": pool})
    terminate = timed("POST", f"/jobs/{job}/terminate")
    close = timed("POST", f"/pools/{pool}/close")
    assert api.get(f"/jobs/{job}").json()["state"] == "Completed"
    assert api.get(f"/pools/{pool}").json()["state"] == "Closed"
    assert emu.stats()["tasks"]["by_state"] == {"Cancelled": 2 * count}
    delete = timed("DELETE", f"/jobs/{job}?force=true")
    assert emu.stats()["tasks"]["total"] == count
    assert terminate < 0.5 * submit_job, (terminate, submit_job)
    assert close < 0.5 * submit_pool, (close, submit_pool)
    assert delete < 0.5 * submit_job, (delete, submit_job)
