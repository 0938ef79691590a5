"""QarnotSubmitTaskOperator.execute called directly (the TaskInstance is a stand-in), against the emulator."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any
from unittest.mock import MagicMock

import pytest
from airflow.sdk.exceptions import AirflowException, TaskDeferred

from airflow_provider_qarnot.client import states
from airflow_provider_qarnot.operators.qarnot import QarnotSubmitTaskOperator
from airflow_provider_qarnot.triggers.qarnot import QarnotTaskTrigger
from tests.conftest import requests_made


def make_context() -> dict[str, Any]:
    ti = MagicMock(dag_id="d", task_id="t", run_id="r-execute", map_index=-1, try_number=1, max_tries=0)
    return {"ti": ti}


def operator(command: str, **kwargs: Any) -> QarnotSubmitTaskOperator:
    return QarnotSubmitTaskOperator(
        task_id="t", profile="docker-batch", instance_count=1, constants={"DOCKER_CMD": command}, **kwargs
    )


def pushed(context: dict[str, Any]) -> dict[str, Any]:
    return {c.kwargs["key"]: c.kwargs["value"] for c in context["ti"].xcom_push.call_args_list}


@pytest.mark.parametrize("shared", ["True", "False"])
def test_defers_with_a_small_trigger_after_pushing_xcom(
    qarnot_conn: Any, monkeypatch: pytest.MonkeyPatch, shared: str
) -> None:
    monkeypatch.setenv("AIRFLOW__QARNOT__SHARED_POLLING", shared)
    context = make_context()
    op = operator("sleep 30", deferrable=True, poll_interval=2, timeout=timedelta(minutes=10), cancel_on_kill=False)
    before = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    trigger = deferred.value.trigger
    assert isinstance(trigger, QarnotTaskTrigger)
    assert deferred.value.method_name == "execute_complete"
    _, kwargs = trigger.serialize()
    uuid = pushed(context)["qarnot_task_uuid"]
    assert kwargs["task_uuid"] == uuid
    assert kwargs["qarnot_conn_id"] == "qarnot_default"
    assert before + 600 <= kwargs["deadline"] <= time.time() + 600
    assert kwargs["poll_interval"] == 2.0
    assert kwargs["cancel_on_kill"] is False
    assert kwargs["shared_polling"] is (shared == "True")
    assert deferred.value.timeout > timedelta(minutes=10)  # the backstop comes after our own deadline
    assert pushed(context)["qarnot_task_url"].endswith(uuid)
    assert qarnot_conn.token not in repr(kwargs)


def test_reused_successful_task_finishes_without_deferring(qarnot_conn: Any) -> None:
    """A task that is final when first read (here: an earlier try's success) ends execute() at once."""
    first = operator("true", wait_for_completion=False)
    uuid = first.execute(make_context())
    qarnot_conn.wait_for_task(uuid, timeout=20)
    again = operator("true", deferrable=True)
    assert again.execute(make_context()) == uuid
    assert requests_made(qarnot_conn, "POST /tasks") == 1


def test_on_kill_aborts_the_task_on_the_worker(qarnot_conn: Any) -> None:
    op = operator("sleep 30", poll_interval=0.2)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            op.execute(make_context())
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 20
    while op._task_uuid is None and time.monotonic() < deadline:
        time.sleep(0.05)
    op.on_kill()
    worker.join(20)
    assert qarnot_conn.task(op._task_uuid)["state"] == states.CANCELLED
    assert isinstance(failure[0], AirflowException)
    assert "cancelled" in str(failure[0])


def test_on_kill_leaves_the_task_when_asked(qarnot_conn: Any) -> None:
    op = operator("sleep 30", wait_for_completion=False, cancel_on_kill=False)
    uuid = op.execute(make_context())
    op.on_kill()
    time.sleep(0.3)
    assert states.is_active(qarnot_conn.task(uuid)["state"])


def test_timeout_event_aborts_and_says_timeout(qarnot_conn: Any) -> None:
    op = operator("sleep 30", wait_for_completion=False)
    uuid = op.execute(make_context())
    event = {"status": "timeout", "task_uuid": uuid, "state": "FullyExecuting", "message": "Timeout: x", "errors": []}
    with pytest.raises(AirflowException, match="Timeout"):
        op.execute_complete(make_context(), event)
    assert qarnot_conn.wait_for_task(uuid, timeout=20)["state"] == states.CANCELLED
