"""QarnotHook against the emulator over loopback HTTP: connection test, submit/reattach, abort, stdout, batch states."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_qarnot.client import states
from airflow_provider_qarnot.client.spec import TaskSpec
from airflow_provider_qarnot.hooks.qarnot import QarnotHook, TaskInstanceIdentity
from tests.conftest import QARNOT_TEST_TOKEN, qarnot_conn_json, requests_made

IDENTITY = TaskInstanceIdentity("dag", "task", "run-1", -1)


def _spec(command: str, try_number: int = 1, identity: TaskInstanceIdentity = IDENTITY) -> TaskSpec:
    return TaskSpec(
        name="t",
        profile="docker-batch",
        instance_count=1,
        constants={"DOCKER_CMD": command},
        tags=[identity.tag],
        labels=identity.labels(try_number),
    )


def test_test_connection_ok(qarnot_conn: Any) -> None:
    ok, message = QarnotHook().test_connection()
    assert ok
    assert qarnot_conn.api_url in message


def test_test_connection_reports_a_bad_token_without_it(monkeypatch: pytest.MonkeyPatch, emu: Any) -> None:
    wrong = "wrong-token-0123456789"
    monkeypatch.setenv("AIRFLOW_CONN_QARNOT_BAD", qarnot_conn_json(emu.api_url, wrong))
    ok, message = QarnotHook("qarnot_bad").test_connection()
    assert not ok
    assert "token" in message
    assert wrong not in message
    assert QARNOT_TEST_TOKEN not in message


def test_test_connection_reports_a_bad_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_QARNOT_BAD", qarnot_conn_json("http://example.com"))
    ok, message = QarnotHook("qarnot_bad").test_connection()
    assert not ok
    assert "plain http" in message


def test_submit_then_reattach_then_reuse(qarnot_conn: Any) -> None:
    hook = QarnotHook()
    task, decision = hook.submit_or_reattach(_spec("sleep 1"), IDENTITY, first_try=1)
    assert decision.action == "submit"
    again, decision = hook.submit_or_reattach(_spec("sleep 1", 2), IDENTITY, first_try=1)
    assert decision.action == "attach"
    assert again.uuid == task.uuid
    qarnot_conn.wait_for_task(task.uuid, timeout=20)
    done, decision = hook.submit_or_reattach(_spec("sleep 1", 3), IDENTITY, first_try=1)
    assert decision.action == "reuse"
    assert done.uuid == task.uuid
    assert done.state == states.SUCCESS
    assert requests_made(qarnot_conn, "POST /tasks") == 1
    fresh, decision = hook.submit_or_reattach(_spec("true", 4), IDENTITY, first_try=4)  # after a clear
    assert decision.action == "submit"
    assert fresh.uuid != task.uuid
    off, decision = hook.submit_or_reattach(_spec("true", 4), IDENTITY, reattach=False)
    assert decision.action == "submit"
    assert off.uuid not in (task.uuid, fresh.uuid)


def test_failed_earlier_try_is_resubmitted(qarnot_conn: Any) -> None:
    hook = QarnotHook()
    failed, _ = hook.submit_or_reattach(_spec("exit 3"), IDENTITY, first_try=1)
    assert qarnot_conn.wait_for_task(failed.uuid, timeout=20)["state"] == states.FAILURE
    retry, decision = hook.submit_or_reattach(_spec("true", 2), IDENTITY, first_try=1)
    assert decision.action == "submit"
    assert retry.uuid != failed.uuid


def test_abort_task(qarnot_conn: Any) -> None:
    hook = QarnotHook()
    task = hook.submit_task(_spec("sleep 30"))
    assert hook.abort_task(task.uuid) is True
    assert qarnot_conn.wait_for_task(task.uuid, timeout=20)["state"] == states.CANCELLED
    assert hook.abort_task(task.uuid) is False  # final: nothing sent
    assert hook.abort_task("00000000-0000-0000-0000-000000000000") is False  # gone


def test_stdout_tail_is_bounded(qarnot_conn: Any) -> None:
    hook = QarnotHook()
    task = hook.submit_task(_spec("for i in $(seq 1 30); do echo line-$i; done"))
    qarnot_conn.wait_for_task(task.uuid, timeout=20)
    assert hook.stdout_tail(task.uuid, 5) == [f"line-{i}" for i in range(26, 31)]
    assert hook.stdout_tail(task.uuid, 0) == []


def test_task_states_is_one_request_per_hundred_tasks(qarnot_conn: Any) -> None:
    hook = QarnotHook()
    uuids = [hook.submit_task(_spec("true")).uuid for _ in range(3)]
    before = requests_made(qarnot_conn, "POST /tasks/paginate")
    found = hook.task_states([*uuids, "00000000-0000-0000-0000-000000000000"])
    assert set(found) == set(uuids)
    assert requests_made(qarnot_conn, "POST /tasks/paginate") == before + 1


def test_reattach_aborts_the_other_running_tasks_of_earlier_tries(qarnot_conn: Any) -> None:
    """Two tries' tasks both running (a duplicate): the retry attaches to the newest and aborts the other."""
    hook = QarnotHook()
    older = hook.submit_task(_spec("sleep 30", 1))
    newer = hook.submit_task(_spec("sleep 30", 2))
    task, decision = hook.submit_or_reattach(_spec("sleep 30", 3), IDENTITY, first_try=1, try_number=3)
    assert (decision.action, task.uuid) == ("attach", newer.uuid)
    assert qarnot_conn.wait_for_task(older.uuid, timeout=20)["state"] == states.CANCELLED
    assert states.is_active(qarnot_conn.task(newer.uuid)["state"])
    hook.abort_task(newer.uuid)


def test_without_reattach_a_retry_aborts_the_previous_try_before_submitting(qarnot_conn: Any) -> None:
    hook = QarnotHook()
    first = hook.submit_task(_spec("sleep 30", 1))
    task, decision = hook.submit_or_reattach(_spec("sleep 30", 2), IDENTITY, first_try=1, try_number=2, reattach=False)
    assert decision.action == "submit"
    assert task.uuid != first.uuid
    assert qarnot_conn.wait_for_task(first.uuid, timeout=20)["state"] == states.CANCELLED
    assert states.is_active(qarnot_conn.task(task.uuid)["state"])
    hook.abort_task(task.uuid)


def test_the_first_try_searches_once_then_submits(qarnot_conn: Any) -> None:
    hook = QarnotHook()
    created: list[str] = []
    task, decision = hook.submit_or_reattach(
        _spec("true"), IDENTITY, first_try=1, try_number=1, on_created=created.append
    )
    assert decision.action == "submit"
    assert created == [task.uuid]
    assert requests_made(qarnot_conn, "POST /tasks/paginate") == 1


@pytest.mark.parametrize("reattach", [True, False])
def test_a_try_that_runs_again_keeps_its_own_task(qarnot_conn: Any, reattach: bool) -> None:
    """Airflow can run one try's execute() twice: the second finds the first's task and submits nothing."""
    hook = QarnotHook()
    first, _ = hook.submit_or_reattach(_spec("sleep 30", 1), IDENTITY, first_try=1, try_number=1, reattach=reattach)
    again, decision = hook.submit_or_reattach(
        _spec("sleep 30", 1), IDENTITY, first_try=1, try_number=1, reattach=reattach
    )
    assert (decision.action, again.uuid) == ("attach", first.uuid)
    assert requests_made(qarnot_conn, "POST /tasks") == 1
    hook.abort_task(first.uuid)


def test_after_a_clear_the_new_try_aborts_the_task_of_the_cleared_try(qarnot_conn: Any) -> None:
    """The trigger's on_kill can lose its race with a fast rerun: the rerun itself aborts the old task."""
    hook = QarnotHook()
    old = hook.submit_task(_spec("sleep 30", 1))
    task, decision = hook.submit_or_reattach(_spec("sleep 30", 2), IDENTITY, first_try=2, try_number=2)
    assert decision.action == "submit"
    assert task.uuid != old.uuid
    assert qarnot_conn.wait_for_task(old.uuid, timeout=20)["state"] == states.CANCELLED
    assert states.is_active(qarnot_conn.task(task.uuid)["state"])
    hook.abort_task(task.uuid)
