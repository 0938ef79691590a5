"""The chaos suite's own checks, on made-up data: they must catch what they claim to catch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_provider_qarnot.emulator.faults import parse_fault_config
from tools import chaos

RUN = "manual__1"


def qtask(task_id: str, state: str, attempt: int = 1, uuid: str | None = None, map_index: int = -1) -> dict[str, Any]:
    labels = {
        "airflow_dag_id": chaos.PIPELINE,
        "airflow_task_id": task_id,
        "airflow_run_id": RUN,
        "airflow_map_index": str(map_index),
        "airflow_try_number": str(attempt),
    }
    return {"uuid": uuid or f"{task_id}-{attempt}-{state}", "state": state, "labels": labels}


def ti(task_id: str, state: str) -> dict[str, Any]:
    return {"dag_id": chaos.PIPELINE, "task_id": task_id, "dag_run_id": RUN, "map_index": -1, "state": state}


def test_a_consistent_run_passes() -> None:
    tasks = [qtask("compute", "Failure", 1), qtask("compute", "Success", 2), qtask("submit", "Failure")]
    tis = [ti("compute", "success"), ti("submit", "success"), ti("watch", "failed")]
    audit = chaos.judge(tasks, tis, dag_runs=1)
    assert (audit.duplicates, audit.orphaned_running, audit.wrong_outcomes) == (0, 0, 0), audit.details


def test_two_tasks_for_one_try_are_a_duplicate() -> None:
    tasks = [qtask("compute", "Success", 1, "a"), qtask("compute", "Success", 1, "b")]
    audit = chaos.judge(tasks, [ti("compute", "success")], dag_runs=1)
    assert audit.duplicates == 1
    assert "duplicate" in audit.details[0]


def test_a_still_running_task_is_an_orphan() -> None:
    audit = chaos.judge([qtask("compute", "FullyExecuting")], [ti("compute", "failed")], dag_runs=1)
    assert audit.orphaned_running == 1


@pytest.mark.parametrize(
    ("tasks", "tis"),
    [
        ([qtask("compute", "Failure")], [ti("compute", "success")]),
        ([qtask("compute", "Success", 1), qtask("compute", "Cancelled", 2)], [ti("compute", "success")]),
        ([qtask("compute", "Success")], [ti("compute", "failed")]),
        ([], [ti("compute", "success")]),
        ([], [ti("submit", "success")]),
        ([qtask("submit", "Success")], [ti("watch", "failed")]),
        ([qtask("submit", "Failure")], [ti("watch", "success")]),
        ([qtask("compute", "Success")], [ti("compute", "running")]),
    ],
)
def test_disagreements_are_wrong_outcomes(tasks: list[dict[str, Any]], tis: list[dict[str, Any]]) -> None:
    assert chaos.judge(tasks, tis, dag_runs=1).wrong_outcomes == 1


def test_token_is_found_in_files_and_texts(tmp_path: Path) -> None:
    token = chaos.make_token()
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "clean.log").write_text("nothing here")
    (tmp_path / "logs" / "leaky.log").write_text(f"Authorization: {token}")
    (tmp_path / "airflow.db").write_bytes(b"\x00binary" + token.encode() + b"\x00")
    leaks, files = chaos.find_token(token, [tmp_path], {"trigger #0": "{}", "trigger #1": f'{{"t": "{token}"}}'})
    assert sorted(leaks) == sorted([str(tmp_path / "logs" / "leaky.log"), str(tmp_path / "airflow.db"), "trigger #1"])
    assert len(files) == 3


def test_fault_rules_are_valid_and_fail_the_asked_share() -> None:
    rules, _, _ = parse_fault_config(chaos.fault_rules(0.2))
    assert rules[0].matches("GET", "/tasks") and not any(getattr(rules[0], n) for n in ("rate_503", "drop_after"))
    for rule in rules[1:]:
        total = sum(getattr(rule, n) for n in ("rate_429", "rate_503", "drop_before", "drop_after"))
        assert total == pytest.approx(0.2)
    assert rules[1].matches("POST", "/tasks") and rules[1].drop_after > 0


def test_a_fifth_of_the_runs_fail() -> None:
    assert sum(chaos.failing_runs(100, 0.2)) == 20
    assert sum(chaos.failing_runs(8, 0.2)) == 1


def test_the_fuzz_tests_referenced_exist() -> None:
    for test in chaos.FUZZ_TESTS:
        path, _, name = test.partition("::")
        text = (chaos.ROOT / path).read_text()
        assert "@given" in text
        assert not name or f"def {name}(" in text


def test_the_chaos_dags_parse() -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(chaos.DAGS_FOLDER))
    assert bag.import_errors == {}
    assert set(chaos.DAG_IDS) <= set(bag.dag_ids)
    assert {(dag_id, task_id) for dag_id, task_id in chaos.KINDS} <= {
        (dag.dag_id, task.task_id) for dag in bag.dags.values() for task in dag.tasks
    }
