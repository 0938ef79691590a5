"""Every example DAG parses with no import error, has docs, and uses the provider's operators."""

from __future__ import annotations

from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "dags_examples"


@pytest.fixture(scope="module")
def dagbag():  # type: ignore[no-untyped-def]
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(EXAMPLES))


def test_examples_import_cleanly(dagbag) -> None:  # type: ignore[no-untyped-def]
    assert dagbag.import_errors == {}
    assert {"qarnot_render_pipeline", "qarnot_parameter_sweep", "qarnot_retry_batch"} <= set(dagbag.dag_ids)


def test_examples_have_docs_and_qarnot_tasks(dagbag) -> None:  # type: ignore[no-untyped-def]
    for dag_id in ("qarnot_render_pipeline", "qarnot_parameter_sweep", "qarnot_retry_batch"):
        dag = dagbag.dags[dag_id]
        assert dag.doc_md and len(dag.doc_md) > 100
        assert any(t.task_type in ("QarnotSubmitTaskOperator", "QarnotTaskSensor") for t in dag.tasks)
