"""Shared test fixtures.

The first section must stay first: it points Airflow at a throw-away home before anything imports
airflow (Airflow reads its configuration once, at import time).
"""

# =====================================================================================================
# Airflow test environment (owner: Airflow integration). Keep this section at the top of the file.
# =====================================================================================================

from __future__ import annotations

import os
import tempfile

_AIRFLOW_HOME = tempfile.mkdtemp(prefix="qarnot-airflow-home-")
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME  # never a developer's real home: the DB is reset below
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = os.path.join(_AIRFLOW_HOME, "dags")
os.environ.setdefault("AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION", "False")
# In-process DAG runs (`dag.test()`) have no scheduler to race (apache/airflow#72716): no need to hold events.
os.environ.setdefault("AIRFLOW__QARNOT__MIN_EVENT_DELAY", "0")
os.makedirs(os.environ["AIRFLOW__CORE__DAGS_FOLDER"], exist_ok=True)

import json  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

QARNOT_TEST_TOKEN = "tok-7f3c9a1e-secret-test-token"


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """A fresh sqlite metadata DB in the temporary AIRFLOW_HOME (reset once per session)."""
    from airflow.utils import db

    db.resetdb()
    return _AIRFLOW_HOME


def qarnot_conn_json(api_url: str, token: str = QARNOT_TEST_TOKEN, **extra: Any) -> str:
    """An `AIRFLOW_CONN_*` value in JSON form for a Qarnot API at `api_url`."""
    return json.dumps({"conn_type": "qarnot", "host": api_url, "password": token, "extra": extra})


@pytest.fixture(scope="session")
def shared_emulator() -> Iterator[Any]:
    """One emulator (run mode, 4 slots) for the whole session; `emu` resets it for each test."""
    from airflow_provider_qarnot.emulator import Emulator

    with Emulator(token=QARNOT_TEST_TOKEN, cores=4, mode="run") as emulator:
        yield emulator


@pytest.fixture
def emu(shared_emulator: Any) -> Iterator[Any]:
    """The session's emulator, emptied (tasks, faults, counters) before and after the test."""
    shared_emulator.reset()
    yield shared_emulator
    shared_emulator.reset()


@pytest.fixture
def qarnot_conn(monkeypatch: pytest.MonkeyPatch, emu: Any) -> Any:
    """The emulator, reachable through the Airflow connection `qarnot_default` (token in the password)."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_QARNOT_DEFAULT", qarnot_conn_json(emu.api_url, emu.token, storage_url=emu.storage_url)
    )
    return emu


def requests_made(emu: Any, route: str) -> int:
    """How many requests the emulator served for `route` (e.g. "POST /tasks")."""
    return int(emu.stats()["requests"].get(route, 0))


@pytest.fixture
def run_dag(airflow_db: str, tmp_path: Path) -> Callable[..., Any]:
    """Run a DAG built in the test with `dag.test()` (serialising it first, as Airflow 3.3 requires)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()

    def run(dag: Any, **kwargs: Any) -> Any:
        bag = DagBag(dag_folder=str(tmp_path), collect_dags=False)
        bag.bag_dag(dag)
        sync_bag_to_db(bag, "dags-folder", None)
        return dag.test(**kwargs)

    return run


def ti_states(dag_run: Any) -> dict[str, str]:
    """task_id (with map index when mapped) -> final state of each task instance of a DAG run."""
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = dag_run.get_task_instances(session=session)
        return {(t.task_id if t.map_index < 0 else f"{t.task_id}[{t.map_index}]"): str(t.state) for t in tis}


def xcom_value(dag_run: Any, task_id: str, key: str = "return_value") -> Any:
    """An XCom value pushed by a task instance of a DAG run."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id, task_id=task_id, key=key)
            .one_or_none()
        )
        return None if row is None else XComModel.deserialize_value(row)


# =====================================================================================================
# (end of the Airflow section; other fixtures go below)
# =====================================================================================================


def leak_token_into_errors(emu: Any, task_uuid: str) -> None:
    """Make the emulator quote the token in a task's errors, as Qarnot may when an error quotes the task's output."""
    backend = emu._ctx().backend
    with backend.lock:
        task = backend.tasks[task_uuid]
        task.errors.append({"code": "QE", "message": f"output was: token={emu.token}", "debug": emu.token})
        for inst in task.instances.values():
            if inst.error is not None:
                inst.error = {**inst.error, "message": f"{inst.error['message']} (saw {emu.token})"}
