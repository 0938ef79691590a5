"""QarnotTaskLink: what the UI button shows, from the URL the operator or sensor pushed to XCom."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from airflow.sdk import DAG

from airflow_provider_qarnot.links.qarnot import XCOM_TASK_URL, QarnotTaskLink
from airflow_provider_qarnot.operators.qarnot import QarnotSubmitTaskOperator
from airflow_provider_qarnot.sensors.qarnot import QarnotTaskSensor
from tests.conftest import qarnot_conn_json, ti_states, xcom_value

LINK_XCOM = "_link_QarnotTaskLink"


def test_link_definition() -> None:
    link = QarnotTaskLink()
    assert link.name == "Qarnot task"
    assert link.xcom_key == LINK_XCOM
    assert XCOM_TASK_URL == "qarnot_task_url"
    for cls in (QarnotSubmitTaskOperator, QarnotTaskSensor):
        assert any(isinstance(x, QarnotTaskLink) for x in cls.operator_extra_links)


def test_link_is_resolved_for_operator_and_sensor(qarnot_conn: Any, run_dag: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_QARNOT_CONSOLE",
        qarnot_conn_json(qarnot_conn.api_url, qarnot_conn.token, console_url="https://my.console/app/"),
    )
    with DAG("link_dag", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc)) as dag:
        submit = QarnotSubmitTaskOperator(
            task_id="submit",
            qarnot_conn_id="qarnot_console",
            profile="docker-batch",
            instance_count=1,
            constants={"DOCKER_CMD": "true"},
            wait_for_completion=False,
        )
        sense = QarnotTaskSensor(
            task_id="sense", task_uuid="{{ ti.xcom_pull(task_ids='submit') }}", poke_interval=0.3, timeout=60
        )
        QarnotSubmitTaskOperator(task_id="invalid", profile="docker-batch", instance_count=0)
        submit >> sense
    dag_run = run_dag(dag)
    assert ti_states(dag_run) == {"submit": "success", "sense": "success", "invalid": "failed"}
    uuid = xcom_value(dag_run, "submit")
    assert xcom_value(dag_run, "submit", LINK_XCOM) == f"https://my.console/app/tasks/{uuid}"
    assert xcom_value(dag_run, "sense", LINK_XCOM) == f"https://console.qarnot.com/tasks/{uuid}"
    assert not xcom_value(dag_run, "invalid", LINK_XCOM)  # nothing was submitted: no link
