"""The sweep and retry examples run end to end (`dag.test()`, triggers inline) against the emulator."""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import ti_states, xcom_value

EXAMPLES = Path(__file__).resolve().parents[2] / "dags_examples"


def load_example(name: str) -> ModuleType:
    """Import an example DAG file afresh (it reads its settings from the environment at import time)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}_{uuid.uuid4().hex}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parameter_sweep_combines_every_task(qarnot_conn: Any, run_dag: Any) -> None:
    module = load_example("qarnot_parameter_sweep")
    dag_run = run_dag(module.dag)
    states = ti_states(dag_run)
    assert dag_run.state == "success", states
    assert {k for k in states if k.startswith("wait_sweep[")} == {f"wait_sweep[{i}]" for i in range(3)}
    result = xcom_value(dag_run, "collect")
    assert result["tasks"] == 3
    assert result["samples"] == module.INSTANCES * sum(int(p["SAMPLES"]) for p in module.PARAMETER_SETS)
    assert 3.0 < result["pi"] < 3.3
    qarnot_tasks = [t for t in qarnot_conn.tasks() if t["name"].startswith("sweep ")]
    assert len(qarnot_tasks) == 3
    assert all(t["state"] == "Success" for t in qarnot_tasks)


def test_retry_batch_survives_flaky_instances(qarnot_conn: Any, run_dag: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QARNOT_RETRY_BATCH_FAILURE_PERCENT", "30")
    module = load_example("qarnot_retry_batch")
    dag_run = run_dag(module.dag)
    assert ti_states(dag_run) == {"process_batch": "success", "report": "success"}
    assert xcom_value(dag_run, "report")["state"] == "Success"


def test_retry_batch_fails_after_airflow_retries_with_one_task_per_try(
    qarnot_conn: Any, run_dag: Any, monkeypatch: pytest.MonkeyPatch, capfd: Any
) -> None:
    monkeypatch.setenv("QARNOT_RETRY_BATCH_FAILURE_PERCENT", "100")
    module = load_example("qarnot_retry_batch")
    dag_run = run_dag(module.dag)
    assert ti_states(dag_run) == {"process_batch": "failed", "report": "success"}
    tasks = qarnot_conn.tasks()
    tries = sorted(int(t["labels"]["airflow_try_number"]) for t in tasks)
    assert tries == [1, 2, 3], "each of the three tries submitted exactly one Qarnot task"
    assert all(t["state"] == "Failure" for t in tasks)
    logs = capfd.readouterr().out
    assert "ended in state Failure" in logs
    assert "transient failure" in logs  # the stdout tail of the failed Qarnot task
    assert xcom_value(dag_run, "report")["state"] == "Failure"
