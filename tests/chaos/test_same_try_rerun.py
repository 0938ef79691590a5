"""A try that Airflow runs again from `execute()` must not submit a second Qarnot task.

Airflow 3.3 does run a try's workload again: when a trigger fires very soon after the deferral, the
deferring try's late executor event can put the task instance up for retry while its resume is already
queued; that queued workload then runs `execute()` (the resume method was cleared) under the old try
number. Seen in the long chaos run (`tools.chaos.STALE_EVENT` counts the race): two Qarnot tasks
labelled with the same try. The try's Qarnot task already exists; it is this try's outcome.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, TaskDeferred

from airflow_provider_qarnot.client import states
from airflow_provider_qarnot.operators.qarnot import QarnotSubmitTaskOperator
from tools import chaos

OUTCOMES = {"running": ("success", "60"), "failure": ("failure", "0.3"), "success": ("success", "0.3")}


def operator(outcome: str) -> QarnotSubmitTaskOperator:
    result, duration = OUTCOMES[outcome]
    constants = {"EMULATOR_OUTCOME": result, "EMULATOR_DURATION_S": duration}
    return QarnotSubmitTaskOperator(
        task_id="t", profile="docker-batch", instance_count=1, constants=constants, deferrable=True, retries=2
    )


def run_again(op: QarnotSubmitTaskOperator, context: dict[str, Any]) -> str:
    """What a second `execute()` of the same try does, in words."""
    try:
        return f"returned {op.execute(context)}"
    except TaskDeferred as deferred:
        return f"deferred on {deferred.trigger.serialize()[1]['task_uuid']}"
    except AirflowException as exc:
        return f"raised: {exc}"


@pytest.mark.parametrize("outcome", list(OUTCOMES))
@pytest.mark.parametrize("try_number", [1, 2])
def test_a_try_run_again_keeps_its_own_task(
    qarnot_emulator_factory: Any, monkeypatch: pytest.MonkeyPatch, try_number: int, outcome: str
) -> None:
    token = chaos.make_token()
    emu = qarnot_emulator_factory(token=token, mode="simulate")
    conn = {"conn_type": "qarnot", "host": emu.api_url, "password": token}
    monkeypatch.setenv("AIRFLOW_CONN_QARNOT_DEFAULT", json.dumps(conn))
    context: dict[str, Any] = {"ti": chaos.TaskInstanceStandIn("t", try_number=try_number, max_tries=2)}
    with pytest.raises(TaskDeferred):
        operator(outcome).execute(context)
    uuid = context["ti"].pushed["qarnot_task_uuid"]
    if outcome != "running":
        assert emu.wait_for_task(uuid, timeout=20)["state"] in states.FINAL_STATES

    what = run_again(operator(outcome), context)

    assert [t["uuid"] for t in emu.tasks()] == [uuid], f"the second execute() of try {try_number} {what}"
    if outcome == "running":
        assert what == f"deferred on {uuid}"
    elif outcome == "failure":
        assert what.startswith("raised") and uuid in what and "Failure" in what, what
    else:
        assert what == f"returned {uuid}"
