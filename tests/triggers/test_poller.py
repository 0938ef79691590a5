"""The shared poller: one batched request per interval for many triggers, membership changes, failed polls."""

from __future__ import annotations

import asyncio
import math
import time
import types
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_qarnot.client import states
from airflow_provider_qarnot.client.exceptions import InvalidRequestException
from airflow_provider_qarnot.client.spec import TaskSpec
from airflow_provider_qarnot.emulator import FaultRule
from airflow_provider_qarnot.hooks.qarnot import QarnotHook
from airflow_provider_qarnot.triggers import poller as poller_module
from airflow_provider_qarnot.triggers.poller import active_pollers
from airflow_provider_qarnot.triggers.qarnot import QarnotTaskTrigger
from tests.conftest import QARNOT_TEST_TOKEN, qarnot_conn_json, requests_made

PAGINATE = "POST /tasks/paginate"
GET_TASK = "GET /tasks/{uuid}"


def submit_many(n: int, command: str = "true") -> list[str]:
    hook = QarnotHook()
    spec = TaskSpec(name="t", profile="docker-batch", instance_count=1, constants={"DOCKER_CMD": command})
    return [str(hook.submit_task(spec).uuid) for _ in range(n)]


async def run_triggers(triggers: list[QarnotTaskTrigger], timeout: float = 60) -> list[dict[str, Any]]:
    async def one(t: QarnotTaskTrigger) -> dict[str, Any]:
        return (await t.run().__anext__()).payload

    return await asyncio.wait_for(asyncio.gather(*(one(t) for t in triggers)), timeout)


@pytest.fixture
def simulated(monkeypatch: pytest.MonkeyPatch, qarnot_emulator_factory: Callable[..., Any]) -> Any:
    """An emulator that only simulates task timelines (2 s each), as `qarnot_default`."""
    emulator = qarnot_emulator_factory(token=QARNOT_TEST_TOKEN, mode="simulate", sim_duration=2.0, cores=64)
    monkeypatch.setenv("AIRFLOW_CONN_QARNOT_DEFAULT", qarnot_conn_json(emulator.api_url))
    return emulator


async def test_fifty_triggers_cost_one_request_per_interval(simulated: Any) -> None:
    uuids = submit_many(50)
    interval = 0.5
    paginate_before, get_before = requests_made(simulated, PAGINATE), requests_made(simulated, GET_TASK)
    started = time.monotonic()
    events = await run_triggers([QarnotTaskTrigger(task_uuid=u, poll_interval=interval) for u in uuids])
    elapsed = time.monotonic() - started
    assert [e["status"] for e in events] == ["success"] * 50
    assert [e["task_uuid"] for e in events] == uuids
    polls = requests_made(simulated, PAGINATE) - paginate_before
    assert 1 <= polls <= math.ceil(elapsed / interval) + 1
    assert requests_made(simulated, GET_TASK) == get_before  # nobody polled on its own
    await asyncio.sleep(0)
    assert "qarnot_default" not in active_pollers()  # the poller stopped with its last watcher


async def test_per_task_polling_costs_one_request_per_trigger(simulated: Any) -> None:
    uuids = submit_many(10)
    get_before = requests_made(simulated, GET_TASK)
    triggers = [QarnotTaskTrigger(task_uuid=u, poll_interval=0.5, shared_polling=False) for u in uuids]
    events = await run_triggers(triggers)
    assert {e["status"] for e in events} == {"success"}
    assert requests_made(simulated, GET_TASK) - get_before >= 10 * 2  # every trigger polled, several times


async def test_more_than_a_hundred_tasks_take_two_requests_per_poll(simulated: Any) -> None:
    uuids = submit_many(120)
    before = requests_made(simulated, PAGINATE)
    started = time.monotonic()
    events = await run_triggers([QarnotTaskTrigger(task_uuid=u, poll_interval=1.0) for u in uuids])
    elapsed = time.monotonic() - started
    assert {e["status"] for e in events} == {"success"}
    requests = requests_made(simulated, PAGINATE) - before
    assert 2 <= requests <= 2 * (math.ceil(elapsed / 1.0) + 1)  # ⌈120/100⌉ requests per poll


async def test_triggers_join_and_leave(qarnot_conn: Any) -> None:
    quick = submit_many(1, "sleep 1")[0]
    slow, cancelled, timing_out = submit_many(3, "sleep 30")  # with quick, fills the emulator's 4 slots
    t_quick = asyncio.ensure_future(run_triggers([QarnotTaskTrigger(task_uuid=quick, poll_interval=1.0)]))
    t_slow = asyncio.ensure_future(run_triggers([QarnotTaskTrigger(task_uuid=slow, poll_interval=1.0)]))
    t_cancelled = asyncio.ensure_future(run_triggers([QarnotTaskTrigger(task_uuid=cancelled, poll_interval=1.0)]))
    t_timeout = asyncio.ensure_future(
        run_triggers([QarnotTaskTrigger(task_uuid=timing_out, poll_interval=1.0, deadline=time.time() + 0.7)])
    )
    await asyncio.sleep(0.3)
    poller = active_pollers()["qarnot_default"]
    assert poller.watched == {quick, slow, cancelled, timing_out}
    assert poller.interval == 1.0

    t_cancelled.cancel()  # a triggerer restart: the trigger leaves without an event, and aborts nothing
    with pytest.raises(asyncio.CancelledError):
        await t_cancelled
    assert poller.watched == {quick, slow, timing_out}
    assert states.is_active(qarnot_conn.task(cancelled)["state"])
    await asyncio.to_thread(QarnotHook().abort_task, cancelled)  # free its slot for the newcomer

    late = submit_many(1, "sleep 0.5")[0]
    t_late = asyncio.ensure_future(run_triggers([QarnotTaskTrigger(task_uuid=late, poll_interval=0.2)]))
    await asyncio.sleep(0.05)
    assert poller.watched == {quick, slow, timing_out, late}
    assert poller.interval == 0.2  # the newcomer's shorter interval applies to everyone

    assert (await t_timeout)[0]["status"] == "timeout"
    assert (await t_late)[0]["status"] == "success"
    assert (await t_quick)[0]["status"] == "success"
    assert poller.watched == {slow}
    assert poller.interval == 1.0
    await asyncio.to_thread(QarnotHook().abort_task, slow)
    assert (await t_slow)[0]["status"] == "cancelled"
    await asyncio.sleep(0.05)
    assert not poller.running
    assert "qarnot_default" not in active_pollers()

    # A later trigger starts a new poller.
    again = submit_many(1)[0]
    assert (await run_triggers([QarnotTaskTrigger(task_uuid=again, poll_interval=0.2)]))[0]["status"] == "success"
    await asyncio.to_thread(QarnotHook().abort_task, timing_out)


async def test_failed_polls_delay_events_but_lose_none(qarnot_conn: Any) -> None:
    uuids = submit_many(3, "sleep 0.3")
    qarnot_conn.set_faults([FaultRule(pattern=PAGINATE, rate_503=1.0, max_faults=8)])
    triggers = [QarnotTaskTrigger(task_uuid=u, poll_interval=0.2, max_consecutive_errors=50) for u in uuids]
    events = asyncio.ensure_future(run_triggers(triggers))
    await asyncio.sleep(0.3)
    poller = active_pollers()["qarnot_default"]
    results = await events
    assert [e["status"] for e in results] == ["success"] * 3
    assert poller.failed_polls >= 2
    assert qarnot_conn.stats()["faults_injected"] == 8


async def test_a_lasting_outage_ends_in_an_error_event(qarnot_conn: Any) -> None:
    uuids = submit_many(2, "sleep 30")
    qarnot_conn.set_faults([FaultRule(pattern=PAGINATE, rate_503=1.0)])
    triggers = [QarnotTaskTrigger(task_uuid=u, poll_interval=0.1, max_consecutive_errors=3) for u in uuids]
    results = await run_triggers(triggers, timeout=30)
    assert [e["status"] for e in results] == ["error", "error"]
    assert "no successful poll for" in results[0]["message"]
    assert "failed polls in a row" in results[0]["message"]


async def test_each_watcher_keeps_its_own_error_budget(qarnot_conn: Any) -> None:
    """A slow watcher (a sensor poking every 30 s) sharing the poller with a fast one is not failed at the fast rate."""
    fast_uuid, slow_uuid = submit_many(2, "sleep 30")
    qarnot_conn.set_faults([FaultRule(pattern=PAGINATE, rate_503=1.0)])
    fast = asyncio.ensure_future(
        run_triggers([QarnotTaskTrigger(task_uuid=fast_uuid, poll_interval=0.1, max_consecutive_errors=3)])
    )
    slow = asyncio.ensure_future(
        run_triggers([QarnotTaskTrigger(task_uuid=slow_uuid, poll_interval=30, max_consecutive_errors=3)])
    )
    assert (await asyncio.wait_for(fast, 30))[0]["status"] == "error"
    await asyncio.sleep(0.5)
    assert not slow.done(), "the slow watcher has 90 s of budget, not 0.3 s"
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    await asyncio.to_thread(QarnotHook().abort_task, fast_uuid)
    await asyncio.to_thread(QarnotHook().abort_task, slow_uuid)


async def test_a_bad_task_in_the_batch_fails_only_its_own_trigger(
    qarnot_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch read the API rejects because of one task is retried task by task, which isolates that task."""
    good = submit_many(2, "sleep 0.5")
    bad = "not-a-task-uuid"
    real_task_states = QarnotHook.task_states

    def task_states(self: QarnotHook, uuids: Any) -> Any:
        uuids = list(uuids)
        if bad in uuids:
            raise InvalidRequestException(f"malformed uuid {bad!r} in the filter", status_code=400)
        return real_task_states(self, uuids)

    monkeypatch.setattr(QarnotHook, "task_states", task_states)
    triggers = [QarnotTaskTrigger(task_uuid=u, poll_interval=0.2) for u in [*good, bad]]
    events = await run_triggers(triggers, timeout=30)
    assert [e["status"] for e in events] == ["success", "success", "error"]
    assert "no longer exists" in events[2]["message"]


async def test_the_poller_survives_python_310_timeouts(qarnot_conn: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before Python 3.11, `asyncio.wait_for` raised `asyncio.TimeoutError`, which was not the builtin one."""

    class Py310TimeoutError(Exception):
        """`asyncio.exceptions.TimeoutError` on Python 3.10: not a subclass of the builtin `TimeoutError`."""

    async def wait_for(awaitable: Any, timeout: float | None) -> Any:
        try:
            return await asyncio.wait_for(awaitable, timeout)
        except TimeoutError:
            raise Py310TimeoutError() from None

    py310_asyncio = types.ModuleType("asyncio")
    py310_asyncio.__dict__.update(vars(asyncio))
    py310_asyncio.TimeoutError = Py310TimeoutError  # type: ignore[attr-defined]
    py310_asyncio.wait_for = wait_for  # type: ignore[attr-defined]
    monkeypatch.setattr(poller_module, "asyncio", py310_asyncio)
    uuids = submit_many(2, "sleep 0.6")
    events = await run_triggers([QarnotTaskTrigger(task_uuid=u, poll_interval=0.2) for u in uuids], timeout=30)
    assert [e["status"] for e in events] == ["success", "success"]


async def test_tasks_of_two_connections_use_two_pollers(qarnot_conn: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_QARNOT_OTHER", qarnot_conn_json(qarnot_conn.api_url, qarnot_conn.token))
    first, second = submit_many(2, "sleep 0.5")
    waiting = asyncio.ensure_future(
        run_triggers(
            [
                QarnotTaskTrigger(task_uuid=first, poll_interval=0.2),
                QarnotTaskTrigger(task_uuid=second, qarnot_conn_id="qarnot_other", poll_interval=0.2),
            ]
        )
    )
    await asyncio.sleep(0.1)
    assert set(active_pollers()) == {"qarnot_default", "qarnot_other"}
    assert [e["status"] for e in await waiting] == ["success", "success"]
