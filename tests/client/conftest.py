"""Fixtures for client tests: a client connected to a real emulator over loopback HTTP."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_qarnot.client import QConnection, RetryPolicy

FAST_RETRY = RetryPolicy(max_attempts=6, base_delay=0.02, max_delay=0.3, max_elapsed=30.0)


def connect(emu: Any, **kwargs: Any) -> QConnection:
    """A client for `emu` with quick retries, so fault tests stay fast."""
    kwargs.setdefault("retry", FAST_RETRY)
    return QConnection(emu.api_url, emu.token, **kwargs)


@pytest.fixture
def conn(qarnot_emulator: Any) -> Iterator[QConnection]:
    with connect(qarnot_emulator) as connection:
        yield connection


class Recorder:
    """A tiny HTTP server whose answers a test scripts, recording what it was sent."""

    def __init__(self, answer: Callable[[http.server.BaseHTTPRequestHandler, int], None]) -> None:
        self.requests: list[dict[str, Any]] = []
        self.times: list[float] = []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                recorder.requests.append(
                    {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
                )
                recorder.times.append(time.monotonic())
                answer(self, len(recorder.requests))

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def reply(handler: http.server.BaseHTTPRequestHandler, status: int, body: bytes = b"{}", **headers: str) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    for key, value in headers.items():
        handler.send_header(key.replace("_", "-"), value)
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture
def recorder_factory() -> Iterator[Callable[..., Recorder]]:
    made: list[Recorder] = []

    def make(answer: Callable[[http.server.BaseHTTPRequestHandler, int], None]) -> Recorder:
        made.append(Recorder(answer))
        return made[-1]

    yield make
    for rec in made:
        rec.close()
