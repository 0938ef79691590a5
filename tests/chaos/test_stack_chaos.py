"""Faults, restarts, kills and user actions on a real Airflow stack: nothing lost, nothing left running.

Every test reads the same short chaos run (see `conftest.py`); `uv run python -m tools.chaos --long`
runs the same scenarios bigger.
"""

from __future__ import annotations

import pytest

from tools import chaos

pytestmark = pytest.mark.timeout(900)


def test_faulted_runs_end_as_their_qarnot_tasks(chaos_report: chaos.Report) -> None:
    """20% of API calls fail, some submits are acted on and then dropped: every run still ends as planned."""
    out = chaos_report.outcomes["faulted_runs"]
    assert out.ok, out.line()
    assert out.facts["runs"] == chaos.SHORT.pipeline_runs
    assert out.facts["failing_runs"] >= 1
    assert out.facts["faults"] >= 0.1 * out.facts["api_calls"] > 0
    assert out.facts["submits_acted_then_dropped"] >= 2


def test_retry_after_a_killed_worker_reattaches(chaos_report: chaos.Report) -> None:
    """SIGKILL of the task process after it submitted: the retry waits for the same Qarnot task."""
    out = chaos_report.outcomes["worker_kill"]
    assert out.ok, out.line()
    assert out.facts["killed_pids"] >= 1
    assert out.facts["tries"] == 2
    assert out.facts["qarnot_tasks"] == 1


def test_mark_failed_clear_and_timeouts_abort_the_qarnot_tasks(chaos_report: chaos.Report) -> None:
    """A deferred task marked failed or cleared has its Qarnot task aborted within 30 s; timeouts abort too."""
    out = chaos_report.outcomes["user_actions"]
    assert out.ok, out.line()
    assert out.facts["mark_failed_abort_s"] <= chaos.ABORT_WITHIN
    assert out.facts["clear_abort_s"] <= chaos.ABORT_WITHIN


def test_triggerer_kill_loses_and_aborts_nothing(chaos_report: chaos.Report) -> None:
    """SIGKILL of the triggerer with every task deferred: after a restart all complete, none is cancelled."""
    out = chaos_report.outcomes["triggerer_kill"]
    assert out.ok, out.line()
    assert out.facts["deferred"] == chaos.SHORT.deferred
    assert out.facts["run"] == "success"


def test_emulator_restart_loses_no_task(chaos_report: chaos.Report) -> None:
    """The emulator restarts (same URL, --state-dir) mid-run: its tasks survive and every Airflow task completes."""
    out = chaos_report.outcomes["emulator_restart"]
    assert out.ok, out.line()
    assert out.facts["tasks_before_restart"] >= 2
    assert set(out.facts["runs"].values()) == {"success"}


def test_no_duplicate_orphan_or_wrong_outcome(chaos_report: chaos.Report) -> None:
    """Over every run: one Qarnot task per try of a task instance, none left running, none disagreeing."""
    audit = chaos_report.audit
    assert audit.dag_runs >= chaos.SHORT.pipeline_runs + 4
    assert audit.qarnot_tasks >= audit.dag_runs
    assert (audit.duplicates, audit.orphaned_running, audit.wrong_outcomes) == (0, 0, 0), audit.line()


def test_token_appears_nowhere(chaos_report: chaos.Report) -> None:
    """The run's token is in no log file, DB row (XCom, rendered fields, trigger kwargs) or component log."""
    out = chaos_report.outcomes["secrets"]
    assert out.ok, out.line()
    assert chaos_report.numbers["token_leaks"] == 0
    assert out.facts["log_files"] > 10
    assert out.facts["trigger_rows"] >= chaos.SHORT.deferred


def test_every_process_was_stopped(chaos_report: chaos.Report) -> None:
    """The stack stopped on SIGTERM alone and left no process behind."""
    assert chaos_report.leftovers == []
    assert chaos_report.needed_sigkill == []
