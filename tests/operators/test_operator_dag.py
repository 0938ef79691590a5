"""QarnotSubmitTaskOperator in real DAG runs (`dag.test()` on sqlite) against the emulator over loopback."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import DAG

from airflow_provider_qarnot.client import states
from airflow_provider_qarnot.client.spec import TaskSpec
from airflow_provider_qarnot.emulator import FaultRule
from airflow_provider_qarnot.hooks.qarnot import QarnotHook, TaskInstanceIdentity
from airflow_provider_qarnot.operators.qarnot import QarnotSubmitTaskOperator
from tests.conftest import QARNOT_TEST_TOKEN, qarnot_conn_json, requests_made, ti_states, xcom_value

START = datetime(2026, 1, 1, tzinfo=timezone.utc)
POLL = 0.3


def make_dag(dag_id: str) -> DAG:
    return DAG(dag_id, schedule=None, start_date=START, catchup=False)


def qtask(task_id: str, command: str, **kwargs: Any) -> QarnotSubmitTaskOperator:
    kwargs.setdefault("poll_interval", POLL)
    return QarnotSubmitTaskOperator(
        task_id=task_id, profile="docker-batch", instance_count=1, constants={"DOCKER_CMD": command}, **kwargs
    )


def try_numbers(dag_run: Any) -> dict[str, int]:
    from airflow.utils.session import create_session

    with create_session() as session:
        return {t.task_id: t.try_number for t in dag_run.get_task_instances(session=session)}


def test_success_waiting_here_and_deferred(qarnot_conn: Any, run_dag: Any, tmp_path: Path, capfd: Any) -> None:
    QarnotHook().get_conn().storage.create_bucket("results-ok")
    with make_dag("q_success") as dag:
        qtask(
            "here",
            "for i in 1 2 3; do echo streamed-line-$i; sleep 0.2; done; echo result > out.txt",
            deferrable=False,
            result_bucket="results-ok",
            download_results_to=str(tmp_path / "results"),
        )
        qtask("deferred", "sleep 0.5; echo tail-line", deferrable=True, labels={"team": "render"})
    dag_run = run_dag(dag)
    logs = capfd.readouterr().out
    assert ti_states(dag_run) == {"here": "success", "deferred": "success"}
    for task_id in ("here", "deferred"):
        uuid = xcom_value(dag_run, task_id)
        assert xcom_value(dag_run, task_id, "qarnot_task_uuid") == uuid
        assert xcom_value(dag_run, task_id, "qarnot_task_url") == f"https://console.qarnot.com/tasks/{uuid}"
        assert xcom_value(dag_run, task_id, "_link_QarnotTaskLink") == f"https://console.qarnot.com/tasks/{uuid}"
        assert qarnot_conn.task(uuid)["state"] == states.SUCCESS
    assert "streamed-line-3" in logs
    assert "tail-line" in logs
    assert (tmp_path / "results" / "out.txt").read_text().strip() == "result"
    deferred = qarnot_conn.task(xcom_value(dag_run, "deferred"))
    assert deferred["name"] == "q_success.deferred"
    assert deferred["labels"]["team"] == "render"
    assert deferred["labels"]["airflow_task_id"] == "deferred"
    assert TaskInstanceIdentity("q_success", "deferred", dag_run.run_id).tag in deferred["tags"]
    assert deferred["labels"]["airflow_run_after"] == dag_run.run_after.isoformat()  # tells a re-triggered run apart


def test_failure_names_the_failed_instance(qarnot_conn: Any, run_dag: Any, capfd: Any) -> None:
    with make_dag("q_failure") as dag:
        qtask("here", "echo oops; exit 3", deferrable=False)
        qtask("deferred", "exit 4", deferrable=True)
    dag_run = run_dag(dag)
    logs = capfd.readouterr().out
    assert ti_states(dag_run) == {"here": "failed", "deferred": "failed"}
    assert "ended in state Failure" in logs
    assert "instance 0" in logs
    assert "oops" in logs  # the stdout tail of the failed task
    assert {t["state"] for t in qarnot_conn.tasks()} == {states.FAILURE}


def test_cancelled_task_fails_the_airflow_task(qarnot_conn: Any, run_dag: Any, capfd: Any) -> None:
    def abort_when_running() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            running = [t for t in qarnot_conn.tasks() if states.is_active(t["state"])]
            if running:
                time.sleep(0.3)
                QarnotHook().abort_task(running[0]["uuid"])
                return
            time.sleep(0.1)

    with make_dag("q_cancelled") as dag:
        qtask("deferred", "sleep 30", deferrable=True)
    aborter = threading.Thread(target=abort_when_running, daemon=True)
    aborter.start()
    dag_run = run_dag(dag)
    aborter.join(5)
    assert ti_states(dag_run) == {"deferred": "failed"}
    assert "was cancelled" in capfd.readouterr().out
    assert [t["state"] for t in qarnot_conn.tasks()] == [states.CANCELLED]


def test_timeout_aborts_the_qarnot_task(qarnot_conn: Any, run_dag: Any, capfd: Any) -> None:
    with make_dag("q_timeout") as dag:
        qtask("here", "sleep 30", deferrable=False, timeout=1.5)
        qtask("deferred", "sleep 30", deferrable=True, timeout=timedelta(seconds=1.5))
    started = time.monotonic()
    dag_run = run_dag(dag)
    assert time.monotonic() - started < 30
    logs = capfd.readouterr().out
    assert ti_states(dag_run) == {"here": "failed", "deferred": "failed"}
    assert logs.count("Timeout: Qarnot task") >= 2
    for task in qarnot_conn.tasks():
        assert qarnot_conn.wait_for_task(task["uuid"], timeout=20)["state"] == states.CANCELLED


def fail_first_try(context: Any) -> None:
    """A `pre_execute` that kills the first try before it does anything (its worker "died")."""
    if context["ti"].try_number == 1:
        raise RuntimeError("the worker of the first try died")


def test_retry_reattaches_to_the_task_of_a_dead_worker(qarnot_conn: Any, run_dag: Any, capfd: Any) -> None:
    """A first try submitted, then its worker died: the next try attaches instead of submitting again."""
    when = datetime(2026, 2, 3, 4, 5, 6, tzinfo=timezone.utc)
    identity = TaskInstanceIdentity("q_reattach", "q", f"manual__{when.isoformat()}")
    first = QarnotHook().submit_task(
        TaskSpec(
            name="first-try",
            profile="docker-batch",
            instance_count=1,
            constants={"DOCKER_CMD": "sleep 1; echo output-of-the-first-try"},
            tags=[identity.tag],
            labels=identity.labels(1),
        )
    )
    with make_dag("q_reattach") as dag:
        qtask(
            "q", "echo a-second-task", deferrable=True, retries=1, retry_delay=timedelta(0), pre_execute=fail_first_try
        )
    dag_run = run_dag(dag, logical_date=when, run_after=when)
    logs = capfd.readouterr().out
    assert dag_run.run_id == identity.run_id
    assert ti_states(dag_run) == {"q": "success"}
    assert xcom_value(dag_run, "q") == first.uuid
    assert [t["uuid"] for t in qarnot_conn.tasks()] == [first.uuid]
    assert requests_made(qarnot_conn, "POST /tasks") == 1
    assert "Reattached to Qarnot task" in logs
    assert "output-of-the-first-try" in logs


def test_retry_after_a_failed_task_submits_a_new_one(qarnot_conn: Any, run_dag: Any, tmp_path: Path) -> None:
    marker = tmp_path / "second-time"
    command = f"if [ -e {marker} ]; then echo ok; else touch {marker}; exit 3; fi"
    with make_dag("q_retry") as dag:
        qtask("q", command, deferrable=False, retries=1, retry_delay=timedelta(0))
    dag_run = run_dag(dag)
    assert ti_states(dag_run) == {"q": "success"}
    assert try_numbers(dag_run) == {"q": 2}
    by_try = {t["labels"]["airflow_try_number"]: t["state"] for t in qarnot_conn.tasks()}
    assert by_try == {"1": states.FAILURE, "2": states.SUCCESS}


def test_bad_arguments_fail_before_any_call(qarnot_conn: Any, run_dag: Any, capfd: Any) -> None:
    bad: dict[str, dict[str, Any]] = {
        "count": {"instance_count": 0},
        "both": {"instance_count": 2, "advanced_ranges": "0-3"},
        "constants": {"constants": {"DOCKER_CMD": "true", "N": 4}},
        "json": {"constants": "{not json"},
        "poll": {"poll_interval": -1},
        "timeout": {"timeout": 0},
        "scheduling": {"scheduling_type": "Sometimes"},
        "tags": {"tags": ["a,b"]},
        "download": {"wait_for_completion": False, "download_results_to": "/tmp/x"},
    }
    with make_dag("q_bad_input") as dag:
        for task_id, arguments in bad.items():
            arguments.setdefault("instance_count", 1)
            arguments.setdefault("constants", {"DOCKER_CMD": "true"})
            QarnotSubmitTaskOperator(
                task_id=task_id, profile="docker-batch", retries=2, retry_delay=timedelta(0), **arguments
            )
    dag_run = run_dag(dag)
    logs = capfd.readouterr().out
    assert set(ti_states(dag_run).values()) == {"failed"}
    assert set(try_numbers(dag_run).values()) == {1}  # AirflowFailException: no retry
    assert qarnot_conn.stats()["requests_total"] == 0
    for name in ("instance_count", "advanced_ranges", "constants['N']", "poll_interval", "timeout", "scheduling_type"):
        assert name in logs, name
    assert "neither JSON nor a Python literal" in logs
    assert "comma" in logs
    assert "download_results_to needs wait_for_completion=True" in logs


def test_bad_token_fails_once_and_never_shows_the_token(
    monkeypatch: pytest.MonkeyPatch, qarnot_conn: Any, run_dag: Any, capfd: Any, caplog: Any
) -> None:
    wrong = "wrong-token-5f0c1d9e8b7a"
    monkeypatch.setenv("AIRFLOW_CONN_QARNOT_WRONG", qarnot_conn_json(qarnot_conn.api_url, wrong))
    with make_dag("q_bad_token") as dag:
        qtask("q", "true", qarnot_conn_id="qarnot_wrong", retries=3, retry_delay=timedelta(0))
    dag_run = run_dag(dag)
    out = capfd.readouterr()
    assert ti_states(dag_run) == {"q": "failed"}
    assert try_numbers(dag_run) == {"q": 1}
    assert "rejected the token" in out.out
    for text in (out.out, out.err, caplog.text):
        assert wrong not in text
    assert qarnot_conn.tasks() == []  # the rejected submit created nothing


def test_token_never_in_logs_even_when_the_task_prints_it(
    qarnot_conn: Any, run_dag: Any, capfd: Any, caplog: Any
) -> None:
    with make_dag("q_token_leak") as dag:
        qtask("here", 'echo "my token is $QARNOT_CLIENT_TOKEN"', deferrable=False, export_credentials=True)
        qtask("deferred", 'echo "my token is $QARNOT_CLIENT_TOKEN"', deferrable=True, export_credentials=True)
    dag_run = run_dag(dag)
    out = capfd.readouterr()
    assert ti_states(dag_run) == {"here": "success", "deferred": "success"}
    assert out.out.count("my token is ***") >= 2
    for text in (out.out, out.err, caplog.text):
        assert QARNOT_TEST_TOKEN not in text


def test_connection_added_with_the_cli(qarnot_conn: Any, run_dag: Any) -> None:
    from airflow.cli import cli_parser

    args = cli_parser.get_parser().parse_args(
        [
            "connections",
            "add",
            "qarnot_from_cli",
            "--conn-type",
            "qarnot",
            "--conn-host",
            qarnot_conn.api_url,
            "--conn-password",
            qarnot_conn.token,
            "--conn-extra",
            '{"console_url": "https://console.example/q/{uuid}"}',
        ]
    )
    args.func(args)
    with make_dag("q_cli_conn") as dag:
        qtask("q", "true", qarnot_conn_id="qarnot_from_cli", wait_for_completion=False)
    dag_run = run_dag(dag)
    uuid = xcom_value(dag_run, "q")
    assert ti_states(dag_run) == {"q": "success"}
    assert xcom_value(dag_run, "q", "qarnot_task_url") == f"https://console.example/q/{uuid}"
    assert qarnot_conn.wait_for_task(uuid, timeout=20)["state"] == states.SUCCESS


def test_mapped_tasks_get_their_own_identity(qarnot_conn: Any, run_dag: Any) -> None:
    with make_dag("q_mapped") as dag:
        QarnotSubmitTaskOperator.partial(
            task_id="q", profile="docker-batch", instance_count=1, poll_interval=POLL, deferrable=True
        ).expand(constants=[{"DOCKER_CMD": "echo a"}, {"DOCKER_CMD": "echo b"}])
    dag_run = run_dag(dag)
    assert ti_states(dag_run) == {"q[0]": "success", "q[1]": "success"}
    tasks = qarnot_conn.tasks()
    assert sorted(t["labels"]["airflow_map_index"] for t in tasks) == ["0", "1"]
    assert sorted(t["name"] for t in tasks) == ["q_mapped.q[0]", "q_mapped.q[1]"]
    assert len({tag for t in tasks for tag in t["tags"] if tag.startswith("airflow-ti-")}) == 2


def test_trigger_errors_on_the_last_try_abort_the_task(qarnot_conn: Any, run_dag: Any, capfd: Any) -> None:
    """The worker can reach Qarnot but the trigger's polls keep failing: with no retry left, nothing is left
    running. (`dag.test()` drops the deferral's kwargs, so the task is not watched again as it is under a
    real triggerer: see test_operator_execute.py.)"""

    def fail_reads_once_submitted() -> None:  # the submit's own search must pass: only the poller's reads fail
        deadline = time.monotonic() + 30
        while not qarnot_conn.tasks() and time.monotonic() < deadline:
            time.sleep(0.02)
        qarnot_conn.set_faults([FaultRule(pattern="POST /tasks/paginate", rate_503=1.0)])

    with make_dag("q_trigger_error") as dag:
        qtask("q", "sleep 60", deferrable=True, poll_interval=0.2, retries=0)
    started = time.monotonic()
    breaker = threading.Thread(target=fail_reads_once_submitted, daemon=True)
    breaker.start()
    dag_run = run_dag(dag)
    breaker.join(5)
    logs = capfd.readouterr().out
    assert time.monotonic() - started < 45
    assert ti_states(dag_run) == {"q": "failed"}
    assert "Polling Qarnot failed" in logs
    assert "was aborted" in logs
    (task,) = qarnot_conn.tasks()
    assert qarnot_conn.wait_for_task(task["uuid"], timeout=20)["state"] == states.CANCELLED


def test_execution_timeout_during_a_slow_submit_aborts_what_it_created(
    qarnot_conn: Any, run_dag: Any, capfd: Any
) -> None:
    """The POST takes 4 s, execution_timeout fires after 2 s: the task is created all the same, after the
    operator gave up on its answer; the last try must not leave it running."""
    qarnot_conn.set_faults([FaultRule(pattern="POST /tasks", latency_ms=4000)])
    with make_dag("q_timeout_in_submit") as dag:
        qtask("q", "sleep 60", deferrable=False, execution_timeout=timedelta(seconds=2))
    dag_run = run_dag(dag)
    assert ti_states(dag_run) == {"q": "failed"}
    assert "execution_timeout passed during the submit" in capfd.readouterr().out
    (task,) = qarnot_conn.tasks()
    assert qarnot_conn.wait_for_task(task["uuid"], timeout=20)["state"] == states.CANCELLED


def test_execution_timeout_applies_while_deferred(qarnot_conn: Any, run_dag: Any, capfd: Any) -> None:
    with make_dag("q_execution_timeout") as dag:
        qtask("q", "sleep 30", deferrable=True, execution_timeout=timedelta(seconds=2))
    started = time.monotonic()
    dag_run = run_dag(dag)
    assert time.monotonic() - started < 25
    assert ti_states(dag_run) == {"q": "failed"}
    assert "Timeout: Qarnot task" in capfd.readouterr().out
    (task,) = qarnot_conn.tasks()
    assert qarnot_conn.wait_for_task(task["uuid"], timeout=20)["state"] == states.CANCELLED


def test_auto_delete_needs_a_completion_ttl_to_wait(qarnot_conn: Any, run_dag: Any, capfd: Any) -> None:
    """Qarnot deletes an auto_delete task as soon as it ends (TTL 0): waiting for it needs a TTL."""
    with make_dag("q_auto_delete") as dag:
        qtask("no_ttl", "true", auto_delete=True, retries=2, retry_delay=timedelta(0))
        qtask("short_ttl", "true", auto_delete=True, completion_ttl="00:00:10")
        qtask("ttl", "true", auto_delete=True, completion_ttl=timedelta(minutes=2), deferrable=True)
        qtask("no_wait", "true", auto_delete=True, wait_for_completion=False)
    dag_run = run_dag(dag)
    logs = capfd.readouterr().out
    assert ti_states(dag_run) == {"no_ttl": "failed", "short_ttl": "failed", "ttl": "success", "no_wait": "success"}
    assert try_numbers(dag_run)["no_ttl"] == 1  # AirflowFailException: no retry
    assert "auto_delete=True with wait_for_completion=True needs a completion_ttl of at least 60" in logs
    assert requests_made(qarnot_conn, "POST /tasks") == 2


def test_execution_timeout_on_the_worker_aborts_even_without_cancel_on_kill(qarnot_conn: Any, run_dag: Any) -> None:
    """execution_timeout is a limit like `timeout`, not a kill: the Qarnot task must not outlive the try."""
    with make_dag("q_exec_timeout") as dag:
        qtask("slow", "sleep 60", deferrable=False, cancel_on_kill=False, execution_timeout=timedelta(seconds=3))
    dag_run = run_dag(dag)
    assert ti_states(dag_run) == {"slow": "failed"}
    [task] = qarnot_conn.tasks()
    assert qarnot_conn.wait_for_task(task["uuid"], timeout=30)["state"] == states.CANCELLED


def test_execution_timeout_during_the_submit_aborts_the_created_task(qarnot_conn: Any, run_dag: Any) -> None:
    """The limit can fire before the wait starts (here while the new task's first read hangs)."""
    qarnot_conn.set_faults([FaultRule(pattern="GET /tasks/*", latency_ms=4000)], seed=1)
    with make_dag("q_exec_timeout_submit") as dag:
        qtask("slow", "sleep 60", deferrable=True, cancel_on_kill=False, execution_timeout=timedelta(seconds=2))
    dag_run = run_dag(dag)
    qarnot_conn.clear_faults()
    assert ti_states(dag_run) == {"slow": "failed"}
    [task] = qarnot_conn.tasks()
    assert qarnot_conn.wait_for_task(task["uuid"], timeout=30)["state"] == states.CANCELLED
