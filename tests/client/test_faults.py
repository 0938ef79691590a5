"""The client under the emulator's fault injection: nothing is lost and nothing is submitted twice."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_qarnot.client import QConnection, QTask, RetryPolicy, TransientFailureException, states
from airflow_provider_qarnot.emulator import FaultRule
from tests.client.conftest import Recorder, connect, reply


def test_dropped_post_that_created_the_task_is_not_resubmitted(qarnot_emulator_factory: Any) -> None:
    emu = qarnot_emulator_factory(mode="simulate", sim_duration=0.2)
    emu.set_faults([FaultRule(pattern="POST /tasks", drop_after=1.0)], seed=1)
    with connect(emu) as conn:
        task = QTask(conn, "dropped", "docker-batch", 1)
        task.submit()
        emu.clear_faults()
        assert task.wait(timeout=30, poll_interval=0.1)
    tasks = emu.tasks()
    assert [t["uuid"] for t in tasks] == [task.uuid]


def test_dropped_post_that_created_nothing_is_sent_again(qarnot_emulator_factory: Any) -> None:
    emu = qarnot_emulator_factory(mode="simulate", sim_duration=0.2)
    emu.set_faults([FaultRule(pattern="POST /tasks", drop_before=0.5)], seed=3)
    with connect(emu, retry=RetryPolicy(max_attempts=12, base_delay=0.01, max_delay=0.05)) as conn:
        task = QTask(conn, "retried", "docker-batch", 1)
        task.submit()
    assert [t["uuid"] for t in emu.tasks()] == [task.uuid]
    assert emu.stats()["faults_injected"] >= 1


def test_submit_gives_up_cleanly_when_the_api_stays_down(qarnot_emulator_factory: Any) -> None:
    emu = qarnot_emulator_factory(mode="simulate")
    emu.set_faults([FaultRule(pattern="POST /tasks", rate_503=1.0)], seed=1)
    with connect(emu, retry=RetryPolicy(max_attempts=3, base_delay=0.01)) as conn:
        with pytest.raises(TransientFailureException, match="no task was created"):
            QTask(conn, "down", "docker-batch", 1).submit()
    assert emu.tasks() == []


@pytest.mark.parametrize("status_field", ["rate_429", "rate_500", "rate_503"])
def test_transient_statuses_on_reads_are_retried(qarnot_emulator_factory: Any, status_field: str) -> None:
    emu = qarnot_emulator_factory(mode="simulate", sim_duration=1.5)
    with connect(emu, retry=RetryPolicy(max_attempts=15, base_delay=0.01, max_delay=0.05)) as conn:
        task = QTask(conn, "reads", "docker-batch", 1)
        task.submit()
        emu.set_faults([FaultRule(pattern="GET /tasks/*", **{status_field: 0.6})], seed=5)
        assert task.wait(timeout=30, poll_interval=0.05)
        assert task.state == states.SUCCESS
    assert emu.stats()["faults_injected"] > 0


def test_fifty_cycles_under_thirty_percent_faults(qarnot_emulator_factory: Any) -> None:
    """Acceptance: with 30% 429/503/drops on every endpoint, 50 submit-and-wait cycles each create exactly
    one task and end in the state the task really reached."""
    emu = qarnot_emulator_factory(mode="simulate", sim_duration=0.15)
    emu.set_faults(
        [FaultRule(pattern="*", rate_429=0.1, rate_503=0.1, drop_before=0.05, drop_after=0.05, retry_after=0.05)],
        seed=42,
    )
    seen: dict[str, str] = {}
    policy = RetryPolicy(max_attempts=12, base_delay=0.01, max_delay=0.1, max_elapsed=60)
    with connect(emu, retry=policy) as conn:
        for n in range(50):
            outcome = "failure" if n % 5 == 0 else "success"
            task = QTask(conn, f"cycle-{n}", "docker-batch", 1, constants={"EMULATOR_OUTCOME": outcome})
            task.submit()
            assert task.wait(timeout=60, poll_interval=0.05)
            assert task.uuid is not None
            seen[task.uuid] = task.state
    injected = emu.stats()["faults_injected"]
    emu.clear_faults()
    truth = {t["uuid"]: t["state"] for t in emu.tasks()}
    assert len(truth) == 50, "each cycle created exactly one Qarnot task"
    assert seen == truth
    assert sum(1 for s in truth.values() if s == states.FAILURE) == 10
    assert injected > 100


def test_a_created_task_is_not_lost_when_its_first_read_fails(qarnot_emulator_factory: Any) -> None:
    emu = qarnot_emulator_factory(mode="simulate", sim_duration=5)
    emu.set_faults([FaultRule(pattern="GET /tasks/*", rate_503=1.0)], seed=1)
    created: list[str] = []
    with connect(emu, retry=RetryPolicy(max_attempts=2, base_delay=0.01)) as conn:
        task = QTask(conn, "first-read-fails", "docker-batch", 1)
        state = task.submit(on_created=created.append)
    assert state == states.SUBMITTED
    assert task.uuid is not None
    assert created == [task.uuid]
    assert [t["uuid"] for t in emu.tasks()] == [task.uuid]


def lagging_lookup(monkeypatch: pytest.MonkeyPatch, lags: int = 1) -> list[int]:
    """Make the first `lags` submit-tag lookups miss (a replica lagging behind); returns the lookups made."""
    lookups: list[int] = []
    original = QTask._find_by_submit_tag

    def lagging(self: QTask) -> Any:
        lookups.append(1)
        return None if len(lookups) <= lags else original(self)

    monkeypatch.setattr(QTask, "_find_by_submit_tag", lagging)
    return lookups


@pytest.mark.parametrize("answers_lost", [1, 2])
def test_a_resend_after_a_lagging_lookup_is_refused_so_no_twin_is_made(
    qarnot_emulator_factory: Any, monkeypatch: pytest.MonkeyPatch, answers_lost: int
) -> None:
    """The first POST is acted on but its answer lost, and the tag lookup does not see the task yet (a
    replica lagging behind): the resend carries the same unique shortname, the server refuses it (and
    that answer may be lost too), and the next lookup finds the first task."""
    emu = qarnot_emulator_factory(mode="simulate", sim_duration=5)
    emu.set_faults([FaultRule(pattern="POST /tasks", drop_after=1.0, max_faults=answers_lost)], seed=1)
    lookups = lagging_lookup(monkeypatch)
    with connect(emu) as conn:
        task = QTask(conn, "late-twin", "docker-batch", 1)
        task.submit()
    assert emu.stats()["requests"]["POST /tasks"] == 2
    assert [t["uuid"] for t in emu.tasks()] == [task.uuid], "no second task was ever created"
    assert lookups == [1, 1]


def test_a_refused_resend_whose_lookups_all_lag_reads_the_task_by_its_shortname(
    qarnot_emulator_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refusal ("Shortname ... is already used") proves the first POST created the task: even when every
    tag lookup lags, the submit adopts it (a direct read by shortname) instead of failing for good."""
    emu = qarnot_emulator_factory(mode="simulate", sim_duration=5)
    emu.set_faults([FaultRule(pattern="POST /tasks", drop_after=1.0, max_faults=1)], seed=1)
    lagging_lookup(monkeypatch, lags=100)
    created: list[str] = []
    with connect(emu) as conn:
        task = QTask(conn, "all-lag", "docker-batch", 1)
        task.submit(on_created=created.append)
    assert [t["uuid"] for t in emu.tasks()] == [task.uuid] == created


def test_late_twins_are_removed_where_the_server_does_not_refuse_a_taken_shortname(
    recorder_factory: Callable[..., Recorder],
) -> None:
    """Should a server accept a second task with the same shortname: the first POST's answer is lost and
    its lookup lags, the resend creates a twin, and the client deletes the one it did not adopt."""
    first, twin = "6b1a7c2e-0000-4000-8000-00000000000a", "6b1a7c2e-0000-4000-8000-00000000000b"
    summaries = {
        first: {"uuid": first, "name": "t", "state": "Submitted", "creationDate": "2026-12-01T10:00:00Z"},
        twin: {"uuid": twin, "name": "t", "state": "Submitted", "creationDate": "2026-12-01T10:00:01Z"},
    }
    deleted: list[str] = []

    def answer(h: Any, n: int) -> None:
        posts = sum(r["method"] == "POST" for r in rec.requests)
        lookups = sum(r["path"].startswith("/tasks/summaries") for r in rec.requests)
        if h.command == "POST" and posts == 1:
            h.close_connection = True  # acted on, the answer lost
            h.connection.shutdown(2)
        elif h.command == "POST":
            reply(h, 200, json.dumps({"uuid": twin}).encode())
        elif h.path.startswith("/tasks/summaries"):
            found = [] if lookups == 1 else list(summaries.values())
            reply(h, 200, json.dumps(found).encode())
        elif h.command == "DELETE":
            deleted.append(h.path.rsplit("/", 1)[-1])
            reply(h, 200)
        else:
            reply(h, 200, json.dumps(summaries[h.path.rsplit("/", 1)[-1]]).encode())

    rec = recorder_factory(answer)
    with QConnection(rec.url, "tok", retry=RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.02)) as conn:
        task = QTask(conn, "t", "docker-batch", 1)
        task.submit()
    assert task.uuid == twin, "the task this submit's answer named"
    assert deleted == [first], "the other task of the same submit was deleted"


def test_a_slow_server_committing_after_the_client_gave_up_still_leaves_one_task(
    qarnot_emulator_factory: Any,
) -> None:
    """Every POST /tasks takes 2.5 s before the server acts, longer than the client's 1 s read timeout: each
    resend is sent before the previous one committed, so no lookup or cleanup can see it in time. The
    submit's unique shortname makes the server itself refuse every resend after the first commit."""
    emu = qarnot_emulator_factory(mode="simulate", sim_duration=30)
    emu.set_faults([FaultRule(pattern="POST /tasks", latency_ms=2500)], seed=1)
    policy = RetryPolicy(max_attempts=6, base_delay=0.2, max_delay=0.5)
    with connect(emu, retry=policy, timeout=(1.0, 1.0)) as conn:
        task = QTask(conn, "slow-commit", "docker-batch", 1)
        task.submit()
        time.sleep(4)  # every POST sent has been acted on by now
    assert [t["uuid"] for t in emu.tasks()] == [task.uuid], "one submit leaves one task"
    assert emu.stats()["requests"]["POST /tasks"] >= 2, "the POST was sent again at least once"


def test_a_shortname_given_by_the_user_is_kept(qarnot_emulator_factory: Any) -> None:
    emu = qarnot_emulator_factory(mode="simulate")
    with connect(emu) as conn:
        task = QTask(conn, "named", "docker-batch", 1, shortname="my-render-42")
        task.submit()
    assert [t["shortname"] for t in emu.tasks()] == ["my-render-42"]


def test_a_lookup_finding_two_tasks_keeps_the_oldest_and_removes_the_other(
    qarnot_emulator_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two POSTs are acted on and both answers lost; the first lookup lags, so the second lookup finds two."""
    emu = qarnot_emulator_factory(mode="simulate", sim_duration=5)
    emu.set_faults([FaultRule(pattern="POST /tasks", drop_after=1.0, max_faults=2)], seed=1)
    lookups = lagging_lookup(monkeypatch)
    with connect(emu) as conn:
        task = QTask(conn, "two-found", "docker-batch", 1)
        task.submit()
    created = sorted(emu.stats()["requests"].items())
    assert ("POST /tasks", 2) in created
    alive = [t for t in emu.tasks() if t["state"] != "PendingDelete"]
    assert [t["uuid"] for t in alive] == [task.uuid], "one submit leaves one task"
    assert len(lookups) == 2, "the second lookup found both tasks"


def test_submit_is_retried_by_one_policy_only(qarnot_emulator_factory: Any) -> None:
    """A POST /tasks that keeps getting 429 is sent max_attempts times, not max_attempts squared."""
    emu = qarnot_emulator_factory(mode="simulate")
    emu.set_faults([FaultRule(pattern="POST /tasks", rate_429=1.0, retry_after=0.01)], seed=1)
    policy = RetryPolicy(max_attempts=5, base_delay=0.01, max_delay=0.05)
    with connect(emu, retry=policy) as conn:
        with pytest.raises(TransientFailureException, match="no task was created") as info:
            QTask(conn, "throttled", "docker-batch", 1).submit()
    assert emu.stats()["requests"]["POST /tasks"] == 5
    assert info.value.unsent is True
    assert "gave up after 1 attempt" not in str(info.value)
    assert emu.tasks() == []


def test_an_abort_racing_another_one_is_not_an_error(recorder_factory: Callable[..., Recorder]) -> None:
    """Qarnot answers 403 to aborting a task that is already stopping (PendingCancel or PendingDelete)."""
    uuid = "6b1a7c2e-0000-4000-8000-000000000001"

    def answer(h: Any, n: int) -> None:
        if h.command == "POST":
            reply(h, 403, b'{"message": "Invalid operation on non running task"}')
        else:
            reply(h, 200, json.dumps({"uuid": uuid, "name": "t", "state": "PendingDelete"}).encode())

    rec = recorder_factory(answer)
    task = QTask.retrieve(QConnection(rec.url, "tok"), uuid)
    task.abort()
    assert task.state == states.PENDING_DELETE
    assert [r["method"] for r in rec.requests] == ["GET", "POST", "GET"]


def test_a_resend_refused_for_good_still_finds_the_first_submits_task(
    qarnot_emulator_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first POST took the last slot of the quota but its answer was lost; the lookup lagged, so the
    resend meets 403 "Maximum number of tasks reached": the task that exists must not be left unknown."""
    emu = qarnot_emulator_factory(mode="simulate", sim_duration=5, max_tasks=1)
    emu.set_faults([FaultRule(pattern="POST /tasks", drop_after=1.0, max_faults=1)], seed=1)
    lookups = lagging_lookup(monkeypatch)
    created: list[str] = []
    with connect(emu) as conn:
        task = QTask(conn, "quota", "docker-batch", 1)
        task.submit(on_created=created.append)
    assert emu.stats()["requests"]["POST /tasks"] == 2
    assert [t["uuid"] for t in emu.tasks()] == [task.uuid] == created
    assert len(lookups) == 2, "the refused resend was followed by a lookup"
