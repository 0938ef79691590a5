"""The ``qarnot-emulator`` command: ready line, serving, clean SIGTERM that leaves no task process behind."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from airflow_provider_qarnot.emulator import cli

READY = re.compile(r"^Qarnot emulator ready: api=(http://127\.0\.0\.1:\d+) storage=(http://127\.0\.0\.1:\d+)$")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        assert selector.select(timeout), "no ready line in time"
    return proc.stdout.readline().rstrip("\n")


def test_cli_serves_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("qarnot-emulator")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "airflow_provider_qarnot.emulator.cli"]
    env = {**os.environ, "QARNOT_CLIENT_TOKEN": "cli-token"}
    proc = subprocess.Popen(
        [*command, "--port", "0", "--cores", "1", "--state-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = _read_line(proc, 60)
        match = READY.match(line)
        assert match, line
        api, storage = match.groups()
        headers = {"Authorization": "cli-token"}
        assert requests.get(f"{api}/settings", headers=headers, timeout=10).json() == {"storage": storage}
        body = {
            "name": "long",
            "profile": "docker-batch",
            "instanceCount": 1,
            "constants": [{"key": "DOCKER_CMD", "value": "sleep 120"}],
        }
        uuid = requests.post(f"{api}/tasks", json=body, headers=headers, timeout=10).json()["uuid"]
        deadline = time.monotonic() + 10
        while requests.get(f"{api}/tasks/{uuid}", headers=headers, timeout=10).json()["state"] != "FullyExecuting":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.2)
        task_pids = _children(proc.pid)
        assert task_pids, "the instance process should be a child of the emulator"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert time.monotonic() - started < 10
        time.sleep(0.2)
        assert not any(_alive(pid) for pid in task_pids)
        assert proc.stdout is not None and proc.stdout.read() == ""  # exactly one line was printed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_refuses_unsafe_or_incomplete_setups(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("QARNOT_CLIENT_TOKEN", raising=False)
    assert cli.main(["--port", "0"]) == 2
    assert "token is required" in capsys.readouterr().err
    assert cli.main(["--host", "0.0.0.0", "--token", "t"]) == 2
    assert "refusing" in capsys.readouterr().err
    assert cli.main(["--token", "t", "--faults", "{not json"]) == 2
    assert "--faults" in capsys.readouterr().err
