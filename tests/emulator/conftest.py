"""Helpers for the emulator's own tests: a small HTTP client bound to a running emulator."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from airflow_provider_qarnot.emulator import Emulator

FINAL = ("Success", "Failure", "Cancelled")


def pid_alive(pid: int) -> bool:
    """Is the process running (a zombie is not)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


class Api:
    """A ``requests`` session with the emulator's base URL and token."""

    def __init__(self, emu: Emulator, prefix: str = "") -> None:
        self.emu = emu
        self.base = emu.api_url + prefix
        self.session = requests.Session()
        self.session.headers["Authorization"] = emu.token

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return self.session.request(method, self.base + path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)

    def submit(self, cmd: str | None = None, *, count: int | None = 1, **fields: Any) -> str:
        """Submit a task (``cmd`` becomes DOCKER_CMD) and return its uuid."""
        body: dict[str, Any] = {"name": fields.pop("name", "test-task"), "profile": "docker-batch"}
        if count is not None:
            body["instanceCount"] = count
        constants = list(fields.pop("constants", []))
        if cmd is not None:
            constants.append({"key": "DOCKER_CMD", "value": cmd})
        body["constants"] = constants
        body.update(fields)
        response = self.post("/tasks", json=body)
        assert response.status_code == 200, response.text
        uuid: str = response.json()["uuid"]
        return uuid

    def task(self, uuid: str) -> dict[str, Any]:
        response = self.get(f"/tasks/{uuid}")
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    def wait(self, uuid: str, states: tuple[str, ...] = FINAL, timeout: float = 20.0) -> dict[str, Any]:
        """Poll until the task reaches one of ``states``."""
        deadline = time.monotonic() + timeout
        while True:
            data = self.task(uuid)
            if data["state"] in states:
                return data
            assert time.monotonic() < deadline, f"task still {data['state']} after {timeout} s"
            time.sleep(0.02)


@pytest.fixture
def api(qarnot_emulator: Emulator) -> Iterator[Api]:
    """A client of the default (run mode, 2 cores) emulator."""
    client = Api(qarnot_emulator)
    yield client
    client.session.close()


@pytest.fixture(scope="module")
def shared_api() -> Iterator[Api]:
    """A run-mode emulator shared by a module's tests that need no fresh state."""
    with Emulator(token="shared-token", cores=2) as emu:
        client = Api(emu)
        yield client
        client.session.close()


@pytest.fixture
def sim_api(qarnot_emulator_factory: Any) -> Iterator[Api]:
    """A client of a simulate-mode emulator whose tasks last 60 s unless told otherwise."""
    emu = qarnot_emulator_factory(mode="simulate", sim_duration=60.0)
    client = Api(emu)
    yield client
    client.session.close()


def assert_problem(response: requests.Response, field: str | None = None) -> dict[str, Any]:
    """A 400 ASP.NET ProblemDetails answer (optionally about ``field``)."""
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert {"type", "title", "status", "traceId", "errors"} <= set(body)
    assert body["status"] == 400
    assert isinstance(body["errors"], dict) and body["errors"]
    if field is not None:
        assert any(key.lower().startswith(field.lower()) for key in body["errors"]), body["errors"]
    return body
