"""--state-dir: a restarted emulator has its tasks, jobs, pools and buckets back; running tasks run again."""

from __future__ import annotations

import time
from pathlib import Path

from airflow_provider_qarnot.emulator import Emulator

from .conftest import Api


def test_restart_restores_everything_and_finishes_running_tasks(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Emulator(token="tok", state_dir=state) as first:
        api = Api(first)
        s3 = first.s3_client()
        s3.create_bucket(Bucket="kept-bucket")
        s3.put_object(Bucket="kept-bucket", Key="dir/file.txt", Body=b"kept")
        s3.put_object(Bucket="kept-bucket", Key="dir/", Body=b"")
        done = api.submit("echo finished", tags=["persist"])
        api.wait(done)
        job = api.post("/jobs", json={"name": "kept-job", "shortname": "kept"}).json()["uuid"]
        pool = api.post("/pools", json={"name": "kept-pool", "profile": "docker-batch", "instanceCount": 1}).json()
        running = api.submit(
            "sleep 1; echo $INSTANCE_ID > out-$INSTANCE_ID.txt; echo ran $INSTANCE_ID",
            count=2,
            resultBucket="restart-results",
            shortname="survivor",
        )
        api.wait(running, ("FullyExecuting",))
        time.sleep(0.2)
    assert (state / "state.db").exists()
    assert (state / "s3" / "manifest.json").exists()

    with Emulator(token="tok", state_dir=state) as second:
        api = Api(second)
        finished = api.task(done)
        assert finished["state"] == "Success" and finished["tags"] == ["persist"]
        assert api.get(f"/tasks/{done}/stdout").text == "finished\n"
        assert api.get("/jobs/kept").json()["uuid"] == job
        assert api.get(f"/pools/{pool['uuid']}").status_code == 200
        assert api.get("/tasks/survivor").json()["uuid"] == running
        resumed = api.wait(running, timeout=15)
        assert resumed["state"] == "Success", resumed["errors"]
        assert resumed["resultsCount"] == 2
        assert all(i["executionAttemptCount"] == 2 for i in resumed["completedInstances"])
        s3 = second.s3_client()
        assert s3.get_object(Bucket="kept-bucket", Key="dir/file.txt")["Body"].read() == b"kept"
        keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="restart-results")["Contents"])
        assert keys == ["out-0.txt", "out-1.txt"]
        later = api.submit("true")
        assert api.wait(later)["state"] == "Success"
        assert api.delete(f"/tasks/{done}").status_code == 200

    with Emulator(token="tok", state_dir=state, mode="simulate") as third:
        api = Api(third)
        uuids = {t["uuid"] for t in third.tasks()}
        assert done not in uuids and {running, later} <= uuids


def test_restart_in_simulate_mode(tmp_path: Path) -> None:
    with Emulator(token="tok", state_dir=tmp_path, mode="simulate", sim_duration=30) as first:
        uuid = Api(first).submit()
    with Emulator(token="tok", state_dir=tmp_path, mode="simulate", sim_duration=0.2) as second:
        assert Api(second).wait(uuid)["state"] == "Success"
