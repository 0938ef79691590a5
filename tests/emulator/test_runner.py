"""Executors and timers: every process an instance starts dies with it, kills never hit a stale pid,
tasks do not inherit the emulator's credentials, and far-away timers do not stop the timer thread."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_qarnot.emulator import Emulator

from .conftest import Api, pid_alive


def _escaped_pid(pidfile: Path, timeout: float = 10.0) -> int:
    """The pid a task wrote to ``pidfile`` (its process called setsid: it is out of the instance's group)."""
    deadline = time.monotonic() + timeout
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline, "the task did not start its escaping process"
        time.sleep(0.02)
    pid = int(pidfile.read_text())
    assert pid_alive(pid)
    return pid


def _assert_dies(pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        assert time.monotonic() < deadline, f"process {pid} survived its instance"
        time.sleep(0.02)


def _escape(pidfile: Path) -> str:
    """A command starting a process in its own session, which writes its pid and sleeps."""
    return f"setsid sh -c 'echo $$ > {pidfile}; exec sleep 600' >/dev/null 2>&1 &"


@pytest.mark.parametrize("ending", ["abort", "job_wall_time", "delete", "stop"])
def test_processes_that_left_the_group_die_with_the_instance(
    qarnot_emulator_factory: Any, tmp_path: Path, ending: str
) -> None:
    emu = qarnot_emulator_factory(token="tok")
    api = Api(emu)
    pidfile = tmp_path / "escaped.pid"
    fields: dict[str, Any] = {}
    if ending == "job_wall_time":
        job = api.post("/jobs", json={"name": "timed", "maxWallTime": "00:00:02"}).json()["uuid"]
        fields["jobUuid"] = job
    uuid = api.submit(_escape(pidfile) + " sleep 600", **fields)
    pid = _escaped_pid(pidfile)
    if ending == "abort":
        assert api.post(f"/tasks/{uuid}/abort").status_code == 200
        assert api.wait(uuid, timeout=5)["state"] == "Cancelled"
    elif ending == "job_wall_time":
        assert api.wait(uuid, timeout=10)["state"] == "Cancelled"
    elif ending == "delete":
        assert api.delete(f"/tasks/{uuid}").status_code == 200
    else:
        emu.stop()
    _assert_dies(pid)


def test_processes_that_left_the_group_die_when_the_main_process_ends(api: Api, tmp_path: Path) -> None:
    pidfile = tmp_path / "escaped.pid"
    uuid = api.submit(f"{_escape(pidfile)} while [ ! -s {pidfile} ]; do sleep 0.02; done; echo main done")
    task = api.wait(uuid)
    assert task["state"] == "Success", task["errors"]
    assert api.get(f"/tasks/{uuid}/stdout").text == "main done\n"
    _assert_dies(int(pidfile.read_text()))


def test_no_signal_reaches_the_pid_of_an_exited_attempt(
    qarnot_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an attempt's process exited and was reaped, its pid may belong to anyone: abort must not use it."""
    api = Api(qarnot_emulator)
    storage = qarnot_emulator._storage
    assert storage is not None
    uploading, release = threading.Event(), threading.Event()
    real_upload = storage.upload_file

    def slow_upload(bucket: str, key: str, path: Path) -> None:
        uploading.set()
        release.wait(10)
        real_upload(bucket, key, path)

    signalled: list[int] = []
    real_killpg = os.killpg

    def spy_killpg(pgid: int, signum: int) -> None:
        signalled.append(pgid)
        real_killpg(pgid, signum)

    monkeypatch.setattr(storage, "upload_file", slow_upload)
    monkeypatch.setattr(os, "killpg", spy_killpg)
    uuid = api.submit("echo $$; echo result > out.txt", resultBucket="stale-pid-results")
    try:
        assert uploading.wait(10), "the instance never reached its result upload"
        exited_pid = int(api.get(f"/tasks/{uuid}/stdout").text)
        assert qarnot_emulator.running_pids() == []
        signalled.clear()
        assert api.post(f"/tasks/{uuid}/abort").status_code == 200
        assert exited_pid not in signalled
    finally:
        release.set()
    assert api.wait(uuid)["state"] == "Cancelled"


def test_tasks_do_not_inherit_the_emulators_credentials(
    qarnot_emulator_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QARNOT_CLIENT_TOKEN", "inherited-qarnot-token")
    monkeypatch.setenv("QARNOT_CLUSTER_URL", "https://api.qarnot.example")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "inherited-aws-secret")
    monkeypatch.setenv("UNRELATED_SETTING", "kept")
    emu = qarnot_emulator_factory(token="tok")
    api = Api(emu)
    plain = api.wait(api.submit("env"))
    assert plain["state"] == "Success"
    env = api.get(f"/tasks/{plain['uuid']}/stdout").text.splitlines()
    assert "UNRELATED_SETTING=kept" in env
    assert f"QARNOT_TASK_UUID={plain['uuid']}" in env
    assert not [line for line in env if line.startswith(("QARNOT_CLIENT_TOKEN=", "QARNOT_CLUSTER_URL=", "AWS_"))]
    privileged = api.wait(api.submit("env", privileges={"exportApiAndStorageCredentialsInEnvironment": True}))
    env = api.get(f"/tasks/{privileged['uuid']}/stdout").text.splitlines()
    assert "QARNOT_CLIENT_TOKEN=tok" in env
    assert f"QARNOT_CLUSTER_URL={emu.api_url}" in env
    assert f"QARNOT_STORAGE_URL={emu.storage_url}" in env
    assert not [line for line in env if line.startswith("AWS_") or "inherited" in line]
    constant = api.wait(api.submit("env", constants=[{"key": "AWS_REGION", "value": "eu-west-3"}]))
    assert "AWS_REGION=eu-west-3" in api.get(f"/tasks/{constant['uuid']}/stdout").text.splitlines()


def test_timers_beyond_any_horizon_do_not_stop_the_others(qarnot_emulator_factory: Any) -> None:
    emu = qarnot_emulator_factory(mode="simulate", sim_duration=0.05)
    api = Api(emu)
    forever = api.submit(autoDeleteOnCompletion=True, completionTimeToLive="10675199.02:48:05.4775807")
    assert api.wait(forever)["state"] == "Success"
    job = api.post("/jobs", json={"name": "long", "maxWallTime": "10675199.00:00:00"})
    assert job.status_code == 200, job.text
    time.sleep(0.2)  # the far timers are now the only ones left: the timer thread must keep going
    ephemeral = api.submit(autoDeleteOnCompletion=True, completionTimeToLive="00:00:00.2")
    assert api.wait(ephemeral)["state"] == "Success"
    deadline = time.monotonic() + 5
    while api.get(f"/tasks/{ephemeral}").status_code != 404:
        assert time.monotonic() < deadline, "the auto-delete timer never fired"
        time.sleep(0.05)
    assert api.get(f"/tasks/{forever}").status_code == 200
