"""Rendering: a response is valid JSON or an error, never ``NaN``/``Infinity``."""

from __future__ import annotations

import json
from typing import Any

from airflow_provider_qarnot.emulator import Emulator

from .conftest import Api


def test_a_non_finite_number_in_the_state_is_a_500_not_invalid_json(api: Api, qarnot_emulator: Emulator) -> None:
    uuid = api.submit(None, hardwareConstraints=[{"discriminator": "MinimumCoreHardwareConstraint", "coreCount": 4}])
    backend = qarnot_emulator._ctx().backend
    with backend.lock:  # what a parsing gap would leave behind
        backend.tasks[uuid].spec.hardware_constraints = [{"coreCount": float("inf")}]

    def refuse(name: str) -> Any:
        raise ValueError(f"not JSON: {name}")

    for path in (f"/tasks/{uuid}", "/tasks"):
        response = api.get(path, headers={"Connection": "close"})  # the server drops a connection after a 500
        assert response.status_code == 500
        assert "Infinity" not in response.text
        assert json.loads(response.text, parse_constant=refuse)["message"]
    assert api.get("/tasks/summaries").status_code == 200  # summaries do not carry the broken field
