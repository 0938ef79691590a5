"""QConnection: headers, timeouts, TLS, retries and error mapping, against small real servers on loopback."""

from __future__ import annotations

import http.server
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_qarnot import __version__
from airflow_provider_qarnot.client import (
    InvalidRequestException,
    MissingProfileException,
    MissingTaskException,
    QarnotException,
    QConnection,
    QTask,
    RetryPolicy,
    TransientFailureException,
    UnauthorizedException,
)
from airflow_provider_qarnot.client.connection import DEFAULT_TIMEOUT
from airflow_provider_qarnot.client.exceptions import CertificateVerificationException
from airflow_provider_qarnot.emulator import FaultRule
from tests.client.conftest import Recorder, connect, reply
from tools.tls import self_signed_certificate

TOKEN = "tok-SECRET-4f1d2c"


def test_headers_are_raw_token_and_a_named_user_agent(recorder_factory: Callable[..., Recorder]) -> None:
    rec = recorder_factory(lambda h, n: reply(h, 200, b'{"email": "a@b"}'))
    conn = QConnection(rec.url, TOKEN)
    assert conn.user_info()["email"] == "a@b"
    headers = rec.requests[0]["headers"]
    assert headers["Authorization"] == TOKEN
    assert headers["User-Agent"].startswith(f"airflow-provider-qarnot/{__version__}")


def test_every_call_has_a_timeout() -> None:
    conn = QConnection("http://127.0.0.1:9", TOKEN)
    assert conn.timeout == DEFAULT_TIMEOUT
    with pytest.raises(ValueError, match="timeout"):
        QConnection("http://127.0.0.1:9", TOKEN, timeout=0)


def test_read_timeout_is_retried_then_reported(recorder_factory: Callable[..., Recorder]) -> None:
    rec = recorder_factory(lambda h, n: time.sleep(1.0))
    conn = QConnection(rec.url, TOKEN, timeout=0.2, retry=RetryPolicy(max_attempts=3, base_delay=0.01))
    started = time.monotonic()
    with pytest.raises(TransientFailureException, match="3 attempts") as info:
        conn.request("GET", "/info")
    assert info.value.attempts == 3
    assert len(rec.requests) == 3
    assert time.monotonic() - started < 5


def test_retry_after_is_honoured(recorder_factory: Callable[..., Recorder]) -> None:
    rec = recorder_factory(
        lambda h, n: reply(h, 429, b'{"message": "slow down"}', Retry_After="1") if n == 1 else reply(h, 200)
    )
    conn = QConnection(rec.url, TOKEN, retry=RetryPolicy(base_delay=0.01))
    conn.request("GET", "/settings")
    assert len(rec.requests) == 2
    assert rec.times[1] - rec.times[0] >= 0.95


def test_exhausted_503_says_attempts_and_message(recorder_factory: Callable[..., Recorder]) -> None:
    rec = recorder_factory(lambda h, n: reply(h, 503, b""))
    conn = QConnection(rec.url, TOKEN, retry=RetryPolicy(max_attempts=4, base_delay=0.01))
    with pytest.raises(TransientFailureException, match=r"Service Unavailable \(gave up after 4 attempts\)"):
        conn.request("GET", "/info")
    assert len(rec.requests) == 4


def test_non_transient_errors_are_not_retried(recorder_factory: Callable[..., Recorder]) -> None:
    rec = recorder_factory(lambda h, n: reply(h, 404, b'{"message": "Profile nope not found"}'))
    conn = QConnection(rec.url, TOKEN, retry=RetryPolicy(base_delay=0.01))
    with pytest.raises(MissingProfileException, match="Profile nope not found"):
        conn.profile("nope")
    assert len(rec.requests) == 1


def test_a_post_is_not_resent_after_a_5xx(recorder_factory: Callable[..., Recorder]) -> None:
    rec = recorder_factory(lambda h, n: reply(h, 502, b'{"message": "bad gateway"}'))
    conn = QConnection(rec.url, TOKEN, retry=RetryPolicy(base_delay=0.01))
    with pytest.raises(TransientFailureException):
        conn.request("POST", "/tasks/x/snapshot", json={})
    assert len(rec.requests) == 1


def test_connection_refused_is_retried_and_reported() -> None:
    conn = QConnection("http://127.0.0.1:9", TOKEN, retry=RetryPolicy(max_attempts=3, base_delay=0.01))
    with pytest.raises(TransientFailureException, match="3 attempts"):
        conn.request("POST", "/tasks", json={})


def test_token_is_never_shown(recorder_factory: Callable[..., Recorder]) -> None:
    rec = recorder_factory(lambda h, n: reply(h, 400, f'{{"message": "bad token {TOKEN} given"}}'.encode()))
    conn = QConnection(rec.url, TOKEN)
    assert TOKEN not in repr(conn)
    with pytest.raises(QarnotException) as info:
        conn.request("GET", "/info")
    assert TOKEN not in str(info.value)
    assert TOKEN not in repr(info.value)
    assert "***" in str(info.value)


@pytest.mark.parametrize(
    ("status", "body", "cut_at"),
    [
        (400, "{pad}{token} echoed", 2000),  # an error message, cut at 2,000 characters
        (200, "not json {pad}{token}", 200),  # a malformed answer, quoted up to 200 characters
    ],
)
def test_no_part_of_the_token_survives_a_message_cut_to_length(
    recorder_factory: Callable[..., Recorder], status: int, body: str, cut_at: int
) -> None:
    """A server echoing the token right where the message is cut: not even its first characters show."""
    prefix = "not json " if body.startswith("not json") else ""
    pad = "x" * (cut_at - len(prefix) - 4)  # the token straddles the cut
    text = body.format(pad=pad, token=TOKEN)
    rec = recorder_factory(lambda h, n: reply(h, status, text.encode()))
    conn = QConnection(rec.url, TOKEN, retry=RetryPolicy(max_attempts=1))
    with pytest.raises(QarnotException) as info:
        conn.request("GET", "/info")
    assert TOKEN[:4] not in str(info.value).replace(pad, "")


def test_bad_token_against_the_emulator(qarnot_emulator: Any) -> None:
    conn = QConnection(qarnot_emulator.api_url, "wrong-token-0123")
    with pytest.raises(UnauthorizedException) as info:
        conn.user_info()
    assert info.value.status_code == 401
    assert "wrong-token-0123" not in str(info.value)


def test_missing_token_is_rejected() -> None:
    with pytest.raises(UnauthorizedException, match="token"):
        QConnection("https://api.qarnot.com", "")


def test_account_calls_against_the_emulator(qarnot_emulator: Any) -> None:
    with connect(qarnot_emulator) as conn:
        assert conn.storage_url == qarnot_emulator.storage_url
        assert "@" in conn.user_info()["email"]
        assert "docker-batch" in conn.profiles()
        assert conn.profile("docker-batch")["name"] == "docker-batch"
        with pytest.raises(MissingProfileException):
            conn.profile("no-such-profile")


def test_v1_prefixed_cluster_url_works(qarnot_emulator: Any) -> None:
    with QConnection(qarnot_emulator.api_url + "/v1", qarnot_emulator.token) as conn:
        assert conn.profiles()


def test_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QARNOT_CLUSTER_URL", "https://cluster.example/")
    monkeypatch.setenv("QARNOT_CLIENT_TOKEN", TOKEN)
    monkeypatch.setenv("QARNOT_STORAGE_URL", "https://storage.example")
    monkeypatch.setenv("QARNOT_CLUSTER_UNSAFE", "true")
    monkeypatch.setenv("QARNOT_CLUSTER_TIMEOUT", "12")
    conn = QConnection.from_env()
    assert conn.cluster_url == "https://cluster.example"
    assert conn.verify is False
    assert conn.timeout == 12.0
    assert conn.storage_url == "https://storage.example"
    monkeypatch.setenv("QARNOT_CLUSTER_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="QARNOT_CLUSTER_TIMEOUT"):
        QConnection.from_env()


def test_tls_verification_is_on_by_default(recorder_factory: Callable[..., Recorder], tmp_path: Path) -> None:
    rec = recorder_factory(lambda h, n: reply(h, 200, b'{"storage": null}'))
    cert, key = self_signed_certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    rec.server.socket = context.wrap_socket(rec.server.socket, server_side=True)
    url = rec.url.replace("http://", "https://")
    with pytest.raises(CertificateVerificationException, match="(?i)certificate"):
        QConnection(url, TOKEN, retry=RetryPolicy(base_delay=0.01)).settings()
    assert rec.requests == []
    assert QConnection(url, TOKEN, verify=str(cert)).settings() == {"storage": None}
    assert QConnection(url, TOKEN, verify=False).settings() == {"storage": None}


def test_a_tls_error_that_is_not_about_the_certificate_is_retried() -> None:
    """Plain HTTP answering an https client is a TLS failure, not a verification one: retried, then transient."""
    import socket

    accepted: list[int] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)

    def serve() -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            accepted.append(1)
            client.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            client.close()

    threading.Thread(target=serve, daemon=True).start()
    url = f"https://127.0.0.1:{server.getsockname()[1]}"
    try:
        with pytest.raises(TransientFailureException, match="3 attempts"):
            QConnection(url, TOKEN, retry=RetryPolicy(max_attempts=3, base_delay=0.01)).settings()
    finally:
        server.close()
    assert len(accepted) == 3


@pytest.mark.parametrize("bad", ["tok-SECRET\nwrapped", "tok-SECRET\tx", "tok-SECRET-\u2603"])
def test_a_token_that_cannot_be_a_header_is_refused_without_quoting_it(
    recorder_factory: Callable[..., Recorder], bad: str
) -> None:
    """A line-wrapped or mangled paste: requests would fail quoting the header (token included), and retry."""
    rec = recorder_factory(lambda h, n: reply(h, 200))
    with pytest.raises(UnauthorizedException, match="cannot be sent in an HTTP header") as info:
        QConnection(rec.url, bad)
    assert "SECRET" not in str(info.value)
    assert rec.requests == []


def test_redact_also_hides_the_escaped_and_quoted_forms() -> None:
    token = "tok\\SECRET/x+y"  # one backslash: repr() writes it doubled
    conn = QConnection("http://127.0.0.1:9", token)
    for written in (token, repr(token), "tok%5CSECRET%2Fx%2By"):
        assert "SECRET" not in conn.redact(f"message quoting {written} here"), written


def test_an_unsendable_request_is_not_retried(recorder_factory: Callable[..., Recorder]) -> None:
    rec = recorder_factory(lambda h, n: reply(h, 200))
    conn = QConnection(rec.url + ":bad-port", TOKEN, retry=RetryPolicy(base_delay=0.01))
    started = time.monotonic()
    with pytest.raises(InvalidRequestException, match="could not be sent"):
        conn.request("GET", "/info")
    assert time.monotonic() - started < 1.0, "not retried"


def test_text_without_a_charset_is_read_as_utf8(recorder_factory: Callable[..., Recorder]) -> None:
    """Qarnot's stdout is `text/plain` without a charset; requests would decode it as Latin-1."""

    def answer(h: http.server.BaseHTTPRequestHandler, n: int) -> None:
        body = "héllo ✓\n".encode()
        h.send_response(200)
        h.send_header("Content-Type", "text/plain")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    rec = recorder_factory(answer)
    assert QConnection(rec.url, TOKEN).request("GET", "/tasks/x/stdout", expect_json=False) == "héllo ✓\n"


def test_an_answer_trickling_in_cannot_hold_a_call_for_ever(recorder_factory: Callable[..., Recorder]) -> None:
    """The read timeout bounds each read; the call as a whole is bounded too (connect + 2 x read)."""

    def answer(h: http.server.BaseHTTPRequestHandler, n: int) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", "1000")
        h.end_headers()
        try:
            for _ in range(100):
                h.wfile.write(b" ")
                h.wfile.flush()
                time.sleep(0.2)
        except OSError:
            return

    rec = recorder_factory(answer)
    conn = QConnection(rec.url, TOKEN, timeout=(0.5, 0.5), retry=RetryPolicy.none())
    started = time.monotonic()
    with pytest.raises(TransientFailureException, match="took over"):
        conn.request("GET", "/info")
    assert time.monotonic() - started < 3.0


def test_a_delete_whose_answer_was_lost_is_not_reported_missing(qarnot_emulator_factory: Any) -> None:
    """The retried DELETE meets a 404 because the first one did delete: that is success."""
    emu = qarnot_emulator_factory(mode="simulate", sim_duration=0.1)
    with connect(emu) as conn:
        task = QTask(conn, "to-delete", "docker-batch", 1)
        task.submit()
        assert task.wait(timeout=30, poll_interval=0.05)
        emu.set_faults([FaultRule(pattern="DELETE /tasks/*", drop_after=1.0, max_faults=1)], seed=1)
        task.delete()
        assert emu.stats()["faults_injected"] == 1
        assert emu.tasks() == []
        with pytest.raises(MissingTaskException):
            task.delete()  # a task that never had a lost answer is still reported missing
