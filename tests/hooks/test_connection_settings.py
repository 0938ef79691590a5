"""Reading a Qarnot connection: host forms, extras (plain and UI-prefixed), clear errors, no token leaks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_qarnot.hooks.qarnot import (
    DEFAULT_CONSOLE_URL,
    InvalidConnectionError,
    QarnotConnectionSettings,
    QarnotHook,
)
from tests.conftest import QARNOT_TEST_TOKEN


def _conn(host: str | None = None, password: str | None = QARNOT_TEST_TOKEN, port: int | None = None, **extra: Any):
    from airflow.sdk import Connection

    return Connection(conn_id="q", conn_type="qarnot", host=host, password=password, port=port, extra=json.dumps(extra))


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        (None, None, "https://api.qarnot.com"),
        ("", None, "https://api.qarnot.com"),
        ("api.qarnot.com", None, "https://api.qarnot.com"),
        ("https://api.qarnot.com/", None, "https://api.qarnot.com"),
        ("https://api.example.com:8443", None, "https://api.example.com:8443"),
        ("http://127.0.0.1", 8123, "http://127.0.0.1:8123"),
        ("http://localhost:9000", 1, "http://localhost:9000"),
        ("http://[::1]:9000", None, "http://[::1]:9000"),
    ],
)
def test_host_forms(host: str | None, port: int | None, expected: str) -> None:
    assert QarnotConnectionSettings.from_connection(_conn(host, port=port)).cluster_url == expected


def test_plain_http_to_a_remote_host_is_refused_unless_allowed() -> None:
    with pytest.raises(InvalidConnectionError, match="plain http"):
        QarnotConnectionSettings.from_connection(_conn("http://api.example.com"))
    settings = QarnotConnectionSettings.from_connection(_conn("http://api.example.com", allow_insecure_http="true"))
    assert settings.cluster_url == "http://api.example.com"


def test_extras_plain_and_prefixed(tmp_path: Any) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    plain = QarnotConnectionSettings.from_connection(
        _conn(storage_url="https://s3.example.com/", verify=str(ca), timeout="5,30", console_url="https://c.example")
    )
    assert plain.storage_url == "https://s3.example.com"
    assert plain.verify == str(ca)
    assert plain.timeout == (5.0, 30.0)
    assert plain.console_url == "https://c.example"
    prefixed = QarnotConnectionSettings.from_connection(
        _conn(**{"extra__qarnot__verify": "false", "extra__qarnot__timeout": 12, "extra__qarnot__storage_url": ""})
    )
    assert prefixed.verify is False
    assert prefixed.timeout == 12.0
    assert prefixed.storage_url is None
    assert prefixed.console_url == DEFAULT_CONSOLE_URL


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"timeout": "soon"}, "timeout"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": [1, 2, 3]}, "timeout"),
        ({"verify": "/no/such/ca.pem"}, "verify"),
        ({"verify": 3}, "verify"),
        ({"storage_url": "s3.example.com"}, "storage_url"),
        ({"console_url": "console"}, "console_url"),
        ({"allow_insecure_http": "maybe"}, "allow_insecure_http"),
        ({"token": "abc"}, "password field"),
    ],
)
def test_malformed_extras_name_the_field(extra: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidConnectionError, match=field) as err:
        QarnotConnectionSettings.from_connection(_conn(**extra))
    assert "'q'" in str(err.value)  # the connection id
    assert QARNOT_TEST_TOKEN not in str(err.value)


def test_extra_that_is_not_json_or_not_an_object() -> None:
    from airflow.sdk import Connection

    for raw, why in (("{nope", "not valid JSON"), ("[1, 2]", "JSON object")):
        conn = Connection(conn_id="q", conn_type="qarnot", password="t", extra=raw)
        with pytest.raises(InvalidConnectionError, match=why):
            QarnotConnectionSettings.from_connection(conn)


def test_missing_token_is_a_clear_error() -> None:
    with pytest.raises(InvalidConnectionError, match="password field"):
        QarnotConnectionSettings.from_connection(_conn(password=None))


def test_repr_and_task_url_never_show_the_token() -> None:
    settings = QarnotConnectionSettings.from_connection(_conn())
    assert QARNOT_TEST_TOKEN not in repr(settings)
    assert settings.task_url("u-1") == "https://console.qarnot.com/tasks/u-1"
    templated = QarnotConnectionSettings.from_connection(_conn(console_url="https://c.example/#/t/{uuid}/view"))
    assert templated.task_url("u-1") == "https://c.example/#/t/u-1/view"
    conn = settings.connect()
    assert QARNOT_TEST_TOKEN not in repr(conn)
    assert QARNOT_TEST_TOKEN not in repr(QarnotHook(settings=settings))


@pytest.mark.parametrize("form", ["json", "uri"])
def test_connection_from_environment(monkeypatch: pytest.MonkeyPatch, form: str) -> None:
    if form == "json":
        value = json.dumps(
            {
                "conn_type": "qarnot",
                "host": "http://127.0.0.1:8765",
                "password": QARNOT_TEST_TOKEN,
                "extra": {"timeout": 7},
            }
        )
    else:
        value = f"qarnot://http://:{QARNOT_TEST_TOKEN}@127.0.0.1:8765/?timeout=7"
    monkeypatch.setenv("AIRFLOW_CONN_QARNOT_ENV", value)
    settings = QarnotHook("qarnot_env").settings
    assert settings.cluster_url == "http://127.0.0.1:8765"
    assert settings.token == QARNOT_TEST_TOKEN
    assert settings.timeout == 7.0


def test_uri_without_scheme_defaults_to_https(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_QARNOT_URI", f"qarnot://:{QARNOT_TEST_TOKEN}@api.qarnot.com/")
    assert QarnotHook("qarnot_uri").settings.cluster_url == "https://api.qarnot.com"


async def test_async_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_QARNOT_ASYNC", f"qarnot://:{QARNOT_TEST_TOKEN}@api.qarnot.com/")
    settings = await QarnotHook.aget_settings("qarnot_async")
    assert settings.cluster_url == "https://api.qarnot.com"


def test_turning_tls_verification_off_is_warned(capfd: pytest.CaptureFixture[str]) -> None:
    settings = QarnotConnectionSettings.from_connection(_conn("https://api.example.com", verify="false"))
    QarnotHook("q", settings=settings).get_conn()
    logs = capfd.readouterr().out
    assert "TLS certificate verification is off" in logs
    assert QARNOT_TEST_TOKEN not in logs
    QarnotHook("q", settings=QarnotConnectionSettings.from_connection(_conn("https://api.example.com"))).get_conn()
    assert "TLS" not in capfd.readouterr().out


def test_redact_hides_the_token_before_any_call() -> None:
    hook = QarnotHook("q", settings=QarnotConnectionSettings.from_connection(_conn()))
    assert hook.redact(f"error: {QARNOT_TEST_TOKEN}") == "error: ***"
    assert QarnotHook("unread").redact("nothing to hide") == "nothing to hide"  # never reads the connection
