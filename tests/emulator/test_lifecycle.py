"""Run mode: tasks really execute on this host, with resources, results, output, retries, abort and delete."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from airflow_provider_qarnot.emulator import Emulator

from .conftest import Api, pid_alive


def test_four_instances_succeed_with_results_and_output(api: Api, qarnot_emulator: Emulator) -> None:
    s3 = qarnot_emulator.s3_client()
    s3.create_bucket(Bucket="input-bucket")
    s3.put_object(Bucket="input-bucket", Key="run1/data.txt", Body=b"payload\n")
    s3.put_object(Bucket="input-bucket", Key="other/skip.txt", Body=b"no\n")
    uuid = api.submit(
        "echo hello from $INSTANCE_ID; cat data.txt; echo $FRAME_ID-$QARNOT_TASK_UUID > out-$INSTANCE_ID.txt",
        count=4,
        advancedResourceBuckets=[
            {
                "bucketName": "input-bucket",
                "filtering": {"prefixFiltering": {"prefix": "run1/"}},
                "resourcesTransformation": {"stripPrefix": {"prefix": "run1/"}},
            }
        ],
        resultBucket="result-bucket",
        tags=["lifecycle"],
    )
    seen: list[str] = []
    deadline = time.monotonic() + 20
    while True:
        task = api.task(uuid)
        if not seen or seen[-1] != task["state"]:
            seen.append(task["state"])
        if task["state"] in ("Success", "Failure", "Cancelled") or time.monotonic() > deadline:
            break
        time.sleep(0.005)
    assert task["state"] == "Success", task["errors"]
    assert task["previousState"] == "UploadingResults"
    assert seen[-1] == "Success"
    assert set(seen) <= {
        "Submitted", "PartiallyDispatched", "FullyDispatched", "PartiallyExecuting", "FullyExecuting",
        "UploadingResults", "Success",
    }  # fmt: skip
    assert task["resultsCount"] == 4
    assert task["progress"] == 100.0
    assert task["endDate"] != "0001-01-01T00:00:00Z"
    assert task["status"]["succeededRange"] == "0-3"
    assert task["status"]["executedRange"] == "0-3"
    assert task["status"]["failedRange"] == ""
    assert isinstance(task["status"]["executionTimeByCpuModel"], list)
    assert isinstance(task["status"]["executionTimeGhzByCpuModel"], list)
    instances = {i["instanceId"]: i for i in task["completedInstances"]}
    assert sorted(instances) == [0, 1, 2, 3]
    storage_host = qarnot_emulator.storage_url.split("://", 1)[1]
    assert instances[2]["results"] == [f"s3://{storage_host}/result-bucket/out-2.txt"]
    assert instances[2]["executionAttemptCount"] == 1 and instances[2]["state"] == "Success"
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="result-bucket")["Contents"])
    assert keys == ["out-0.txt", "out-1.txt", "out-2.txt", "out-3.txt"]  # resources are not results
    body = s3.get_object(Bucket="result-bucket", Key="out-3.txt")["Body"].read().decode()
    assert body == f"3-{uuid}\n"
    stdout = api.get(f"/tasks/{uuid}/stdout")
    assert stdout.headers["content-type"].startswith("text/plain")
    for instance in range(4):
        assert f"hello from {instance}\n" in stdout.text
    assert stdout.text.count("payload\n") == 4
    assert api.get(f"/tasks/{uuid}/stdout/2").text == "hello from 2\npayload\n"


def test_advanced_ranges_and_results_filters(api: Api, qarnot_emulator: Emulator) -> None:
    uuid = api.submit(
        "echo $INSTANCE_ID > keep-$INSTANCE_ID.csv; echo x > drop-$INSTANCE_ID.log; mkdir -p sub; echo s > sub/a.csv",
        count=None,
        advancedRanges="1,3-4",
        resultBucket="filtered-results",
        resultsBucketPrefix="run/",
        resultsWhitelist=r"\.csv$",
        resultsBlacklist=r"^sub/",
    )
    task = api.wait(uuid)
    assert task["state"] == "Success"
    assert task["advancedRanges"] == "1,3-4"
    assert task["instanceCount"] == 3
    assert sorted(i["instanceId"] for i in task["completedInstances"]) == [1, 3, 4]
    s3 = qarnot_emulator.s3_client()
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="filtered-results")["Contents"])
    assert keys == ["run/keep-1.csv", "run/keep-3.csv", "run/keep-4.csv"]
    assert api.get(f"/tasks/{uuid}/stdout/0").status_code == 404
    assert api.get(f"/tasks/{uuid}/stdout/abc").status_code == 404


def test_failure_names_instances_and_exit_codes(api: Api) -> None:
    uuid = api.submit('echo "bad $INSTANCE_ID" >&2; exit $((INSTANCE_ID * 2))', count=3)
    task = api.wait(uuid)
    assert task["state"] == "Failure"
    messages = [e["message"] for e in task["errors"]]
    assert any("Instance 1" in m and "exit code 2" in m for m in messages), messages
    assert any("Instance 2" in m and "exit code 4" in m for m in messages), messages
    assert all({"code", "message", "debug"} <= set(e) for e in task["errors"])
    assert task["status"]["failedRange"] == "1-2"
    assert task["status"]["succeededRange"] == "0"
    failed = {i["instanceId"]: i for i in task["completedInstances"]}[1]
    assert failed["state"] == "Failure" and failed["error"]["message"]
    assert "bad 1\n" in api.get(f"/tasks/{uuid}/stderr").text
    assert api.get(f"/tasks/{uuid}/stderr/2").text == "bad 2\n"


def test_retries_per_instance_are_honoured(api: Api, tmp_path: Path) -> None:
    # each instance fails on its first two attempts and succeeds on the third
    counter = "$STATE/$QARNOT_TASK_UUID-$INSTANCE_ID"
    cmd = f"n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; [ $n -ge 3 ]"
    state = [{"key": "STATE", "value": str(tmp_path)}]
    ok = api.submit(cmd, count=2, constants=state, retrySettings={"maxPerInstanceRetries": 2})
    task = api.wait(ok)
    assert task["state"] == "Success", task["errors"]
    assert [i["executionAttemptCount"] for i in task["completedInstances"]] == [3, 3]
    legacy = api.submit(cmd, count=1, constants=state, maxRetriesPerInstance=1)
    task = api.wait(legacy)
    assert task["state"] == "Failure"
    assert task["completedInstances"][0]["executionAttemptCount"] == 2
    total = api.submit("exit 1", count=3, retrySettings={"maxTotalRetries": 2})
    task = api.wait(total)
    assert sum(i["executionAttemptCount"] for i in task["completedInstances"]) == 5
    none = api.submit("exit 1", count=1, retrySettings={"maxTotalRetries": None, "maxPerInstanceRetries": None})
    assert api.wait(none)["completedInstances"][0]["executionAttemptCount"] == 1


def test_no_command_succeeds_immediately(api: Api) -> None:
    task = api.wait(api.submit(None, count=2))
    assert task["state"] == "Success"
    assert task["resultsCount"] == 0


def test_abort_kills_the_process(api: Api, qarnot_emulator: Emulator) -> None:
    uuid = api.submit("sleep 60 & sleep 60; echo never", count=1)
    api.wait(uuid, ("FullyExecuting",))
    deadline = time.monotonic() + 5
    while not qarnot_emulator.running_pids() and time.monotonic() < deadline:
        time.sleep(0.01)
    pids = qarnot_emulator.running_pids()
    assert pids
    started = time.monotonic()
    response = api.post(f"/tasks/{uuid}/abort")
    assert response.status_code == 200
    task = api.wait(uuid, timeout=5)
    assert time.monotonic() - started < 3
    assert task["state"] == "Cancelled"
    assert task["previousState"] == "PendingCancel"
    assert "never" not in api.get(f"/tasks/{uuid}/stdout").text
    time.sleep(0.1)
    assert not any(pid_alive(pid) for pid in pids)
    again = api.post(f"/tasks/{uuid}/abort")
    assert again.status_code == 403
    assert "non running task" in again.json()["message"].lower()


def test_abort_of_queued_instances(qarnot_emulator_factory: Any) -> None:
    emu = qarnot_emulator_factory(cores=1)
    api = Api(emu)
    first = api.submit("sleep 30", count=1)
    second = api.submit("echo hi", count=3)
    api.wait(first, ("FullyExecuting",))
    assert api.task(second)["state"] == "Submitted"
    assert api.post(f"/tasks/{second}/abort").status_code == 200
    assert api.wait(second, timeout=5)["state"] == "Cancelled"
    assert api.post(f"/tasks/{first}/abort").status_code == 200
    assert api.wait(first, timeout=5)["state"] == "Cancelled"


def test_delete_running_and_finished_tasks(api: Api, qarnot_emulator: Emulator) -> None:
    running = api.submit("sleep 60", count=1)
    api.wait(running, ("FullyExecuting",))
    assert api.delete(f"/tasks/{running}").status_code == 200
    deadline = time.monotonic() + 5
    while api.get(f"/tasks/{running}").status_code != 404:
        assert time.monotonic() < deadline, "the deleted task is still there"
        time.sleep(0.02)
    assert qarnot_emulator.running_pids() == []
    done = api.wait(api.submit("true"))["uuid"]
    assert api.delete(f"/tasks/{done}").status_code == 200
    assert api.get(f"/tasks/{done}").status_code == 404
    assert api.delete(f"/tasks/{done}").status_code == 404


def test_fresh_stdout_consumes(api: Api) -> None:
    uuid = api.submit("echo one; sleep 0.6; echo two", count=1)
    deadline = time.monotonic() + 10
    first = ""
    while "one" not in first and time.monotonic() < deadline:
        first += api.post(f"/tasks/{uuid}/stdout").text
        time.sleep(0.05)
    assert first == "one\n"
    api.wait(uuid)
    assert api.post(f"/tasks/{uuid}/stdout").text == "two\n"
    assert api.post(f"/tasks/{uuid}/stdout").text == ""
    assert api.get(f"/tasks/{uuid}/stdout").text == "one\ntwo\n"
    assert api.post(f"/tasks/{uuid}/stdout/0").text == "one\ntwo\n"
    assert api.post(f"/tasks/{uuid}/stdout/0").text == ""


def test_update_patch_snapshot_and_derived_tasks(api: Api, qarnot_emulator: Emulator) -> None:
    uuid = api.submit("echo partial > part.txt; sleep 30", count=2, resultBucket="snap-results", tags=["old"])
    api.wait(uuid, ("FullyExecuting",))
    time.sleep(0.2)
    assert api.put(f"/tasks/{uuid}", json={"name": "renamed", "tags": ["new"]}).status_code == 200
    task = api.task(uuid)
    assert task["name"] == "renamed" and task["tags"] == ["new"]
    assert api.patch(f"/tasks/{uuid}").status_code == 200
    snap = api.post(f"/tasks/{uuid}/snapshot", json={"whitelist": None, "blacklist": None, "bucket": None})
    assert snap.status_code == 200
    snap_id = snap.json()["id"]
    assert snap_id.startswith(f"snap_{uuid}_")
    deadline = time.monotonic() + 10
    while (status := api.get(f"/tasks/{uuid}/snapshot/{snap_id}").json())["status"] != "Success":
        assert time.monotonic() < deadline and status["status"] != "Failure"
        time.sleep(0.05)
    assert status["taskUuid"] == uuid and "snapshotConfig" in status
    keys = [o["Key"] for o in qarnot_emulator.s3_client().list_objects_v2(Bucket="snap-results")["Contents"]]
    assert keys == ["part.txt"]
    assert api.get(f"/tasks/{uuid}/snapshot/nope").status_code == 404
    assert api.post(f"/tasks/{uuid}/snapshot/periodic", json={"interval": 0}).status_code == 400
    assert api.post(f"/tasks/{uuid}/snapshot/periodic", json={"interval": 60}).status_code == 200
    assert api.task(uuid)["snapshotInterval"] == 60
    assert api.post(f"/tasks/{uuid}/retry").status_code == 403  # not final yet
    api.post(f"/tasks/{uuid}/abort")
    api.wait(uuid)
    assert api.post(f"/tasks/{uuid}/snapshot").status_code == 403
    resumed = api.post(f"/tasks/{uuid}/resume", json={"name": "resumed"})
    assert resumed.status_code == 200, resumed.text
    new = api.task(resumed.json()["uuid"])
    assert new["name"] == "resumed" and new["instanceCount"] == 2
    assert api.post(f"/tasks/{new['uuid']}/abort").status_code == 200
    assert api.post(f"/tasks/{uuid}/retry").status_code == 400  # nothing failed
    clone = api.post(f"/tasks/{uuid}/clone", json={"constants": [{"key": "DOCKER_CMD", "value": "true"}]})
    assert api.wait(clone.json()["uuid"])["state"] == "Success"


def test_queue_timeout_and_auto_delete(qarnot_emulator_factory: Any) -> None:
    emu = qarnot_emulator_factory(cores=1)
    api = Api(emu)
    blocker = api.submit("sleep 30")
    api.wait(blocker, ("FullyExecuting",))
    starved = api.submit("true", maxTimeQueueSeconds=1)
    task = api.wait(starved, timeout=10)
    assert task["state"] == "Failure"
    assert "maxTimeQueueSeconds" in task["errors"][0]["message"]
    api.post(f"/tasks/{blocker}/abort")
    ephemeral = api.submit("true", autoDeleteOnCompletion=True, completionTimeToLive="00:00:01")
    assert api.wait(ephemeral)["state"] == "Success"
    deadline = time.monotonic() + 10
    while api.get(f"/tasks/{ephemeral}").status_code != 404:
        assert time.monotonic() < deadline, "the task was not deleted after its TTL"
        time.sleep(0.05)
