"""Contract: the official ``qarnot`` Python SDK (2.23) works against the emulator unchanged.

Every call must succeed, or raise exactly the exception it raises against the real API.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import qarnot
from qarnot.exceptions import (
    MaxTaskException,
    MissingBucketException,
    MissingProfileException,
    MissingTaskException,
    MissingTaskInstanceException,
    NotEnoughCreditsException,
    QarnotGenericException,
    UnauthorizedException,
)

from airflow_provider_qarnot.emulator import Emulator, FaultRule

FINAL = ("Success", "Failure", "Cancelled")


def connect(emu: Emulator, token: str | None = None) -> qarnot.connection.Connection:
    """The SDK's own connection; it discovers the storage through GET /settings and GET /info."""
    return qarnot.connection.Connection(
        client_token=token or emu.token, cluster_url=emu.api_url, retry_count=2, retry_wait=0.01
    )


def wait(task: Any, timeout: float = 30.0) -> None:
    """``Task.wait`` polls every 10 s by default, so poll faster with its own timeout argument. It also
    returns True on PendingCancel (as against the real API): keep going until the state is final."""
    deadline = time.monotonic() + timeout
    while not task.wait(timeout=0.1) or task.state not in FINAL:
        assert time.monotonic() < deadline, f"task still {task.state}"
        time.sleep(0.02)


@pytest.fixture
def conn(qarnot_emulator: Emulator) -> Iterator[qarnot.connection.Connection]:
    connection = connect(qarnot_emulator)
    yield connection
    connection._http.close()


def test_connection_discovers_storage(conn: qarnot.connection.Connection, qarnot_emulator: Emulator) -> None:
    assert conn.storage == qarnot_emulator.storage_url
    info = conn.user_info
    assert info.email == "emulator@qarnot.local"
    assert info.max_task is not None and info.task_count == 0
    assert info.computing_quotas is not None and info.computing_quotas.user.flex.max_cores == 2
    assert "docker-batch" in conn.profiles_names()
    assert conn.retrieve_profile("docker-batch").name == "docker-batch"
    assert conn.profile_details("no-such-profile") is None
    with pytest.raises(MissingProfileException):
        conn.retrieve_profile("no-such-profile")
    assert len(list(conn.all_hardware_constraints())) > 0


def test_three_instance_task_with_resources_and_results(conn: qarnot.connection.Connection, tmp_path: Path) -> None:
    source = tmp_path / "in"
    (source / "sub").mkdir(parents=True)
    (source / "input.txt").write_text("input data\n")
    (source / "sub" / "nested.txt").write_text("nested\n")
    resources = conn.create_bucket("sdk-resources")
    resources.add_file(str(source / "input.txt"), "input.txt")
    resources.add_directory(str(source / "sub"), "sub/")
    assert sorted(f.key for f in resources.list_files()) == ["input.txt", "sub/nested.txt"]
    results = conn.create_bucket("sdk-results")

    task = conn.create_task("sdk-task", "docker-batch", 3)
    task.constants["DOCKER_REPO"] = "library/ubuntu"
    task.constants["DOCKER_CMD"] = "cat input.txt sub/nested.txt; echo result $INSTANCE_ID > res-$INSTANCE_ID.txt"
    task.resources = [resources]
    task.results = results
    task.tags = ["sdk-contract", "batch-1"]
    task.submit()
    assert task.uuid is not None
    wait(task)
    assert task.state == "Success"
    assert task.errors == []
    assert task.status.succeeded_range == "0-2"
    assert [i.instance_id for i in task.completed_instances] == [0, 1, 2]
    assert task.completed_instances[0].results[0].endswith("/sdk-results/res-0.txt")
    assert task.stdout().count("input data\n") == 3
    assert "nested" in task.stdout(instanceId=2)
    fresh = task.fresh_stdout()
    assert fresh.count("input data") == 3 and task.fresh_stdout() == ""
    with pytest.raises(MissingTaskInstanceException):
        task.stdout(instanceId=9)
    out = tmp_path / "out"
    task.download_results(str(out))
    assert sorted(p.name for p in out.iterdir()) == ["res-0.txt", "res-1.txt", "res-2.txt"]
    assert (out / "res-1.txt").read_text() == "result 1\n"

    again = conn.retrieve_task(task.uuid)
    assert again.name == "sdk-task" and again.state == "Success" and again.instancecount == 3
    assert again.tags == ["sdk-contract", "batch-1"]
    assert [r.uuid for r in again.resources] == ["sdk-resources", "sdk-resources"]  # as the real API lists them

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tagged = conn.tasks(tags=["sdk-contract"])
    assert [t.uuid for t in tagged] == [task.uuid]
    assert [t.uuid for t in conn.all_tasks(tags_intersect=["sdk-contract", "batch-1"])] == [task.uuid]
    assert [t.uuid for t in conn.all_tasks(summary=False)] == [task.uuid]

    task.delete(purge_resources=True, purge_results=True)
    with pytest.raises(MissingTaskException):
        conn.retrieve_task(again.uuid)
    # moto's storage is shared by every emulator in this process: look only at this test's buckets.
    assert {b.uuid for b in conn.buckets()} & {"sdk-resources", "sdk-results"} == set()


def test_advanced_ranges_and_failure(conn: qarnot.connection.Connection) -> None:
    task = conn.create_task("ranges", "docker-batch", "1,3-4")
    task.constants["DOCKER_CMD"] = "exit $((INSTANCE_ID % 2))"
    task.submit()
    wait(task)
    assert task.state == "Failure"
    assert task.advanced_range == "1,3-4"
    assert sorted(i.instance_id for i in task.completed_instances) == [1, 3, 4]
    messages = [e.message for e in task.errors]
    assert any("Instance 1" in m for m in messages) and any("Instance 3" in m for m in messages)
    assert task.status.failed_range == "1,3"


def test_abort_and_errors(conn: qarnot.connection.Connection, qarnot_emulator: Emulator) -> None:
    task = conn.create_task("long", "docker-batch", 1)
    task.constants["DOCKER_CMD"] = "sleep 60"
    task.submit()
    deadline = time.monotonic() + 10
    while task.state != "FullyExecuting":
        assert time.monotonic() < deadline
        task.update(True)
        time.sleep(0.05)
    task.abort()
    wait(task, 10)
    assert task.state == "Cancelled"
    with pytest.raises(UnauthorizedException):  # "invalid operation on non running task"
        task.abort()
    with pytest.raises(MissingTaskException):
        conn.retrieve_task("0b9c6c1e-6a52-4f3e-9b53-3f2f7a1d2c10")
    missing = conn.create_task("missing-bucket", "docker-batch", 1)
    missing.resources = [qarnot.bucket.Bucket(conn, "never-created", create=False)]
    with pytest.raises(MissingBucketException):
        missing.submit()
    bad = conn.create_task("bad", "docker-batch", 0)
    with pytest.raises(QarnotGenericException):  # 400: no instance
        bad.submit()
    qarnot_emulator.set_credits_exhausted(True)
    with pytest.raises(NotEnoughCreditsException):
        conn.create_task("poor", "docker-batch", 1).submit()


def test_bad_token_and_quota(qarnot_emulator_factory: Any) -> None:
    emu = qarnot_emulator_factory(max_tasks=1, mode="simulate", sim_duration=30)
    with pytest.raises(UnauthorizedException):
        connect(emu, token="not-the-token")
    conn = connect(emu)
    conn.create_task("first", "docker-batch", 1).submit()
    with pytest.raises(MaxTaskException):
        conn.create_task("second", "docker-batch", 1).submit()


def test_bulk_submit_jobs_and_pools(conn: qarnot.connection.Connection) -> None:
    tasks = [conn.create_task(f"bulk-{n}", "docker-batch", 1) for n in range(3)]
    for task in tasks:
        task.constants["DOCKER_CMD"] = "true"
    conn.submit_tasks(tasks)
    assert all(t.uuid for t in tasks)
    for task in tasks:
        wait(task)
        assert task.state == "Success"

    job = conn.create_job("sdk-job", useDependencies=True)
    job.submit()
    assert job.state == "Active"
    first = conn.create_task("first", "docker-batch", 1, job=job)
    first.constants["DOCKER_CMD"] = "sleep 0.3"
    first.submit()
    second = conn.create_task("second", "docker-batch", 1, job=job)
    second.constants["DOCKER_CMD"] = "true"
    second.set_task_dependencies_from_uuids([first.uuid])
    second.submit()
    wait(second)
    first.update(True)
    assert first.state == "Success" and second.state == "Success"
    assert conn.retrieve_job(job.uuid).name == "sdk-job"
    assert [j.uuid for j in conn.all_jobs()] == [job.uuid]
    job.terminate()
    job.delete(forceAbort=True)

    pool = conn.create_pool("sdk-pool", "docker-batch", 2)
    pool.submit()
    in_pool = conn.create_task("in-pool", pool, 2)
    in_pool.constants["DOCKER_CMD"] = "echo in pool $INSTANCE_ID"
    in_pool.submit()
    wait(in_pool)
    assert in_pool.state == "Success" and "in pool 1" in in_pool.stdout()
    assert conn.retrieve_pool(pool.uuid).name == "sdk-pool"
    assert [p.uuid for p in conn.all_pools()] == [pool.uuid]
    assert pool.carbon_facts().energy_consumption_Wh == 0.0
    assert pool.credits().amount_in_euros == 0.0
    in_job_pool = conn.create_job("pool-job", pool=pool)
    in_job_pool.submit()
    job_task = conn.create_task("in-job-pool", None, 1, job=in_job_pool)
    job_task.constants["DOCKER_CMD"] = "echo through the job"
    job_task.submit()
    wait(job_task)
    assert job_task.state == "Success" and "through the job" in job_task.stdout()
    pool.close()
    pool.delete()


def test_account_credits(conn: qarnot.connection.Connection, qarnot_emulator: Emulator) -> None:
    assert conn.credits().amount_in_euros > 0
    qarnot_emulator.set_credits_exhausted(True)
    assert conn.credits().amount_in_euros == 0


def test_snapshots_commit_and_context_manager(conn: qarnot.connection.Connection) -> None:
    results = conn.create_bucket("snapshot-results")
    task = conn.create_task("snap", "docker-batch", 1)
    task.constants["DOCKER_CMD"] = "echo partial > partial.txt; sleep 30"
    task.results = results
    task.submit()
    deadline = time.monotonic() + 10
    while task.state != "FullyExecuting":
        assert time.monotonic() < deadline
        task.update(True)
        time.sleep(0.05)
    time.sleep(0.2)
    snapshot_id = task.instant()
    deadline = time.monotonic() + 10
    while not task.snapshot_status(snapshot_id)._status.is_completed:  # wait_snapshot naps 10 s first
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert task.snapshot_status(snapshot_id)._task_uuid == task.uuid
    assert task.wait_snapshot(snapshot_id, timeout=10)
    task.snapshot(60)
    task.tags = ["committed"]
    task.commit()
    assert conn.retrieve_task(task.uuid).tags == ["committed"]
    task.update_resources()
    assert [f.key for f in results.list_files()] == ["partial.txt"]
    uuid = task.uuid
    with task:  # leaving the block deletes the task (after aborting it)
        pass
    deadline = time.monotonic() + 5
    while any(t.uuid == uuid for t in conn.all_tasks()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with pytest.raises(MissingTaskException):
        conn.retrieve_task(uuid)


def test_snapshot_set_before_submit_of_a_fast_task(
    conn: qarnot.connection.Connection, qarnot_emulator: Emulator
) -> None:
    """``snapshot(n)`` before ``submit()`` posts the periodic snapshot right after the task: a task that ends
    first (here: the request is delayed until it has) must not make ``submit()`` fail."""
    qarnot_emulator.set_faults([FaultRule(pattern="POST /tasks/*/snapshot/periodic", latency_ms=1500)])
    task = conn.create_task("presnap", "docker-batch", 1)
    task.constants["DOCKER_CMD"] = "true"
    task.snapshot(5)
    task.submit()
    assert qarnot_emulator.stats()["requests"]["POST /tasks/{uuid}/snapshot/periodic"] == 1
    data = qarnot_emulator.task(task.uuid)
    assert data["state"] == "Success" and data["snapshotInterval"] == 5
    with pytest.raises(UnauthorizedException):  # an instant snapshot of a finished task is still refused
        task.instant()


def test_env_var_configuration(qarnot_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QARNOT_CLUSTER_URL", qarnot_emulator.api_url)
    monkeypatch.setenv("QARNOT_CLIENT_TOKEN", qarnot_emulator.token)
    conn = qarnot.connection.Connection()
    assert conn.user_info.email == "emulator@qarnot.local"
    assert os.environ["QARNOT_CLUSTER_URL"] == conn.cluster
