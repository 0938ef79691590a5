"""QarnotSubmitTaskOperator.execute called directly (the TaskInstance is a stand-in), against the emulator."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any
from unittest.mock import MagicMock

import pytest
from airflow.sdk.exceptions import (
    AirflowException,
    AirflowFailException,
    TaskDeferralError,
    TaskDeferralTimeout,
    TaskDeferred,
)

from airflow_provider_qarnot.client import states
from airflow_provider_qarnot.client.retry import RetryPolicy
from airflow_provider_qarnot.emulator import FaultRule
from airflow_provider_qarnot.hooks.qarnot import QarnotHook
from airflow_provider_qarnot.operators.qarnot import QarnotSubmitTaskOperator
from airflow_provider_qarnot.triggers.qarnot import DEFERRAL_BACKSTOP, MAX_ERROR_REDEFERS, QarnotTaskTrigger
from tests.conftest import leak_token_into_errors, requests_made


def make_context(try_number: int = 1, max_tries: int = 0) -> dict[str, Any]:
    ti = MagicMock(
        dag_id="d", task_id="t", run_id="r-execute", map_index=-1, try_number=try_number, max_tries=max_tries
    )
    return {"ti": ti}


def start_task(command: str = "sleep 30") -> str:
    """A running Qarnot task submitted by a first try (no wait), its uuid."""
    return operator(command, wait_for_completion=False).execute(make_context())


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
    first = operator("true", wait_for_completion=False, retries=1)
    uuid = first.execute(make_context(1, 1))
    qarnot_conn.wait_for_task(uuid, timeout=20)
    again = operator("true", deferrable=True, retries=1)
    assert again.execute(make_context(2, 1)) == uuid
    assert requests_made(qarnot_conn, "POST /tasks") == 1


def test_a_first_try_searches_once_and_submits_once(qarnot_conn: Any) -> None:
    """One search (this try may have run before), one submit; running the same try again submits nothing."""
    uuid = operator("true", wait_for_completion=False, retries=3).execute(make_context(1, 3))
    assert requests_made(qarnot_conn, "POST /tasks") == 1
    assert requests_made(qarnot_conn, "POST /tasks/paginate") == 1
    assert operator("true", wait_for_completion=False, retries=3).execute(make_context(1, 3)) == uuid
    assert requests_made(qarnot_conn, "POST /tasks") == 1


def test_on_kill_aborts_the_task_on_the_worker(qarnot_conn: Any) -> None:
    op = operator("sleep 30", poll_interval=0.2)
    worker, failure = run_in_thread(op, make_context())
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
    with pytest.raises(AirflowException, match="Timeout: x; the Qarnot task was aborted"):
        op.execute_complete(make_context(), event)
    assert qarnot_conn.wait_for_task(uuid, timeout=20)["state"] == states.CANCELLED


def test_a_timeout_whose_abort_fails_does_not_claim_it_was_aborted(qarnot_conn: Any) -> None:
    op = operator("sleep 30", wait_for_completion=False)
    uuid = op.execute(make_context())
    qarnot_conn.set_faults([FaultRule(pattern="POST /tasks/*/abort", rate_503=1.0)])
    event = {"status": "timeout", "task_uuid": uuid, "state": "FullyExecuting", "message": "Timeout: x", "errors": []}
    with pytest.raises(AirflowException, match="aborting Qarnot task .* failed .*may still be running") as info:
        op.execute_complete(make_context(), event)
    assert "was aborted" not in str(info.value)
    qarnot_conn.clear_faults()
    QarnotHook().abort_task(uuid)


def run_in_thread(
    op: QarnotSubmitTaskOperator, context: dict[str, Any]
) -> tuple[threading.Thread, list[BaseException]]:
    """Start `op.execute(context)` in a thread (as a worker would run it); the list receives its exception."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            op.execute(context)
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    return worker, failure


def test_kill_during_the_submit_aborts_the_new_task(qarnot_conn: Any) -> None:
    """The uuid is known as soon as the task exists: a kill before the submit returns still aborts it."""
    qarnot_conn.set_faults([FaultRule(pattern="GET /tasks/*", latency_ms=1500)])  # a slow first read
    op = operator("sleep 30", poll_interval=0.2)
    context = make_context()
    worker, _ = run_in_thread(op, context)
    deadline = time.monotonic() + 10
    while op._task_uuid is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert op._task_uuid is not None, "the uuid must be known before the submit returns"
    assert not pushed(context), "still inside the submit"
    op.on_kill()
    qarnot_conn.clear_faults()
    assert qarnot_conn.wait_for_task(op._task_uuid, timeout=20)["state"] == states.CANCELLED
    worker.join(20)


def test_on_kill_gives_up_fast_when_the_api_fails(qarnot_conn: Any) -> None:
    """on_kill runs in the SIGTERM handler: a failing abort must not retry for minutes."""
    uuid = start_task()
    op = operator("sleep 30")
    op._task_uuid = uuid
    qarnot_conn.set_faults([FaultRule(pattern="POST /tasks/*/abort", rate_503=1.0)])
    started = time.monotonic()
    op.on_kill()
    assert time.monotonic() - started < 10
    assert requests_made(qarnot_conn, "POST /tasks/{uuid}/abort") >= 1


@pytest.mark.parametrize(
    ("error", "try_number", "max_tries", "raised", "aborted"),
    [
        ("Trigger timeout", 1, 3, TaskDeferralTimeout, True),  # Airflow's deferral timeout: always abort
        ("Trigger failure", 3, 2, TaskDeferralError, True),  # the trigger crashed on the last try
        ("Trigger failure", 1, 2, TaskDeferralError, False),  # ... with retries left: the retry reattaches
    ],
)
def test_a_failed_deferral_aborts_the_task_unless_a_retry_reattaches(
    qarnot_conn: Any, error: str, try_number: int, max_tries: int, raised: type[Exception], aborted: bool
) -> None:
    uuid = start_task()
    context = make_context(try_number, max_tries)
    context["ti"].xcom_pull.return_value = uuid
    op = operator("sleep 30", deferrable=True, retries=max_tries)
    with pytest.raises(raised, match=error):
        op.resume_execution("__fail__", {"error": error}, context)
    context["ti"].xcom_pull.assert_called_once_with(task_ids="t", key="qarnot_task_uuid", map_indexes=-1)
    if aborted:
        assert qarnot_conn.wait_for_task(uuid, timeout=20)["state"] == states.CANCELLED
    else:
        time.sleep(0.3)
        assert states.is_active(qarnot_conn.task(uuid)["state"])


@pytest.mark.parametrize(("try_number", "max_tries"), [(1, 0), (3, 2)])
def test_an_error_event_on_the_last_try_aborts_the_task(qarnot_conn: Any, try_number: int, max_tries: int) -> None:
    uuid = start_task()
    event = {"status": "error", "task_uuid": uuid, "state": None, "message": "Polling Qarnot failed", "errors": []}
    with pytest.raises(AirflowException, match="Polling Qarnot failed.*was aborted"):
        operator("sleep 30", retries=max_tries).execute_complete(
            make_context(try_number, max_tries), event, error_redefers=MAX_ERROR_REDEFERS
        )
    assert qarnot_conn.wait_for_task(uuid, timeout=20)["state"] == states.CANCELLED


def test_an_error_event_with_a_retry_left_keeps_the_task(qarnot_conn: Any) -> None:
    uuid = start_task()
    event = {"status": "error", "task_uuid": uuid, "state": None, "message": "Polling Qarnot failed", "errors": []}
    spent = MAX_ERROR_REDEFERS
    with pytest.raises(AirflowException, match="left running for the next try"):
        operator("sleep 30", retries=1).execute_complete(make_context(1, 1), event, error_redefers=spent)
    time.sleep(0.3)
    assert states.is_active(qarnot_conn.task(uuid)["state"])
    # ... unless reattach is off: nothing would reattach to it.
    with pytest.raises(AirflowException, match="was aborted"):
        operator("sleep 30", retries=1, reattach_on_retry=False).execute_complete(
            make_context(1, 1), event, error_redefers=spent
        )
    assert qarnot_conn.wait_for_task(uuid, timeout=20)["state"] == states.CANCELLED


def test_waiting_here_gives_up_on_the_last_try_and_aborts(qarnot_conn: Any) -> None:
    """An error out of the worker-side wait (the task cannot be read) on the last try aborts the task."""
    op = operator("sleep 30", poll_interval=0.2)
    op.__dict__["hook"] = QarnotHook(retry=RetryPolicy(max_attempts=2, base_delay=0.05))  # fail fast
    worker, failure = run_in_thread(op, make_context())
    deadline = time.monotonic() + 20
    while op._task_uuid is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    qarnot_conn.set_faults([FaultRule(pattern="GET /tasks/*", rate_503=1.0, max_faults=2)])
    worker.join(30)
    assert failure, "the wait should have failed"
    assert "Waiting for Qarnot task" in str(failure[0])
    assert "was aborted" in str(failure[0])
    assert qarnot_conn.wait_for_task(op._task_uuid, timeout=20)["state"] == states.CANCELLED


def test_execution_timeout_bounds_the_deferral(qarnot_conn: Any) -> None:
    """Airflow 3.3 does not enforce execution_timeout while deferred: the trigger's deadline does."""
    context = make_context()
    op = operator("sleep 30", deferrable=True, timeout=3600, execution_timeout=timedelta(seconds=90))
    before = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    _, kwargs = deferred.value.trigger.serialize()
    assert before + 90 <= kwargs["deadline"] <= time.time() + 90
    assert deferred.value.timeout < timedelta(seconds=3600)
    QarnotHook().abort_task(pushed(context)["qarnot_task_uuid"])


def test_qarnot_errors_never_carry_the_token(qarnot_conn: Any) -> None:
    """Qarnot's error messages may quote the task's output, and with it the token."""
    uuid = start_task("exit 3")
    qarnot_conn.wait_for_task(uuid, timeout=20)
    leak_token_into_errors(qarnot_conn, uuid)
    event = {"status": "failure", "task_uuid": uuid, "state": "Failure", "message": "failed", "errors": []}
    with pytest.raises(AirflowException) as raised:
        operator("exit 3").execute_complete(make_context(), event)
    assert "exit code 3" in str(raised.value)
    assert qarnot_conn.token not in str(raised.value)
    assert "***" in str(raised.value)


ERROR_EVENT = {"state": None, "message": "polling failed for a while", "errors": []}


def test_an_error_event_for_a_running_task_keeps_it_for_the_retry(qarnot_conn: Any) -> None:
    uuid = start_task("sleep 30")
    event = {"status": "error", "task_uuid": uuid, **ERROR_EVENT}
    with pytest.raises(AirflowException, match="polling failed.*left running for the next try") as info:
        operator("sleep 30").execute_complete(
            make_context(try_number=1, max_tries=2), event, error_redefers=MAX_ERROR_REDEFERS
        )
    assert not isinstance(info.value, AirflowFailException)
    assert qarnot_conn.task(uuid)["state"] not in states.FINAL_STATES
    QarnotHook().abort_task(uuid)


def test_an_error_event_for_a_task_still_running_watches_it_again_to_the_same_deadline(qarnot_conn: Any) -> None:
    """The trigger gave up during an API outage; the worker's read shows the API is back and the task runs:
    even on the last try, hours of compute are not thrown away for a blip."""
    uuid = start_task("sleep 30")
    event = {"status": "error", "task_uuid": uuid, **ERROR_EVENT}
    deadline = time.time() + 600
    op = operator("sleep 30", deferrable=True, poll_interval=2, timeout=600)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute_complete(make_context(try_number=1, max_tries=0), event, deadline=deadline, error_redefers=1)
    _, kwargs = deferred.value.trigger.serialize()
    assert kwargs["task_uuid"] == uuid
    assert kwargs["deadline"] == deadline, "the timeout is not extended"
    assert deferred.value.kwargs == {"deadline": deadline, "error_redefers": 2}
    assert timedelta(seconds=590) < deferred.value.timeout <= timedelta(seconds=600 + DEFERRAL_BACKSTOP + 2)
    time.sleep(0.3)
    assert states.is_active(qarnot_conn.task(uuid)["state"]), "nothing was aborted"
    QarnotHook().abort_task(uuid)


def test_the_first_deferral_carries_its_deadline_for_a_later_rewatch(qarnot_conn: Any) -> None:
    context = make_context()
    op = operator("sleep 30", deferrable=True, timeout=300)
    before = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    assert deferred.value.kwargs["error_redefers"] == 0
    assert before + 300 <= deferred.value.kwargs["deadline"] <= time.time() + 300
    QarnotHook().abort_task(pushed(context)["qarnot_task_uuid"])


def test_an_error_event_for_a_task_that_ended_meanwhile_reports_its_outcome(qarnot_conn: Any) -> None:
    uuid = start_task("echo done")
    qarnot_conn.wait_for_task(uuid)
    event = {"status": "error", "task_uuid": uuid, **ERROR_EVENT}
    assert operator("echo done").execute_complete(make_context(try_number=1, max_tries=2), event) == uuid


def test_an_error_event_for_a_deleted_task_fails_without_retry(qarnot_conn: Any) -> None:
    uuid = start_task("echo done")
    qarnot_conn.wait_for_task(uuid)
    QarnotHook().get_task(uuid).delete()
    event = {"status": "error", "task_uuid": uuid, **ERROR_EVENT}
    with pytest.raises(AirflowFailException, match="no longer exists"):
        operator("echo done").execute_complete(make_context(try_number=1, max_tries=2), event)


def test_a_success_event_for_a_task_deleted_since_still_succeeds(qarnot_conn: Any, tmp_path: Any) -> None:
    """auto_delete with a completion_ttl shorter than the wait for a worker: the event is all there is."""
    uuid = start_task("echo done")
    qarnot_conn.wait_for_task(uuid)
    QarnotHook().get_task(uuid).delete()
    event = {"status": "success", "task_uuid": uuid, "state": "Success", "message": "ok", "errors": []}
    assert operator("echo done").execute_complete(make_context(), event) == uuid
    with pytest.raises(AirflowException, match="results cannot be downloaded") as info:
        operator("echo done", download_results_to=str(tmp_path)).execute_complete(make_context(), event)
    assert not isinstance(info.value, AirflowFailException), "a retry computes the results again"
    failure = {**event, "status": "failure", "state": "Failure", "message": "instance 0 failed"}
    with pytest.raises(AirflowException, match="instance 0 failed"):
        operator("echo done").execute_complete(make_context(), failure)


def test_an_error_event_for_a_task_gone_with_auto_delete_is_retried(qarnot_conn: Any) -> None:
    """auto_delete may have removed a task that ended while polling failed: its outcome is unknown, not failed."""
    uuid = start_task("echo done")
    qarnot_conn.wait_for_task(uuid)
    QarnotHook().get_task(uuid).delete()
    event = {"status": "error", "task_uuid": uuid, **ERROR_EVENT}
    op = operator("echo done", auto_delete=True, completion_ttl=timedelta(minutes=5))
    with pytest.raises(AirflowException, match="auto_delete may have removed it") as info:
        op.execute_complete(make_context(try_number=1, max_tries=2), event)
    assert not isinstance(info.value, AirflowFailException)
