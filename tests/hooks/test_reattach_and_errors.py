"""The task-instance tag, the reattach decision, and the one mapping from client errors to Airflow exceptions."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_provider_qarnot.client import exceptions as qe
from airflow_provider_qarnot.client import states
from airflow_provider_qarnot.client.models import InstanceInfo, TaskError, TaskSummary
from airflow_provider_qarnot.hooks.qarnot import TaskInstanceIdentity, decide_reattach
from airflow_provider_qarnot.utils.errors import (
    airflow_errors,
    is_transient,
    task_outcome_exception,
    to_airflow_exception,
)

IDENTITY = TaskInstanceIdentity("dag", "task", "manual__2026-01-01T00:00:00+00:00", -1)
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _summary(uuid: str, state: str, try_number: int | None = 1, age: int = 0, identity=IDENTITY) -> TaskSummary:
    labels = identity.labels(try_number)
    return TaskSummary(
        uuid=uuid, state=state, tags=(identity.tag,), labels=labels, creation_date=T0 + timedelta(seconds=age)
    )


def test_tag_is_deterministic_short_and_comma_free() -> None:
    tag = IDENTITY.tag
    assert tag == TaskInstanceIdentity("dag", "task", "manual__2026-01-01T00:00:00+00:00", -1).tag
    assert tag.startswith("airflow-ti-")
    assert len(tag) == len("airflow-ti-") + 20
    assert "," not in tag
    others = {
        TaskInstanceIdentity("dag", "task", "manual__2026-01-01T00:00:00+00:00", 0).tag,
        TaskInstanceIdentity("dag", "task2", "manual__2026-01-01T00:00:00+00:00", -1).tag,
        TaskInstanceIdentity("dag2", "task", "manual__2026-01-01T00:00:00+00:00", -1).tag,
    }
    assert tag not in others
    assert len(others) == 3


def test_labels_are_readable_and_identity_must_match() -> None:
    assert IDENTITY.labels(3) == {
        "airflow_dag_id": "dag",
        "airflow_task_id": "task",
        "airflow_run_id": "manual__2026-01-01T00:00:00+00:00",
        "airflow_map_index": "-1",
        "airflow_try_number": "3",
    }
    assert IDENTITY.matches(_summary("a", states.SUCCESS))
    other = TaskInstanceIdentity("dag", "task", "other-run", -1)
    forged = TaskSummary(uuid="x", state=states.SUCCESS, tags=(IDENTITY.tag,), labels=other.labels(1))
    assert not IDENTITY.matches(forged)  # same tag (a hash collision), different labels


@pytest.mark.parametrize(
    ("tasks", "action", "uuid"),
    [
        ([], "submit", None),
        ([("a", states.FAILURE, 1, 0)], "submit", None),
        ([("a", states.CANCELLED, 1, 0), ("b", states.PENDING_CANCEL, 2, 5)], "submit", None),
        ([("a", states.FULLY_EXECUTING, 1, 0)], "attach", "a"),
        ([("a", states.SUBMITTED, 1, 0), ("b", states.FAILURE, 2, 9)], "attach", "a"),
        ([("a", states.SUCCESS, 1, 0)], "reuse", "a"),
        ([("a", states.SUCCESS, 1, 0), ("b", states.SUCCESS, 2, 5)], "reuse", "b"),
        ([("a", states.SUCCESS, 1, 0), ("b", states.PARTIALLY_DISPATCHED, 2, 5)], "attach", "b"),
        ([("a", "SomeNewState", 1, 0)], "attach", "a"),
    ],
)
def test_decide_reattach(tasks: list[tuple[str, str, int, int]], action: str, uuid: str | None) -> None:
    decision = decide_reattach([_summary(u, s, t, a) for u, s, t, a in tasks], IDENTITY, first_try=1)
    assert decision.action == action
    assert (decision.summary.uuid if decision.summary else None) == uuid


def test_other_running_tasks_of_earlier_tries_are_stale() -> None:
    tasks = [
        _summary("a", states.FULLY_EXECUTING, 1, 0),
        _summary("b", states.SUBMITTED, 2, 5),
        _summary("c", states.PENDING_CANCEL, 2, 6),
        _summary("d", states.FAILURE, 2, 7),
    ]
    decision = decide_reattach(tasks, IDENTITY, first_try=1)
    assert (decision.action, decision.summary.uuid) == ("attach", "b")
    assert [s.uuid for s in decision.stale] == ["a"]
    off = decide_reattach(tasks, IDENTITY, first_try=1, reattach=False)
    assert (off.action, off.summary) == ("submit", None)
    assert [s.uuid for s in off.stale] == ["b", "a"]
    after_clear = decide_reattach(tasks, IDENTITY, first_try=3)  # a clear ended every earlier try
    assert (after_clear.action, [s.uuid for s in after_clear.stale]) == ("submit", ["b", "a"])


def test_the_current_tries_own_task_is_kept_whatever_its_state() -> None:
    tasks = [_summary("old", states.FULLY_EXECUTING, 1, 0), _summary("mine", states.FAILURE, 2, 5)]
    for reattach in (True, False):
        decision = decide_reattach(tasks, IDENTITY, first_try=1, reattach=reattach, try_number=2)
        assert (decision.action, decision.summary.uuid) == ("reuse", "mine")
        assert [s.uuid for s in decision.stale] == ["old"]
    running = [_summary("mine", states.SUBMITTED, 1, 0)]
    assert decide_reattach(running, IDENTITY, first_try=1, reattach=False, try_number=1).action == "attach"
    assert decide_reattach(running, IDENTITY, first_try=1, try_number=2).action == "attach"  # an earlier try's


def test_tries_before_a_clear_are_ignored() -> None:
    before_clear = [_summary("old-ok", states.SUCCESS, 2), _summary("old-run", states.FULLY_EXECUTING, 1)]
    assert decide_reattach(before_clear, IDENTITY, first_try=3).action == "submit"
    assert decide_reattach([*before_clear, _summary("new", states.SUCCESS, 3)], IDENTITY, 3).summary.uuid == "new"
    assert decide_reattach(before_clear, IDENTITY, first_try=None).action == "attach"


def test_tasks_of_other_task_instances_are_ignored() -> None:
    other = TaskInstanceIdentity("dag", "task", "manual__2026-01-01T00:00:00+00:00", 4)
    assert decide_reattach([_summary("z", states.SUCCESS, identity=other)], IDENTITY, 1).action == "submit"


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (qe.UnauthorizedException("bad token", status_code=401), AirflowFailException),
        (qe.MissingProfileException("no such profile"), AirflowFailException),
        (qe.MissingBucketException("no bucket"), AirflowFailException),
        (qe.MissingDiskException("no bucket"), AirflowFailException),
        (qe.MissingPoolException("no pool"), AirflowFailException),
        (qe.MissingJobException("no job"), AirflowFailException),
        (qe.InvalidRequestException("bad body", status_code=400), AirflowFailException),
        (qe.CertificateVerificationException("self-signed certificate"), AirflowFailException),
        (ValueError("instance_count must be at least 1"), AirflowFailException),
        (qe.MaxTaskException("quota"), AirflowException),
        (qe.NotEnoughCreditsException("broke", status_code=402), AirflowException),
        (qe.TransientFailureException("503 forever", attempts=6), AirflowException),
        (qe.MalformedResponseException("html"), AirflowException),
    ],
)
def test_error_mapping(exc: Exception, kind: type[Exception]) -> None:
    mapped = to_airflow_exception(exc, "Submitting")
    assert type(mapped) is kind
    assert str(exc).split(" (HTTP")[0] in str(mapped)
    assert str(mapped).startswith("Submitting failed")
    with pytest.raises(kind) as raised, airflow_errors("Submitting"):
        raise exc
    assert raised.value.__cause__ is exc


def test_airflow_errors_leaves_other_exceptions_alone() -> None:
    with pytest.raises(KeyError), airflow_errors("x"):
        raise KeyError("k")


def test_transient_classification() -> None:
    assert is_transient(qe.TransientFailureException("x"))
    assert is_transient(qe.QarnotApiError("x", status_code=502))
    assert is_transient(ConnectionError("reset"))
    assert not is_transient(qe.UnauthorizedException("x", status_code=401))
    assert not is_transient(qe.MissingTaskException("x", status_code=404))
    assert not is_transient(qe.QarnotApiError("x", status_code=409))
    assert not is_transient(qe.InvalidRequestException("x", status_code=400))


def test_task_outcome_exceptions_name_instances_and_errors() -> None:
    failed = TaskSummary(
        uuid="u1",
        name="render",
        state=states.FAILURE,
        errors=(TaskError("E1", "one instance failed"),),
        instances=(
            InstanceInfo(0, "Success"),
            InstanceInfo(1, "Failure", error=TaskError(None, "exit code 3")),
        ),
    )
    exc = task_outcome_exception(failed)
    assert type(exc) is AirflowException
    assert "u1" in str(exc)
    assert "instance 1" in str(exc)
    assert "exit code 3" in str(exc)
    assert "one instance failed" in str(exc)
    assert type(task_outcome_exception(failed, retryable=False)) is AirflowFailException
    cancelled = task_outcome_exception(TaskSummary(uuid="u2", state=states.CANCELLED))
    assert "cancelled" in str(cancelled)


def test_a_dag_run_created_again_with_the_same_id_does_not_reuse_the_old_runs_tasks() -> None:
    """A deleted and re-created DAG run (same run id, tries from 1 again) must compute again, and the old
    run's tasks that still run are aborted."""
    old = TaskInstanceIdentity("dag", "task", "scheduled__2026-01-01", -1, run_after="2026-01-01T00:00:00+00:00")
    new = TaskInstanceIdentity("dag", "task", "scheduled__2026-01-01", -1, run_after="2026-02-01T00:00:00+00:00")
    done = _summary("old-done", states.SUCCESS, 1, identity=old)
    running = _summary("old-running", states.FULLY_EXECUTING, 1, 5, identity=old)
    for reattach in (True, False):
        decision = decide_reattach([done, running], new, first_try=1, reattach=reattach, try_number=1)
        assert (decision.action, decision.summary) == ("submit", None)
        assert [s.uuid for s in decision.stale] == ["old-running"]
    mine = _summary("mine", states.SUCCESS, 1, 9, identity=new)
    assert decide_reattach([done, mine], new, first_try=1, try_number=1).summary.uuid == "mine"


def test_a_deployment_id_is_part_of_the_tag() -> None:
    prod = TaskInstanceIdentity("dag", "task", "run", -1, deployment="prod")
    staging = TaskInstanceIdentity("dag", "task", "run", -1, deployment="staging")
    assert len({prod.tag, staging.tag, TaskInstanceIdentity("dag", "task", "run", -1).tag}) == 3
    assert decide_reattach([_summary("s", states.FULLY_EXECUTING, identity=staging)], prod, 1).action == "submit"
    assert decide_reattach([_summary("s", states.FULLY_EXECUTING, identity=staging)], prod, 1).stale == ()
