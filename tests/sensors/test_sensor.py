"""QarnotTaskSensor in poke, reschedule and deferrable modes, in real DAG runs against the emulator."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any
from unittest.mock import MagicMock

import pytest
from airflow.sdk import DAG
from airflow.sdk.exceptions import (
    AirflowException,
    AirflowFailException,
    AirflowSkipException,
    TaskDeferralError,
    TaskDeferred,
)

from airflow_provider_qarnot.client import RetryPolicy, states
from airflow_provider_qarnot.client.spec import TaskSpec
from airflow_provider_qarnot.emulator import FaultRule
from airflow_provider_qarnot.hooks.qarnot import QarnotHook
from airflow_provider_qarnot.operators.qarnot import QarnotSubmitTaskOperator
from airflow_provider_qarnot.sensors.qarnot import QarnotTaskSensor
from airflow_provider_qarnot.triggers.qarnot import MAX_ERROR_REDEFERS
from tests.conftest import leak_token_into_errors, ti_states, xcom_value

START = datetime(2026, 1, 1, tzinfo=timezone.utc)
MODES: dict[str, dict[str, Any]] = {
    "poke": {"mode": "poke"},
    "reschedule": {"mode": "reschedule"},
    "deferrable": {"deferrable": True},
}


def submit(command: str) -> str:
    spec = TaskSpec(name="watched", profile="docker-batch", instance_count=1, constants={"DOCKER_CMD": command})
    return str(QarnotHook().submit_task(spec).uuid)


def test_sensor_succeeds_in_each_mode(qarnot_conn: Any, run_dag: Any) -> None:
    """Each sensor watches a task its upstream submitted without waiting, so each really has to wait."""
    with DAG("sensor_modes", schedule=None, start_date=START) as dag:
        previous = None
        for name, mode in MODES.items():
            submit_task = QarnotSubmitTaskOperator(
                task_id=f"submit_{name}",
                profile="docker-batch",
                instance_count=1,
                constants={"DOCKER_CMD": "sleep 1.5"},
                wait_for_completion=False,
            )
            sensor = QarnotTaskSensor(
                task_id=f"sense_{name}",
                task_uuid=f"{{{{ ti.xcom_pull(task_ids='submit_{name}') }}}}",
                poke_interval=0.3,
                timeout=60,
                **mode,
            )
            if previous is not None:
                previous >> submit_task
            submit_task >> sensor
            previous = sensor
    dag_run = run_dag(dag)
    assert set(ti_states(dag_run).values()) == {"success"}
    for name in MODES:
        uuid = xcom_value(dag_run, f"submit_{name}")
        assert xcom_value(dag_run, f"sense_{name}") == uuid
        assert xcom_value(dag_run, f"sense_{name}", "qarnot_task_url").endswith(uuid)
        assert qarnot_conn.task(uuid)["state"] == states.SUCCESS


def test_sensor_fails_with_the_qarnot_errors_or_skips_with_soft_fail(
    qarnot_conn: Any, run_dag: Any, capfd: Any
) -> None:
    failing = submit("sleep 0.5; exit 5")
    with DAG("sensor_failure", schedule=None, start_date=START) as dag:
        for name, mode in MODES.items():
            QarnotTaskSensor(task_id=f"fail_{name}", task_uuid=failing, poke_interval=0.3, retries=2, **mode)
            QarnotTaskSensor(task_id=f"soft_{name}", task_uuid=failing, poke_interval=0.3, soft_fail=True, **mode)
    dag_run = run_dag(dag)
    logs = capfd.readouterr().out
    result = ti_states(dag_run)
    assert {result[f"fail_{m}"] for m in MODES} == {"failed"}
    assert {result[f"soft_{m}"] for m in MODES} == {"skipped"}
    assert "exit code 5" in logs
    assert "instance 0" in logs


def test_sensor_on_a_cancelled_task_fails(qarnot_conn: Any, run_dag: Any) -> None:
    uuid = submit("sleep 30")
    QarnotHook().abort_task(uuid)
    with DAG("sensor_cancelled", schedule=None, start_date=START) as dag:
        QarnotTaskSensor(task_id="poke", task_uuid=uuid, poke_interval=0.3)
        QarnotTaskSensor(task_id="deferred", task_uuid=uuid, poke_interval=0.3, deferrable=True)
    assert set(ti_states(run_dag(dag)).values()) == {"failed"}
    assert states.is_final(qarnot_conn.task(uuid)["state"])


def test_sensor_timeout(qarnot_conn: Any, run_dag: Any, capfd: Any) -> None:
    uuid = submit("sleep 30")
    with DAG("sensor_timeout", schedule=None, start_date=START) as dag:
        QarnotTaskSensor(task_id="poke", task_uuid=uuid, poke_interval=0.3, timeout=1)
        QarnotTaskSensor(task_id="deferred", task_uuid=uuid, poke_interval=0.3, timeout=1, deferrable=True)
        QarnotTaskSensor(task_id="soft", task_uuid=uuid, poke_interval=0.3, timeout=1, deferrable=True, soft_fail=True)
    dag_run = run_dag(dag)
    assert ti_states(dag_run) == {"poke": "failed", "deferred": "failed", "soft": "skipped"}
    assert "timed out" in capfd.readouterr().out
    assert states.is_active(qarnot_conn.task(uuid)["state"])  # a sensor never aborts what it watches


def test_unknown_task_uuid_fails_without_retry(qarnot_conn: Any, run_dag: Any) -> None:
    with DAG("sensor_unknown", schedule=None, start_date=START) as dag:
        QarnotTaskSensor(task_id="s", task_uuid="00000000-0000-0000-0000-000000000000", poke_interval=0.3, retries=3)
        QarnotTaskSensor(task_id="empty", task_uuid="", poke_interval=0.3, retries=3)
    dag_run = run_dag(dag)
    assert ti_states(dag_run) == {"s": "failed", "empty": "failed"}


def test_deferrable_sensor_defers_with_the_canonical_uuid(qarnot_conn: Any) -> None:
    """A shortname would match nothing in the shared poller's uuid batch: the trigger gets the real uuid."""
    spec = TaskSpec(
        name="named", profile="docker-batch", instance_count=1, constants={"DOCKER_CMD": "sleep 30"}, shortname="my-run"
    )
    uuid = str(QarnotHook().submit_task(spec).uuid)
    sensor = QarnotTaskSensor(task_id="s", task_uuid="my-run", poke_interval=1, deferrable=True)
    ti = MagicMock()
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({"ti": ti})
    assert deferred.value.trigger.task_uuid == uuid
    published = {c.kwargs["key"]: c.kwargs["value"] for c in ti.xcom_push.call_args_list}  # the last push wins
    assert published["qarnot_task_uuid"] == uuid, "downstream tasks get the uuid, not the shortname"
    assert published["qarnot_task_url"].endswith(f"/tasks/{uuid}")
    QarnotHook().abort_task(uuid)


def test_soft_fail_does_not_skip_on_a_passing_api_failure(qarnot_conn: Any) -> None:
    """Like the base poke loop: soft_fail skips failures that cannot change, not an API blip."""
    uuid = submit("sleep 30")
    qarnot_conn.set_faults([FaultRule(pattern="GET /tasks/*", rate_503=1.0)], seed=1)
    sensor = QarnotTaskSensor(task_id="s", task_uuid=uuid, poke_interval=1, deferrable=True, soft_fail=True)
    sensor.__dict__["hook"] = QarnotHook(retry=RetryPolicy(max_attempts=2, base_delay=0.01))
    with pytest.raises(AirflowException, match="Service Unavailable") as raised:
        sensor.execute({"ti": MagicMock()})
    assert not isinstance(raised.value, AirflowSkipException | AirflowFailException)
    qarnot_conn.clear_faults()
    QarnotHook().abort_task(uuid)


def test_an_error_event_is_checked_with_one_poke(qarnot_conn: Any) -> None:
    """The trigger gave up polling: the task may have ended meanwhile, or be gone for good."""
    uuid = submit("echo done")
    qarnot_conn.wait_for_task(uuid)
    sensor = QarnotTaskSensor(task_id="s", task_uuid=uuid, deferrable=True)
    event = {"status": "error", "task_uuid": uuid, "state": None, "message": "polling failed", "errors": []}
    assert sensor.execute_complete({"ti": MagicMock()}, event) == uuid
    QarnotHook().get_task(uuid).delete()
    with pytest.raises(AirflowFailException, match="MissingTaskException"):
        sensor.execute_complete({"ti": MagicMock()}, event)


def test_an_error_event_for_a_running_task_watches_it_again_until_the_budget_is_spent(qarnot_conn: Any) -> None:
    uuid = submit("sleep 30")
    sensor = QarnotTaskSensor(task_id="s", task_uuid=uuid, deferrable=True, poke_interval=2)
    event = {"status": "error", "task_uuid": uuid, "state": None, "message": "polling failed", "errors": []}
    deadline = time.time() + 300
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute_complete({"ti": MagicMock()}, event, deadline=deadline, error_redefers=0)
    assert deferred.value.trigger.serialize()[1]["deadline"] == deadline, "the timeout is not extended"
    assert deferred.value.kwargs == {"deadline": deadline, "error_redefers": 1}
    with pytest.raises(AirflowException, match="Watching Qarnot task .* failed: polling failed"):
        sensor.execute_complete({"ti": MagicMock()}, event, deadline=deadline, error_redefers=MAX_ERROR_REDEFERS)
    QarnotHook().abort_task(uuid)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout": 1e13}, "timeout must be at most"),  # a timedelta, but no date: utcnow() + it overflows
        ({"poke_interval": 0.0}, "poke_interval must be a positive"),
    ],
)
def test_a_deferrable_sensor_refuses_a_wait_it_cannot_hand_to_the_triggerer(
    qarnot_conn: Any, kwargs: dict[str, Any], message: str
) -> None:
    """Airflow turns a deferral's timeout into a date: an absurd timeout would fail after the first poke."""
    uuid = submit("sleep 30")
    sensor = QarnotTaskSensor(task_id="s", task_uuid=uuid, deferrable=True, **kwargs)
    with pytest.raises(AirflowFailException, match=message):
        sensor.execute({"ti": MagicMock()})
    QarnotHook().abort_task(uuid)


def test_a_deferrable_sensor_may_poke_rarely(qarnot_conn: Any) -> None:
    uuid = submit("sleep 30")
    sensor = QarnotTaskSensor(task_id="s", task_uuid=uuid, deferrable=True, poke_interval=7200, timeout=86400)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({"ti": MagicMock()})
    assert deferred.value.trigger.serialize()[1]["poll_interval"] == 7200
    QarnotHook().abort_task(uuid)


def test_sensor_failure_never_carries_the_token(qarnot_conn: Any) -> None:
    uuid = submit("exit 3")
    qarnot_conn.wait_for_task(uuid, timeout=20)
    leak_token_into_errors(qarnot_conn, uuid)
    with pytest.raises(AirflowFailException) as raised:
        QarnotTaskSensor(task_id="s", task_uuid=uuid).poke({})
    assert "exit code 3" in str(raised.value)
    assert qarnot_conn.token not in str(raised.value)


def test_a_resumed_sensor_with_soft_fail_skips_only_what_cannot_change(qarnot_conn: Any) -> None:
    """Airflow's own deferred-sensor resume would skip an API blip or a crashed trigger under soft_fail."""
    running = submit("sleep 30")
    sensor = QarnotTaskSensor(task_id="s", task_uuid=running, deferrable=True, soft_fail=True)
    sensor.__dict__["hook"] = QarnotHook(retry=RetryPolicy(max_attempts=2, base_delay=0.01))
    context: Any = {"ti": MagicMock()}
    error = {"status": "error", "task_uuid": running, "state": None, "message": "polling failed", "errors": []}
    qarnot_conn.set_faults([FaultRule(pattern="GET /tasks/*", rate_503=1.0)], seed=1)
    with pytest.raises(AirflowException) as blip:
        sensor.resume_execution("execute_complete", {"event": error}, context)
    assert not isinstance(blip.value, AirflowSkipException)
    qarnot_conn.clear_faults()
    with pytest.raises(TaskDeferralError):
        sensor.resume_execution("__fail__", {"error": "Trigger failure"}, context)
    failed = {"status": "failure", "task_uuid": running, "state": "Failure", "message": "it failed", "errors": []}
    with pytest.raises(AirflowSkipException):
        sensor.resume_execution("execute_complete", {"event": failed}, context)
    timeout = {"status": "timeout", "task_uuid": running, "state": "FullyExecuting", "message": "late", "errors": []}
    with pytest.raises(AirflowSkipException):
        sensor.resume_execution("execute_complete", {"event": timeout}, context)
    QarnotHook().abort_task(running)
