"""QarnotTaskTrigger without a Qarnot API: serialization, argument checks, event shapes, connection errors."""

from __future__ import annotations

import json
import socket
import time

import pytest

from airflow_provider_qarnot.client import states
from airflow_provider_qarnot.client.models import InstanceInfo, TaskError, TaskSummary
from airflow_provider_qarnot.triggers.qarnot import QarnotTaskTrigger, final_event, min_event_delay
from tests.conftest import QARNOT_TEST_TOKEN, qarnot_conn_json

CLASSPATH = "airflow_provider_qarnot.triggers.qarnot.QarnotTaskTrigger"


def test_serialize_round_trip() -> None:
    trigger = QarnotTaskTrigger(
        task_uuid="u-1",
        qarnot_conn_id="qc",
        deadline=1_800_000_000.5,
        poll_interval=2,
        cancel_on_kill=False,
        shared_polling=False,
        max_consecutive_errors=3,
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == CLASSPATH
    assert kwargs == {
        "task_uuid": "u-1",
        "qarnot_conn_id": "qc",
        "deadline": 1_800_000_000.5,
        "poll_interval": 2.0,
        "cancel_on_kill": False,
        "shared_polling": False,
        "max_consecutive_errors": 3,
    }
    assert json.loads(json.dumps(kwargs)) == kwargs  # JSON-native
    again = QarnotTaskTrigger(**kwargs)
    assert again.serialize() == (classpath, kwargs)


def test_serialized_through_airflow() -> None:
    from airflow.sdk.serde import deserialize, serialize

    _, kwargs = QarnotTaskTrigger(task_uuid="u-2", deadline=None).serialize()
    assert QarnotTaskTrigger(**deserialize(serialize(kwargs))).serialize()[1] == kwargs


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"task_uuid": ""}, "task_uuid"),
        ({"task_uuid": "u", "poll_interval": 0}, "poll_interval"),
        ({"task_uuid": "u", "max_consecutive_errors": 0}, "max_consecutive_errors"),
    ],
)
def test_bad_arguments(kwargs: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        QarnotTaskTrigger(**kwargs)


def test_repr_has_no_secret() -> None:
    assert QARNOT_TEST_TOKEN not in repr(QarnotTaskTrigger(task_uuid="u"))


def test_final_event_shapes() -> None:
    ok = final_event(TaskSummary(uuid="u", name="n", state=states.SUCCESS))
    assert ok == {"status": "success", "task_uuid": "u", "state": "Success", "message": ok["message"], "errors": []}
    failed = final_event(
        TaskSummary(
            uuid="u",
            state=states.FAILURE,
            errors=(TaskError("E", "boom"),),
            instances=(InstanceInfo(2, "Failure", error=TaskError(None, "exit 3")),),
        )
    )
    assert failed["status"] == "failure"
    assert failed["errors"] == ["[E] boom", "instance 2: exit 3"]
    assert "instance 2" in failed["message"]
    assert final_event(TaskSummary(uuid="u", state=states.CANCELLED))["status"] == "cancelled"


async def test_unknown_connection_yields_an_error_event() -> None:
    event = await QarnotTaskTrigger(task_uuid="u", qarnot_conn_id="no_such_conn").run().__anext__()
    assert event.payload["status"] == "error"
    assert "no_such_conn" in event.payload["message"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("shared", [True, False])
async def test_unreachable_api_past_deadline_still_times_out(monkeypatch: pytest.MonkeyPatch, shared: bool) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_QARNOT_DOWN", qarnot_conn_json(f"http://127.0.0.1:{_closed_port()}"))
    trigger = QarnotTaskTrigger(
        task_uuid="u",
        qarnot_conn_id="qarnot_down",
        deadline=time.time() + 0.3,
        poll_interval=0.1,
        shared_polling=shared,
    )
    event = await trigger.run().__anext__()
    assert event.payload["status"] == "timeout"
    assert event.payload["message"].startswith("Timeout")


def test_trigger_module_is_light_to_import() -> None:
    """The triggerer imports trigger modules on its event loop: `requests` (~0.3 s) must load later, in a thread."""
    import subprocess
    import sys

    code = (
        "import sys, airflow.sdk, airflow.triggers.base\n"
        "import airflow_provider_qarnot.triggers.qarnot\n"
        "heavy = {'requests', 'boto3', 'airflow_provider_qarnot.hooks.qarnot'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize(
    ("value", "expected"), [("abc", 5.0), ("inf", 5.0), ("nan", 5.0), ("-3", 0.0), ("1e9", 300.0), ("2", 2.0)]
)
def test_min_event_delay_never_crashes_or_hangs_a_trigger(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: float
) -> None:
    monkeypatch.setenv("AIRFLOW__QARNOT__MIN_EVENT_DELAY", value)
    assert min_event_delay() == expected
