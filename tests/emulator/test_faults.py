"""Fault injection: latency, 429 with Retry-After, 5xx, dropped connections before/after acting."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_qarnot.emulator import Emulator, FaultRule
from airflow_provider_qarnot.emulator.faults import compile_pattern, load_fault_argument

from .conftest import Api, assert_problem

TASK = {"name": "f", "profile": "docker-batch", "instanceCount": 1}


@pytest.fixture
def emu(qarnot_emulator_factory: Any) -> Emulator:
    created: Emulator = qarnot_emulator_factory(mode="simulate", sim_duration=0.1, seed=0)
    return created


def test_429_carries_retry_after(emu: Emulator) -> None:
    api = Api(emu)
    emu.set_faults([FaultRule(pattern="GET /settings", rate_429=1.0, retry_after=7)])
    response = api.get("/settings")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response.json() == {"message": "Too Many Requests"}
    emu.set_faults([FaultRule(pattern="GET /settings", rate_429=1.0, retry_after=0.05)])
    assert api.get("/settings").headers["Retry-After"] == "0.05"
    assert api.get("/versions").status_code == 200  # other routes untouched


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_status_faults(emu: Emulator, status: int) -> None:
    api = Api(emu)
    rates: dict[str, Any] = {f"rate_{status}": 1.0}
    emu.set_faults([FaultRule(pattern="POST /tasks", **rates)])
    response = api.post("/tasks", json=TASK)
    assert response.status_code == status
    assert "message" in response.json()
    assert emu.tasks() == []  # nothing was done
    assert emu.stats()["faults"][f"rate_{status}"] == 1


def test_drop_before_does_nothing(emu: Emulator) -> None:
    api = Api(emu)
    emu.set_faults([FaultRule(pattern="POST /tasks", drop_before=1.0)])
    with pytest.raises((requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        api.post("/tasks", json=TASK)
    assert emu.tasks() == []
    emu.clear_faults()
    assert api.post("/tasks", json=TASK).status_code == 200  # the session recovers


def test_drop_after_creates_the_task(emu: Emulator) -> None:
    api = Api(emu)
    emu.set_faults([FaultRule(pattern="POST /tasks", drop_after=1.0)])
    with pytest.raises((requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        api.post("/tasks", json=TASK)
    tasks = emu.tasks()
    assert len(tasks) == 1 and tasks[0]["name"] == "f"
    stats = emu.stats()
    assert stats["faults"]["drop_after"] == 1 and stats["faults_injected"] == 1
    assert stats["requests"]["POST /tasks"] == 1


def test_latency(emu: Emulator) -> None:
    api = Api(emu)
    emu.set_faults([FaultRule(pattern="GET /tasks/*", latency_ms=400)])
    started = time.monotonic()
    assert api.get("/tasks/unknown").status_code == 404
    assert time.monotonic() - started >= 0.39
    started = time.monotonic()
    api.get("/tasks")  # "/tasks/*" does not match "/tasks"
    assert time.monotonic() - started < 0.39


def test_seeded_rates_are_reproducible(qarnot_emulator_factory: Any) -> None:
    def run(seed: int) -> list[int]:
        emu = qarnot_emulator_factory(mode="simulate")
        emu.set_faults([FaultRule(pattern="*", rate_503=0.3, rate_500=0.2)], seed=seed)
        api = Api(emu)
        codes = [api.get("/versions").status_code for _ in range(40)]
        emu.stop()
        return codes

    first, again, other = run(11), run(11), run(12)
    assert first == again
    assert first != other
    assert 0 < first.count(200) < 40 and {500, 503} <= set(first)


def test_max_faults_and_admin_endpoint(emu: Emulator) -> None:
    api = Api(emu)
    config = {
        "seed": 5,
        "rules": [{"pattern": "POST /tasks", "rate_503": 1.0, "max_faults": 2}, {"pattern": "*", "latency_ms": 1}],
        "credits_exhausted": False,
    }
    put = api.put("/_emulator/faults", json=config)
    assert put.status_code == 200
    assert put.json()["rules"][0]["max_faults"] == 2 and put.json()["seed"] == 5
    assert api.get("/_emulator/faults").json() == put.json()
    codes = [api.post("/tasks", json=TASK).status_code for _ in range(3)]
    assert codes == [503, 503, 200]
    # faults never apply to the admin endpoints
    api.put("/_emulator/faults", json={"rules": [{"pattern": "*", "rate_500": 1.0}]})
    assert api.get("/_emulator/stats").status_code == 200
    assert api.get("/settings").status_code == 500
    assert api.delete("/_emulator/faults").json()["rules"] == []
    stats = api.get("/_emulator/stats").json()
    assert stats["faults_injected"] == 3
    assert stats["requests"]["POST /tasks"] == 3
    assert stats["requests"]["GET /_emulator/stats"] >= 1
    assert_problem(api.put("/_emulator/faults", json={"rules": [{"pattern": "*", "rate_503": 2}]}))
    assert_problem(api.put("/_emulator/faults", json={"rules": [{"unknown": 1}]}))
    assert api.post("/_emulator/reset", json={}).status_code == 200
    assert emu.tasks() == [] and api.get("/_emulator/stats").json()["faults_injected"] == 0
    emu.s3_client().create_bucket(Bucket="wiped-bucket")
    assert api.post("/_emulator/reset", json={"storage": True}).json() == {"reset": True, "storage": True}
    assert emu.s3_client().list_buckets()["Buckets"] == []


def test_faults_given_at_start(qarnot_emulator_factory: Any) -> None:
    emu = qarnot_emulator_factory(mode="simulate", faults=[FaultRule(pattern="GET /info", rate_502=1.0)])
    assert Api(emu).get("/info").status_code == 502


def test_fault_argument_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    path.write_text(json.dumps({"seed": 9, "rules": [{"pattern": "GET /info", "rate_429": 0.5}]}))
    rules, seed, credits = load_fault_argument(str(path))
    assert seed == 9 and credits is None and rules[0].rate_429 == 0.5
    rules, seed, _ = load_fault_argument('[{"pattern": "*", "drop_before": 0.1}]')
    assert seed is None and rules[0].drop_before == 0.1


def test_pattern_syntax() -> None:
    method, regex = compile_pattern("GET /v1/tasks/*/stdout")
    assert method == "GET" and regex.match("/tasks/abc/stdout") and not regex.match("/tasks/abc/def/stdout")
    method, regex = compile_pattern("/tasks/**")
    assert method == "*" and regex.match("/tasks/a/b/c")
    assert compile_pattern("*")[1].match("/anything")
    assert compile_pattern("post")[0] == "POST"
    with pytest.raises(ValueError, match="more than 1"):
        FaultRule(rate_503=0.7, drop_after=0.5)
    assert json.dumps(FaultRule(pattern="GET /x", rate_429=0.5).to_dict())
