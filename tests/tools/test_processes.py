"""The local-stack helpers: ports handed to services that bind them later, and stopping services cleanly."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

from tools.processes import Service, _ephemeral_low, free_port, stop_all


def test_free_ports_are_distinct_bindable_and_out_of_reach_of_bind_zero() -> None:
    """A port reserved for the api-server must not be taken meanwhile by another service's `bind(0)`."""
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(port < _ephemeral_low() for port in ports)
    taken_by_bind_zero = []
    for _ in range(50):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        taken_by_bind_zero.append(sock)
    try:
        assert not {s.getsockname()[1] for s in taken_by_bind_zero} & set(ports)
    finally:
        for sock in taken_by_bind_zero:
            sock.close()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[0]))


LEADER_THAT_STOPS_ITS_CHILD = """
import os, signal, sys, time
child = os.fork()
if child == 0:
    signal.signal(signal.SIGTERM, lambda *_: (open(sys.argv[1], "a").write("child got SIGTERM\\n"), os._exit(1)))
    signal.signal(signal.SIGUSR1, lambda *_: os._exit(0))
    while True:
        time.sleep(0.1)
def stop(*_):
    os.kill(child, signal.SIGUSR1)
    os.waitpid(child, 0)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
open(sys.argv[1] + ".ready", "w").close()
while True:
    time.sleep(0.1)
"""


def _started(tmp_path: Path, name: str, code: str) -> Service:
    """A service running `code`, once it has installed its signal handlers."""
    record = tmp_path / f"{name}.record"
    service = Service(name, [sys.executable, "-c", code, str(record)], dict(os.environ), tmp_path / f"{name}.log")
    service.start()
    deadline = time.monotonic() + 30
    while not record.with_name(record.name + ".ready").exists():
        assert time.monotonic() < deadline, service.tail()
        time.sleep(0.05)
    return service


def test_stop_lets_the_main_process_stop_its_own_children(tmp_path: Path) -> None:
    """The Airflow scheduler stops its executor workers itself: a group-wide SIGTERM can deadlock it."""
    service = _started(tmp_path, "leader", LEADER_THAT_STOPS_ITS_CHILD)
    assert stop_all([service], grace=20) == []
    assert not service.group_alive()
    record = tmp_path / "leader.record"
    assert not record.exists() or "SIGTERM" not in record.read_text()


def test_stop_escalates_to_the_group_then_sigkill(tmp_path: Path) -> None:
    """A service that ignores SIGTERM is still stopped, and reported as having needed SIGKILL."""
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "open(sys.argv[1] + '.ready', 'w').close()\n"
        "while True: time.sleep(0.1)\n"
    )
    stubborn = _started(tmp_path, "stubborn", code)
    polite = _started(tmp_path, "polite", LEADER_THAT_STOPS_ITS_CHILD)
    started = time.monotonic()
    assert stop_all([stubborn, polite], grace=1, escalation=1) == ["stubborn"]
    assert time.monotonic() - started < 15
    assert not stubborn.group_alive()
    assert not polite.group_alive()


def test_stop_signals_the_group_at_once_when_the_main_process_is_gone(tmp_path: Path) -> None:
    """A crashed main process leaves its children: they are stopped without waiting out the grace period."""
    code = "import os, sys, time\nif os.fork() == 0:\n    time.sleep(600)\nopen(sys.argv[1] + '.ready', 'w').close()\n"
    orphaned = _started(tmp_path, "crashed", code)
    assert orphaned.process is not None
    orphaned.process.wait(timeout=10)
    assert orphaned.group_alive(), "the child is still there"
    started = time.monotonic()
    assert stop_all([orphaned], grace=20) == []
    assert time.monotonic() - started < 10
    assert not orphaned.group_alive()
