"""`airflow dags test` (the CLI, in its own process and DB) runs the deferrable examples against the emulator."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import qarnot_conn_json

EXAMPLES = Path(__file__).resolve().parents[2] / "dags_examples"
AIRFLOW = str(Path(sys.executable).with_name("airflow"))

pytestmark = pytest.mark.timeout(600)


def cli_env(home: Path, emu: Any, output: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLES),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__QARNOT__MIN_EVENT_DELAY": "0",
            "AIRFLOW_CONN_QARNOT_DEFAULT": qarnot_conn_json(emu.api_url, emu.token, storage_url=emu.storage_url),
            "QARNOT_RENDER_OUTPUT_DIR": str(output),
        }
    )
    return env


def airflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AIRFLOW, *args], env=env, capture_output=True, text=True, timeout=500, check=False)


def published_uuids(home: Path, dag_id: str) -> dict[str, Any]:
    """task_id (with map index) -> the `qarnot_task_uuid` XCom the CLI run stored."""
    with closing(sqlite3.connect(home / "airflow.db")) as db:
        rows = db.execute(
            "SELECT task_id, map_index, value FROM xcom WHERE dag_id = ? AND key = 'qarnot_task_uuid'", (dag_id,)
        ).fetchall()
    return {(t if m < 0 else f"{t}[{m}]"): json.loads(v) for t, m, v in rows}


def test_deferrable_operator_and_sensor_complete_in_airflow_dags_test(qarnot_conn: Any, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = cli_env(home, qarnot_conn, tmp_path / "render-output")
    migrated = airflow(env, "db", "migrate")
    assert migrated.returncode == 0, migrated.stderr[-3000:]

    # The render pipeline: a deferrable QarnotSubmitTaskOperator (its trigger runs inline).
    render = airflow(env, "dags", "test", "qarnot_render_pipeline")
    assert render.returncode == 0, (render.stdout + render.stderr)[-5000:]
    assert "running trigger in line" in render.stdout + render.stderr, "the operator deferred"
    (render_task,) = [t for t in qarnot_conn.tasks() if t["state"] == "Success"]
    assert published_uuids(home, "qarnot_render_pipeline") == {"render_frames": render_task["uuid"]}
    assert len(list((tmp_path / "render-output").rglob("frame_*.png"))) >= 8

    # The sweep: submit-only operators watched by deferrable QarnotTaskSensors.
    sweep = airflow(env, "dags", "test", "qarnot_parameter_sweep")
    assert sweep.returncode == 0, (sweep.stdout + sweep.stderr)[-5000:]
    sweep_tasks = {t["uuid"] for t in qarnot_conn.tasks() if t["name"].startswith("sweep ")}
    assert len(sweep_tasks) == 3
    assert all(t["state"] == "Success" for t in qarnot_conn.tasks())
    published = published_uuids(home, "qarnot_parameter_sweep")
    submitted = {v for k, v in published.items() if k.startswith("submit_sweep[")}
    watched = {v for k, v in published.items() if k.startswith("wait_sweep[")}
    assert submitted == watched == sweep_tasks, published
    assert qarnot_conn.token not in render.stdout + render.stderr + sweep.stdout + sweep.stderr
