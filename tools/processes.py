"""Starting and stopping the background processes of a local stack, leaving nothing behind."""

from __future__ import annotations

import contextlib
import os
import random
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now, for a service that binds it later.

    It is taken below the kernel's ephemeral range, where no `bind(0)` (the emulator, moto, a client's own
    port) can take it in the meantime, and never handed out twice by this process.
    """
    low = _ephemeral_low()
    start = max(1024, low - 12_000)
    if low - start < 1000:  # an unusual kernel setting: no room below the range, take any free port
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    rng = random.SystemRandom()
    for _ in range(500):
        port = rng.randrange(start, low)
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free TCP port below the ephemeral range")


_HANDED_OUT: set[int] = set()


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux default 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


@dataclass
class Service:
    """One background process in its own process group, its output in a log file."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    log_path: Path
    cwd: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            list(self.argv),
            env=dict(self.env),
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal_leader(self, sig: int) -> None:
        """Signal the service's main process alone (it stops its own children)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)

    def signal_group(self, sig: int) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def group_alive(self) -> bool:
        """Whether any process of this service's group is still alive."""
        if self.process is None:
            return False
        self.process.poll()
        try:
            os.killpg(self.process.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return _group_has_live_members(self.process.pid)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _group_has_live_members(pgid: int) -> bool:
    """True when some non-zombie process belongs to process group `pgid` (reads /proc)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            return True
    return False


def find_processes(needle: str) -> list[int]:
    """Process ids whose command line (or title set with setproctitle) contains `needle` (reads /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmdline:
            found.append(int(entry))
    return found


def stop_all(services: Sequence[Service], grace: float = 20.0, escalation: float = 10.0) -> list[str]:
    """Stop services as their own supervisor would; returns the names of those that needed SIGKILL.

    SIGTERM goes to each service's main process only, never to its whole group at first: the Airflow
    scheduler shuts its LocalExecutor workers down itself, and a worker killed by a group-wide SIGTERM
    while it holds the executor queue's lock leaves the scheduler waiting for ever. A group still alive
    after `grace` seconds gets SIGTERM, and SIGKILL `escalation` seconds later.
    """
    for service in services:
        if service.running:
            service.signal_leader(signal.SIGTERM)
        else:  # the main process is gone already: nobody is left to stop its children
            service.signal_group(signal.SIGTERM)
    _wait_for_groups(services, grace)
    for service in services:
        if service.group_alive():
            service.signal_group(signal.SIGTERM)
    _wait_for_groups(services, escalation)
    killed = []
    for service in services:
        if service.group_alive():
            killed.append(service.name)
            service.signal_group(signal.SIGKILL)
    for service in services:
        if service.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                service.process.wait(timeout=10)
    return killed


def _wait_for_groups(services: Sequence[Service], seconds: float) -> None:
    """Wait until no service has a live process, or `seconds` passed."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(s.group_alive() for s in services):
        time.sleep(0.2)


EMULATOR_READY = re.compile(r"^Qarnot emulator ready: api=(\S+) storage=(\S+)$")


def start_emulator_process(token: str, *args: str, timeout: float = 60.0) -> tuple[subprocess.Popen[str], str]:
    """`qarnot-emulator --port 0 --token TOKEN ARGS...` in its own session; returns it and its API URL.

    For benchmarks, which measure the emulator's CPU and memory as a process of its own.
    """
    script = Path(sys.executable).with_name("qarnot-emulator")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "airflow_provider_qarnot.emulator.cli"]
    proc = subprocess.Popen(
        [*command, "--port", "0", "--token", token, *args], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        ready = selector.select(timeout)
    line = proc.stdout.readline().strip() if ready else ""
    match = EMULATOR_READY.match(line)
    if match is None:
        stop_process(proc)
        raise SystemExit(f"the emulator did not start (first line {line!r})")
    return proc, match.group(1)


def stop_process(proc: subprocess.Popen[Any], grace: float = 20.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
