"""Simulate mode: nothing runs; each task follows its timeline and ends with the configured outcome."""

from __future__ import annotations

import threading
import time
from typing import Any

from .conftest import Api


def test_timeline_and_per_task_overrides(qarnot_emulator_factory: Any) -> None:
    emu = qarnot_emulator_factory(mode="simulate", sim_duration=0.6, cores=1)
    api = Api(emu)
    default = api.submit("this would fail if it ran: exit 1", count=3)
    quick_fail = api.submit(
        count=2,
        constants=[
            {"key": "EMULATOR_DURATION_S", "value": "0.2"},
            {"key": "EMULATOR_OUTCOME", "value": "failure"},
        ],
    )
    states: dict[str, list[str]] = {default: [], quick_fail: []}
    started = time.monotonic()
    ended: dict[str, float] = {}
    while len(ended) < 2 and time.monotonic() - started < 10:
        for uuid in (default, quick_fail):
            state = api.task(uuid)["state"]
            if not states[uuid] or states[uuid][-1] != state:
                states[uuid].append(state)
            if state in ("Success", "Failure") and uuid not in ended:
                ended[uuid] = time.monotonic() - started
        time.sleep(0.01)
    assert states[default][-1] == "Success"
    assert states[quick_fail][-1] == "Failure"
    assert "FullyExecuting" in states[default] and "UploadingResults" in states[default]
    assert 0.15 <= ended[quick_fail] < 1.5
    assert 0.5 <= ended[default] < 3.0
    assert ended[quick_fail] < ended[default]
    done = api.task(default)
    assert done["previousState"] == "UploadingResults"
    assert done["status"]["succeededRange"] == "0-2"  # all three at once: cores are ignored
    failed = api.task(quick_fail)
    assert [e["message"] for e in failed["errors"]] == [
        "Instance 0 failed with exit code 1 (simulated).",
        "Instance 1 failed with exit code 1 (simulated).",
    ]
    assert "simulated" in api.get(f"/tasks/{default}/stdout").text


def test_failure_default_and_abort(qarnot_emulator_factory: Any) -> None:
    emu = qarnot_emulator_factory(mode="simulate", sim_duration=0.1, sim_outcome="failure")
    api = Api(emu)
    assert api.wait(api.submit())["state"] == "Failure"
    ok = api.submit(constants=[{"key": "EMULATOR_OUTCOME", "value": "success"}])
    assert api.wait(ok)["state"] == "Success"
    long = api.submit(constants=[{"key": "EMULATOR_DURATION_S", "value": "2"}])
    api.wait(long, ("FullyExecuting",), timeout=10)
    assert api.post(f"/tasks/{long}/abort").status_code == 200
    assert api.task(long)["state"] == "Cancelled"


def test_many_running_tasks_need_no_threads(qarnot_emulator_factory: Any) -> None:
    emu = qarnot_emulator_factory(mode="simulate", sim_duration=60)
    api = Api(emu)
    before = threading.active_count()
    body = [{"name": f"t{n}", "profile": "docker-batch", "instanceCount": 2} for n in range(500)]
    for _ in range(2):
        items = api.post("/tasks", json=body).json()
        assert all(item["statusCode"] == 200 for item in items)
    assert len(emu.tasks()) == 1000
    assert threading.active_count() - before < 20
    uuid = items[0]["uuid"]
    started = time.monotonic()
    for _ in range(200):
        assert api.get(f"/tasks/{uuid}").status_code == 200
    assert time.monotonic() - started < 5
    assert api.get("/info").json()["runningTaskCount"] == 1000
