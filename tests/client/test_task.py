"""QTask against the emulator over real HTTP: the whole life of a task, as a user sees it."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_qarnot.client import (
    MaxTaskException,
    MissingBucketException,
    MissingTaskException,
    QConnection,
    QTask,
    ResourceBucket,
    TaskNotSubmittedException,
    states,
)
from tests.client.conftest import connect


def test_four_instance_task_runs_and_downloads_exactly_its_results(conn: QConnection, tmp_path: Path) -> None:
    storage = conn.storage
    storage.create_bucket("results")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "not-mine.txt").write_text("another task's output")
    storage.upload_directory("results", foreign, prefix="other-task")
    task = QTask(
        conn,
        "four",
        "docker-batch",
        4,
        constants={"DOCKER_CMD": 'mkdir -p out && echo "instance $INSTANCE_ID" > out/part-$INSTANCE_ID.txt'},
        result_bucket="results",
    )
    assert task.state == states.UNSUBMITTED
    task.submit()
    assert task.uuid is not None
    assert task.wait(timeout=60, poll_interval=0.2) is True
    assert task.state == states.SUCCESS
    assert len(task.instances) == 4
    assert all(i.succeeded for i in task.instances)
    files = task.download_results(tmp_path / "dl")
    names = sorted(p.relative_to(tmp_path / "dl").as_posix() for p in files)
    assert names == [f"out/part-{i}.txt" for i in range(4)]
    assert (tmp_path / "dl" / "out" / "part-2.txt").read_text() == "instance 2\n"
    assert not (tmp_path / "dl" / "other-task").exists()


def test_download_skips_unchanged_files(conn: QConnection, tmp_path: Path) -> None:
    task = QTask(conn, "dl", "docker-batch", 1, constants={"DOCKER_CMD": "echo hi > r.txt"}, result_bucket="res-skip")
    task.submit()
    assert task.wait(timeout=60, poll_interval=0.2)
    [path] = task.download_results(tmp_path)
    before = path.stat().st_mtime_ns
    time.sleep(0.05)
    [again] = task.download_results(tmp_path)
    assert again == path
    assert path.stat().st_mtime_ns == before


def test_submit_twice_creates_one_task(conn: QConnection, qarnot_emulator: Any) -> None:
    task = QTask(conn, "once", "docker-batch", 1, constants={"DOCKER_CMD": "true"})
    first = task.submit()
    uuid = task.uuid
    second = task.submit()
    assert task.uuid == uuid
    assert first in states.KNOWN_STATES and second in states.KNOWN_STATES
    assert [t["uuid"] for t in qarnot_emulator.tasks()] == [uuid]


def test_failed_instances_are_reported(conn: QConnection) -> None:
    task = QTask(
        conn,
        "fails",
        "docker-batch",
        3,
        constants={"DOCKER_CMD": 'if [ "$INSTANCE_ID" = 1 ]; then echo boom >&2; exit 3; fi'},
    )
    task.submit()
    assert task.wait(timeout=60, poll_interval=0.2)
    assert task.state == states.FAILURE
    failed = [i for i in task.instances if not i.succeeded]
    assert [i.instance_id for i in failed] == [1]
    assert task.errors, "a failed task carries errors"


def test_abort_stops_a_running_task(conn: QConnection) -> None:
    task = QTask(conn, "long", "docker-batch", 1, constants={"DOCKER_CMD": "sleep 60"})
    task.submit()
    deadline = time.monotonic() + 20
    while not states.is_active(task.update()) and time.monotonic() < deadline:
        time.sleep(0.1)
    started = time.monotonic()
    task.abort()
    assert task.wait(timeout=20, poll_interval=0.2)
    assert task.state == states.CANCELLED
    assert time.monotonic() - started < 15
    task.abort()  # aborting a final task is a no-op
    assert task.update() == states.CANCELLED


def test_wait_times_out_without_a_final_state(conn: QConnection) -> None:
    task = QTask(conn, "slow", "docker-batch", 1, constants={"DOCKER_CMD": "sleep 30"})
    task.submit()
    started = time.monotonic()
    assert task.wait(timeout=0.6, poll_interval=0.2) is False
    assert time.monotonic() - started < 5
    assert not states.is_final(task.state)
    task.abort()


def test_wait_rejects_bad_arguments(conn: QConnection) -> None:
    task = QTask(conn, "x", "docker-batch", 1)
    with pytest.raises(TaskNotSubmittedException):
        task.wait()
    task.submit()
    with pytest.raises(ValueError, match="poll_interval"):
        task.wait(poll_interval=0)


def test_delete_with_purge_removes_task_and_buckets(conn: QConnection, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("data")
    conn.storage.upload_directory("purge-in", tmp_path)
    task = QTask(
        conn,
        "purge",
        "docker-batch",
        1,
        constants={"DOCKER_CMD": "cp in.txt out.txt"},
        resources=["purge-in"],
        result_bucket="purge-out",
    )
    task.submit()
    assert task.wait(timeout=60, poll_interval=0.2)
    assert task.state == states.SUCCESS
    uuid = task.uuid
    assert uuid is not None
    task.delete(purge_resources=True, purge_results=True)
    with pytest.raises(MissingTaskException):
        QTask.retrieve(conn, uuid)
    assert not conn.storage.bucket_exists("purge-in")
    assert not conn.storage.bucket_exists("purge-out")


def test_retrieve_reads_an_existing_task(conn: QConnection) -> None:
    task = QTask(conn, "again", "docker-batch", advanced_ranges="2,5-6", constants={"DOCKER_CMD": "true"}, tags=["t1"])
    task.submit()
    assert task.uuid is not None
    same = QTask.retrieve(conn, task.uuid)
    assert same.uuid == task.uuid
    assert same.spec.name == "again"
    assert same.spec.advanced_ranges == "2,5-6"
    assert "t1" in same.spec.tags
    assert same.wait(timeout=60, poll_interval=0.2)
    assert sorted(i.instance_id for i in same.instances) == [2, 5, 6]


def test_retrieve_unknown_task(conn: QConnection) -> None:
    with pytest.raises(MissingTaskException):
        QTask.retrieve(conn, "00000000-0000-0000-0000-000000000000")


def test_stdout_whole_and_fresh(conn: QConnection) -> None:
    task = QTask(
        conn, "out", "docker-batch", 2, constants={"DOCKER_CMD": 'echo "hello from $INSTANCE_ID"; echo err >&2'}
    )
    task.submit()
    assert task.wait(timeout=60, poll_interval=0.2)
    whole = task.stdout()
    assert "hello from 0" in whole and "hello from 1" in whole
    assert "hello from 1" in task.stdout(instance_id=1)
    assert "hello from 0" not in task.stdout(instance_id=1)
    assert "err" in task.stderr()
    fresh = task.fresh_stdout()
    assert "hello from 0" in fresh
    assert task.fresh_stdout() == ""


def test_resource_prefix_is_filtered_and_stripped(conn: QConnection, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "input.txt").write_text("wanted")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "other.txt").write_text("unwanted")
    conn.storage.upload_directory("inputs", tmp_path, prefix="run-1")
    task = QTask(
        conn,
        "prefix",
        "docker-batch",
        1,
        constants={"DOCKER_CMD": "ls -R . > listing.txt; cat input.txt"},
        resources=[ResourceBucket("inputs", prefix="run-1/a/", strip_prefix="run-1/a/")],
        result_bucket="prefix-out",
    )
    task.submit()
    assert task.wait(timeout=60, poll_interval=0.2)
    assert task.state == states.SUCCESS, task.errors
    assert "wanted" in task.stdout()
    assert "other.txt" not in task.stdout()


def test_missing_resource_bucket(conn: QConnection, qarnot_emulator: Any) -> None:
    task = QTask(conn, "nobucket", "docker-batch", 1, resources=["does-not-exist"])
    with pytest.raises(MissingBucketException, match="does-not-exist"):
        task.submit()
    assert qarnot_emulator.tasks() == []


def test_task_quota(qarnot_emulator_factory: Any) -> None:
    emu = qarnot_emulator_factory(max_tasks=1, mode="simulate", sim_duration=30)
    with connect(emu) as conn:
        QTask(conn, "first", "docker-batch", 1).submit()
        with pytest.raises(MaxTaskException, match="(?i)maximum number of tasks"):
            QTask(conn, "second", "docker-batch", 1).submit()
    assert len(emu.tasks()) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "", "profile": "docker-batch", "instance_count": 1}, "name"),
        ({"name": "n", "profile": "docker-batch", "instance_count": 0}, "instance_count"),
        ({"name": "n", "profile": "docker-batch", "instance_count": -2}, "instance_count"),
        ({"name": "n", "profile": "docker-batch", "instance_count": 10**9}, "instance_count"),
        ({"name": "n", "profile": "docker-batch"}, "instance_count or advanced_ranges"),
        ({"name": "n", "profile": "docker-batch", "instance_count": 2, "advanced_ranges": "1-2"}, "not both"),
        ({"name": "n", "profile": "docker-batch", "advanced_ranges": "5-1"}, "ends before"),
        ({"name": "n", "profile": "docker-batch", "advanced_ranges": "a-b"}, "advanced_ranges"),
        ({"name": "n", "profile": "docker-batch", "instance_count": 1, "pool_uuid": "p"}, "profile or pool_uuid"),
        ({"name": "n", "instance_count": 1}, "profile is required"),
        ({"name": "n", "profile": "docker-batch", "instance_count": 1, "constants": {"N": 3}}, "constants"),
        ({"name": "n", "profile": "docker-batch", "instance_count": 1, "tags": ["a,b"]}, "comma"),
        ({"name": "n", "profile": "docker-batch", "instance_count": 1, "results_whitelist": "("}, "results_whitelist"),
        ({"name": "n", "profile": "docker-batch", "instance_count": 1, "scheduling_type": "Cheap"}, "scheduling_type"),
    ],
)
def test_invalid_tasks_fail_before_any_call(
    kwargs: dict[str, Any], message: str, conn: QConnection, qarnot_emulator: Any
) -> None:
    before = qarnot_emulator.stats()["requests"]
    with pytest.raises(ValueError, match=message):
        QTask(conn, **kwargs)
    assert qarnot_emulator.stats()["requests"] == before


def test_states_of_many_tasks_in_few_requests(qarnot_emulator_factory: Any) -> None:
    emu = qarnot_emulator_factory(mode="simulate", sim_duration=60)
    with connect(emu) as conn:
        uuids = []
        for n in range(230):
            task = QTask(conn, f"t{n}", "docker-batch", 1, tags=["batch-x"])
            task.submit()
            assert task.uuid is not None
            uuids.append(task.uuid)
        before = dict(emu.stats()["requests"])
        found = conn.task_states([*uuids, "00000000-0000-0000-0000-00000000dead"])
        after = emu.stats()["requests"]
        paginate_calls = sum(after.get(k, 0) - before.get(k, 0) for k in after if "paginate" in k)
        assert set(found) == set(uuids)
        assert all(s.state is not None and not states.is_final(s.state) for s in found.values())
        assert all(s.raw == {} for s in found.values())  # no task document kept per summary (memory, GC)
        assert paginate_calls == 3
        by_tag = conn.task_summaries(tags=["batch-x"])
        assert {s.uuid for s in by_tag} == set(uuids)


def test_results_are_found_when_the_api_ignored_the_results_prefix(
    conn: QConnection, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An API that does not honour resultsBucketPrefix puts results elsewhere: download what the instances
    reported instead of silently returning nothing."""
    task = QTask(
        conn,
        "prefix",
        "docker-batch",
        2,
        constants={"DOCKER_CMD": "echo $INSTANCE_ID > r-$INSTANCE_ID.txt"},
        result_bucket="res-prefix",
    )
    task.submit()
    assert task.wait(timeout=60, poll_interval=0.2)
    assert task.state == states.SUCCESS
    task.spec = replace(task.spec, results_bucket_prefix="where-the-api-did-not-put-them/")
    files = task.download_results(tmp_path)
    assert sorted(p.name for p in files) == ["r-0.txt", "r-1.txt"]
    assert "nothing under results prefix" in caplog.text


def test_a_task_of_a_job_in_a_pool_takes_no_profile(conn: QConnection) -> None:
    """As in the official SDK (`create_task(name, None, 1, job=job)`): the job's pool gives the profile."""
    pool = conn.request(
        "POST", "/pools", json={"name": "slots", "profile": "docker-batch", "instanceCount": 1}, idempotent=False
    )["uuid"]
    job = conn.request("POST", "/jobs", json={"name": "in-pool", "poolUuid": pool}, idempotent=False)["uuid"]
    task = QTask(conn, "job-task", None, 1, job_uuid=job, constants={"DOCKER_CMD": "echo from the pool"})
    task.submit()
    assert task.wait(timeout=60, poll_interval=0.2)
    assert task.state == states.SUCCESS
    assert "from the pool" in task.stdout()
    with pytest.raises(ValueError, match="profile is required"):
        QTask(conn, "no-profile", None, 1)
