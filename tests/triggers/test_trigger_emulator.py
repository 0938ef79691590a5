"""QarnotTaskTrigger driving real emulator tasks: one event per outcome, on_kill, and cancellation safety."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_qarnot.client import states
from airflow_provider_qarnot.client.spec import TaskSpec
from airflow_provider_qarnot.hooks.qarnot import QarnotHook
from airflow_provider_qarnot.triggers.poller import active_pollers
from airflow_provider_qarnot.triggers.qarnot import QarnotTaskTrigger
from tests.conftest import leak_token_into_errors, qarnot_conn_json

POLL = 0.2


def submit(command: str, **fields: Any) -> str:
    spec = TaskSpec(name="t", profile="docker-batch", instance_count=1, constants={"DOCKER_CMD": command}, **fields)
    return str(QarnotHook().submit_task(spec).uuid)


async def first_event(trigger: QarnotTaskTrigger, timeout: float = 30) -> dict[str, Any]:
    return (await asyncio.wait_for(trigger.run().__anext__(), timeout)).payload


@pytest.fixture(params=[True, False], ids=["shared", "per-task"])
def shared(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


async def test_success(qarnot_conn: Any, shared: bool) -> None:
    uuid = submit("echo ok")
    event = await first_event(QarnotTaskTrigger(task_uuid=uuid, poll_interval=POLL, shared_polling=shared))
    assert event == {
        "status": "success",
        "task_uuid": uuid,
        "state": "Success",
        "message": event["message"],
        "errors": [],
    }
    assert "succeeded" in event["message"]


async def test_failure(qarnot_conn: Any, shared: bool) -> None:
    uuid = submit("echo bad >&2; exit 3")
    event = await first_event(QarnotTaskTrigger(task_uuid=uuid, poll_interval=POLL, shared_polling=shared))
    assert event["status"] == "failure"
    assert event["state"] == states.FAILURE
    assert event["errors"]
    assert "instance 0" in event["message"]


async def test_cancelled(qarnot_conn: Any, shared: bool) -> None:
    uuid = submit("sleep 30")
    waiting = asyncio.ensure_future(
        first_event(QarnotTaskTrigger(task_uuid=uuid, poll_interval=POLL, shared_polling=shared))
    )
    await asyncio.sleep(0.5)
    assert not waiting.done()
    await asyncio.to_thread(QarnotHook().abort_task, uuid)
    event = await waiting
    assert event["status"] == "cancelled"
    assert event["state"] == states.CANCELLED
    assert "cancelled" in event["message"]


async def test_timeout_leaves_the_task_to_the_operator(qarnot_conn: Any, shared: bool) -> None:
    uuid = submit("sleep 30")
    started = time.time()
    trigger = QarnotTaskTrigger(task_uuid=uuid, deadline=started + 1.0, poll_interval=POLL, shared_polling=shared)
    event = await first_event(trigger)
    assert 1.0 <= time.time() - started < 5
    assert event["status"] == "timeout"
    assert event["message"].startswith("Timeout")
    assert states.is_active(event["state"])
    assert states.is_active(qarnot_conn.task(uuid)["state"])  # the trigger itself aborts nothing


async def test_deleted_task_is_an_error(qarnot_conn: Any, shared: bool) -> None:
    uuid = submit("sleep 30")
    waiting = asyncio.ensure_future(
        first_event(QarnotTaskTrigger(task_uuid=uuid, poll_interval=POLL, shared_polling=shared))
    )
    await asyncio.sleep(0.3)
    await asyncio.to_thread(QarnotHook().get_conn().request, "DELETE", f"/tasks/{uuid}")
    event = await waiting
    assert event["status"] == "error"
    assert "no longer exists" in event["message"]


async def test_revoked_token_is_an_error_at_once(
    monkeypatch: pytest.MonkeyPatch, qarnot_conn: Any, shared: bool
) -> None:
    uuid = submit("sleep 30")
    monkeypatch.setenv("AIRFLOW_CONN_QARNOT_REVOKED", qarnot_conn_json(qarnot_conn.api_url, "revoked-token-000"))
    trigger = QarnotTaskTrigger(
        task_uuid=uuid, qarnot_conn_id="qarnot_revoked", poll_interval=POLL, shared_polling=shared
    )
    event = await first_event(trigger, timeout=10)
    assert event["status"] == "error"
    assert "token" in event["message"]
    assert "revoked-token-000" not in event["message"]


async def test_on_kill_aborts_the_task(qarnot_conn: Any, shared: bool) -> None:
    uuid = submit("sleep 30")
    trigger = QarnotTaskTrigger(task_uuid=uuid, poll_interval=POLL, shared_polling=shared)
    running = asyncio.ensure_future(first_event(trigger))
    await asyncio.sleep(0.5)
    running.cancel()  # the triggerer cancels the run, then calls on_kill for a user action
    with pytest.raises(asyncio.CancelledError):
        await running
    await trigger.on_kill()
    await trigger.cleanup()
    final = await asyncio.to_thread(qarnot_conn.wait_for_task, uuid, 20)
    assert final["state"] == states.CANCELLED


async def test_an_on_kill_cut_short_by_airflows_timeout_still_aborts(qarnot_conn: Any) -> None:
    """Airflow gives on_kill 30 s, then cancels it. With many tasks marked failed at once, the aborts queue
    for the loop's few worker threads: here its one thread is busy for 1.5 s and on_kill gets 0.3 s."""
    uuid = submit("sleep 30")
    loop = asyncio.get_running_loop()
    one_thread = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    loop.set_default_executor(one_thread)
    busy = asyncio.ensure_future(asyncio.to_thread(time.sleep, 1.5))  # the other aborts ahead in the queue
    trigger = QarnotTaskTrigger(task_uuid=uuid, poll_interval=POLL)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(trigger.on_kill(), timeout=0.3)
    await trigger.cleanup()  # as Airflow does, right after on_kill timed out
    await busy
    for _ in range(100):  # not through the one thread: the abort still needs it
        if qarnot_conn.task(uuid)["state"] == states.CANCELLED:
            break
        await asyncio.sleep(0.2)
    assert qarnot_conn.task(uuid)["state"] == states.CANCELLED
    assert trigger._hook is None, "the late abort left no connection open on the cleaned-up trigger"
    one_thread.shutdown(wait=False)


async def test_cancellation_alone_aborts_nothing(qarnot_conn: Any, shared: bool) -> None:
    """A triggerer restart or hand-over cancels the run (and calls cleanup) but not on_kill: the task must live."""
    uuid = submit("sleep 30")
    trigger = QarnotTaskTrigger(task_uuid=uuid, poll_interval=POLL, shared_polling=shared)
    running = asyncio.ensure_future(first_event(trigger))
    await asyncio.sleep(0.5)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    await trigger.cleanup()
    await asyncio.sleep(0.5)
    assert states.is_active(qarnot_conn.task(uuid)["state"])
    assert "qarnot_default" not in active_pollers() or not active_pollers()["qarnot_default"].watched


async def test_on_kill_respects_cancel_on_kill_false(qarnot_conn: Any) -> None:
    uuid = submit("sleep 30")
    trigger = QarnotTaskTrigger(task_uuid=uuid, poll_interval=POLL, cancel_on_kill=False)
    await trigger.on_kill()
    await asyncio.sleep(0.3)
    assert states.is_active(qarnot_conn.task(uuid)["state"])


async def test_on_kill_on_a_finished_task_is_harmless(qarnot_conn: Any) -> None:
    uuid = submit("true")
    await asyncio.to_thread(qarnot_conn.wait_for_task, uuid, 20)
    await QarnotTaskTrigger(task_uuid=uuid).on_kill()
    assert qarnot_conn.task(uuid)["state"] == states.SUCCESS


def deferred_ti(run_id: str = "r", map_index: int = -1) -> SimpleNamespace:
    """What a trigger knows of its task instance in the triggerer."""
    return SimpleNamespace(dag_id="d", task_id="t", run_id=run_id, map_index=map_index)


@pytest.mark.parametrize(
    ("state", "map_index", "aborted"),
    [
        ("deferred", -1, False),  # the trigger only moved to another triggerer (apache/airflow#73454)
        ("deferred", 2, False),
        ("failed", -1, True),  # marked failed
        (None, 2, True),  # cleared
        ("success", -1, True),  # marked success
    ],
)
async def test_on_kill_aborts_only_when_the_task_instance_left_deferred(
    qarnot_conn: Any, monkeypatch: pytest.MonkeyPatch, state: str | None, map_index: int, aborted: bool
) -> None:
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    asked: list[dict[str, Any]] = []

    def get_task_states(**kwargs: Any) -> dict[str, Any]:
        asked.append(kwargs)
        return {"r": {("t" if map_index < 0 else f"t_{map_index}"): state}}

    monkeypatch.setattr(RuntimeTaskInstance, "get_task_states", staticmethod(get_task_states))
    uuid = submit("sleep 30")
    trigger = QarnotTaskTrigger(task_uuid=uuid, poll_interval=POLL)
    trigger.task_instance = deferred_ti(map_index=map_index)  # type: ignore[assignment]
    await trigger.on_kill()
    assert asked == [{"dag_id": "d", "task_ids": ["t"], "run_ids": ["r"], "map_index": map_index}]
    if aborted:
        assert (await asyncio.to_thread(qarnot_conn.wait_for_task, uuid, 20))["state"] == states.CANCELLED
    else:
        await asyncio.sleep(0.3)
        assert states.is_active(qarnot_conn.task(uuid)["state"])
        await asyncio.to_thread(QarnotHook().abort_task, uuid)


async def test_on_kill_aborts_when_the_state_cannot_be_read(
    qarnot_conn: Any, monkeypatch: pytest.MonkeyPatch, capfd: Any
) -> None:
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    def get_task_states(**kwargs: Any) -> dict[str, Any]:
        raise ConnectionError("supervisor unreachable")

    monkeypatch.setattr(RuntimeTaskInstance, "get_task_states", staticmethod(get_task_states))
    uuid = submit("sleep 30")
    trigger = QarnotTaskTrigger(task_uuid=uuid, poll_interval=POLL)
    trigger.task_instance = deferred_ti()  # type: ignore[assignment]
    await trigger.on_kill()
    assert (await asyncio.to_thread(qarnot_conn.wait_for_task, uuid, 20))["state"] == states.CANCELLED
    assert "Could not read the state of the task instance" in capfd.readouterr().out


async def test_events_never_carry_the_token(qarnot_conn: Any, shared: bool) -> None:
    """Qarnot's errors may quote the task's output, and with it the token: events hide it."""
    uuid = submit("exit 3")
    await asyncio.to_thread(qarnot_conn.wait_for_task, uuid, 20)
    leak_token_into_errors(qarnot_conn, uuid)
    event = await first_event(QarnotTaskTrigger(task_uuid=uuid, poll_interval=POLL, shared_polling=shared))
    assert event["status"] == "failure"
    assert qarnot_conn.token not in repr(event)
    assert "token=***" in repr(event)


async def test_a_burst_of_triggers_reads_the_connection_once(qarnot_conn: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A mapped task deferring 50 at once costs one connection read (one supervisor round trip), not 50."""
    reads: list[str] = []
    original = QarnotHook.aget_connection

    async def counting(conn_id: str) -> Any:
        reads.append(conn_id)
        return await original(conn_id)

    monkeypatch.setattr(QarnotHook, "aget_connection", staticmethod(counting))
    uuids = [submit("echo ok") for _ in range(50)]
    events = await asyncio.gather(*(first_event(QarnotTaskTrigger(task_uuid=u, poll_interval=POLL)) for u in uuids))
    assert {e["status"] for e in events} == {"success"}
    assert reads == ["qarnot_default"]


async def test_a_failed_connection_read_is_not_kept(qarnot_conn: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    uuid = submit("echo ok")
    good = qarnot_conn_json(qarnot_conn.api_url, qarnot_conn.token)
    monkeypatch.setenv("AIRFLOW_CONN_QARNOT_DEFAULT", '{"conn_type": "qarnot", "host": "http://127.0.0.1:9"}')
    event = await first_event(QarnotTaskTrigger(task_uuid=uuid, poll_interval=POLL))
    assert event["status"] == "error"
    assert "no API token" in event["message"]
    monkeypatch.setenv("AIRFLOW_CONN_QARNOT_DEFAULT", good)
    assert (await first_event(QarnotTaskTrigger(task_uuid=uuid, poll_interval=POLL)))["status"] == "success"


async def test_an_event_is_held_until_min_event_delay_after_the_start(
    qarnot_conn: Any, monkeypatch: pytest.MonkeyPatch, shared: bool
) -> None:
    """A trigger firing within seconds of the deferral races Airflow's late executor event (apache/airflow#72716)."""
    uuid = submit("echo quick")
    qarnot_conn.wait_for_task(uuid)
    monkeypatch.setenv("AIRFLOW__QARNOT__MIN_EVENT_DELAY", "1.5")
    started = time.monotonic()
    event = await first_event(QarnotTaskTrigger(task_uuid=uuid, poll_interval=POLL, shared_polling=shared))
    assert event["status"] == "success"
    assert time.monotonic() - started >= 1.5
    running = submit("sleep 30")
    started = time.monotonic()
    timeout = await first_event(
        QarnotTaskTrigger(task_uuid=running, poll_interval=POLL, deadline=time.time() + 0.5, shared_polling=shared)
    )
    assert timeout["status"] == "timeout"
    assert time.monotonic() - started < 1.4, "a deadline is never held"
    QarnotHook().abort_task(running)
