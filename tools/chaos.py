"""The chaos suite (issue #7): API faults, restarts, kills and bad input, with nothing lost and nothing left running.

    uv run python -m tools.chaos --long     # 100 faulted DAG runs, 50 deferred tasks through a triggerer kill, ...
    uv run python -m tools.chaos --short    # the same scenarios, small (what tests/chaos/ runs)

One real Airflow stack (api-server, scheduler, dag-processor, triggerer on sqlite, LocalExecutor) and one
`qarnot-emulator --mode simulate` on fixed ports serve every stack scenario, with the DAGs of
`tools/chaos_dags/`:

1. `faulted_runs`: DAG runs of a 3-task DAG while ~20% of API calls fail (429, 503, dropped connections,
   `POST /tasks` acted on and then dropped); ~20% of the runs' Qarnot tasks fail on purpose.
2. `triggerer_kill`: restart the triggerer (SIGTERM), then SIGKILL it, while tasks are deferred; start it again.
3. `emulator_restart`: restart the emulator (`--state-dir`, same URL) in the middle of runs.
4. `user_actions`: mark a deferred task failed, clear another, let two `timeout`s pass.
5. `worker_kill`: SIGKILL a task process right after it submitted; the retry must reattach.
6. `bad_inputs`: a table of invalid arguments and connections, run in-process (no stack).
7. `secrets`: the run's recognisable token must appear in no log, DB row, trigger kwargs, exception or repr.
8. fuzzing: `FUZZ_TESTS` (hypothesis, fixed budgets) already cover the parsers; `--long` runs them again.

Then an audit over everything the stack did counts duplicates (two Qarnot tasks for one try of one
task instance, found by the `airflow_*` labels), orphans (Qarnot tasks still active after Airflow is
done), and wrong outcomes (a task instance whose final state disagrees with its last Qarnot task).
The last line printed is one JSON object; the exit status is 1 unless everything held.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import logging
import os
import re
import secrets
import signal
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from airflow_provider_qarnot.client import states
from tools.airflow_stack import LocalStack
from tools.processes import find_processes, free_port
from tools.tls import self_signed_certificate

if TYPE_CHECKING:
    from airflow_provider_qarnot.emulator import Emulator

ROOT = Path(__file__).resolve().parent.parent
DAGS_FOLDER = Path(__file__).resolve().parent / "chaos_dags"
TOKEN_PREFIX = "chaos-secret-"
PIPELINE, FANOUT, KILL, WORKER_KILL = "chaos_pipeline", "chaos_fanout", "chaos_kill", "chaos_worker_kill"
DAG_IDS = (PIPELINE, FANOUT, KILL, WORKER_KILL)
LABELS = ("airflow_dag_id", "airflow_task_id", "airflow_run_id", "airflow_map_index")
FINISHED_RUN = ("success", "failed")
#: Seconds a deferred task may take to have its Qarnot task aborted after a user action (the issue's bound).
ABORT_WITHIN = 30.0
#: What the scheduler logs when it applies a try's late executor event to the next try (see `stale_executor_events`).
STALE_EVENT = r"finished with state success, but the task instance's state attribute is (?:queued|running)"

#: How each task of the chaos DAGs relates to Qarnot, for the wrong-outcome audit:
#: "wait" ends like its own last Qarnot task, "submit" succeeds once it has one, "sensor" ends like the
#: Qarnot task of the task instance named in `SENSED`; tasks not listed own no Qarnot task.
KINDS: dict[tuple[str, str], str] = {
    (PIPELINE, "compute"): "wait",
    (PIPELINE, "submit"): "submit",
    (PIPELINE, "watch"): "sensor",
    (FANOUT, "wait"): "wait",
    (KILL, "to_fail"): "wait",
    (KILL, "to_clear"): "wait",
    (KILL, "times_out"): "wait",
    (KILL, "times_out_here"): "wait",
    (WORKER_KILL, "hold"): "wait",
}
SENSED = {(PIPELINE, "watch"): "submit"}

#: Airflow settings of the chaos stack: fast heartbeats and polling, a triggerer declared dead 10 s after
#: its last heartbeat (so a killed one's triggers move on quickly), a fixed Fernet key (to read trigger rows).
STACK_SETTINGS = {
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
    "AIRFLOW__SCHEDULER__MAX_TIS_PER_QUERY": "64",
    "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "5",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "90",
    "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
    "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
    "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "256",
    "AIRFLOW__CORE__MAX_ACTIVE_RUNS_PER_DAG": "64",
    "AIRFLOW__CORE__DEFAULT_POOL_TASK_SLOT_COUNT": "512",
    "AIRFLOW__QARNOT__SHARED_POLLING": "True",
}

#: The hypothesis tests that fuzz the client's response parsing and the emulator's request parsing.
FUZZ_TESTS = (
    "tests/client/test_models.py::test_parser_raises_only_qarnot_exceptions",
    "tests/client/test_models.py::test_error_message_never_raises",
    "tests/emulator/test_parsing_fuzz.py",
)


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is."""

    pipeline_runs: int
    deferred: int
    restart_tasks: int
    fault_rate: float = 0.2
    failure_share: float = 0.2
    concurrent_runs: int = 12
    parallelism: int = 8


SHORT = Sizes(pipeline_runs=8, deferred=20, restart_tasks=6)
LONG = Sizes(pipeline_runs=100, deferred=50, restart_tasks=20)


@dataclass
class Outcome:
    """What one scenario saw: `problems` is empty when everything it checks held."""

    name: str
    seconds: float = 0.0
    facts: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def expect(self, condition: bool, problem: str) -> None:
        """Record `problem` unless `condition` holds."""
        if not condition:
            self.problems.append(problem)

    def line(self) -> str:
        facts = " ".join(f"{k}={v}" for k, v in self.facts.items() if not isinstance(v, list | dict))
        status = "ok  " if self.ok else "FAIL"
        text = f"[{status}] {self.name:<17} {self.seconds:6.1f}s  {facts}"
        return text + "".join(f"\n         - {p}" for p in self.problems)


def make_token() -> str:
    """A recognisable API token for one chaos run (what the leak scan looks for)."""
    return TOKEN_PREFIX + secrets.token_hex(12)


def poll(condition: Callable[[], Any], timeout: float, interval: float = 0.5, what: str = "a condition") -> Any:
    """Call `condition` until it returns something truthy; TimeoutError names `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:.0f}s")
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------------
# Qarnot tasks seen through their labels


def ti_key_of_task(task: Mapping[str, Any]) -> tuple[str, str, str, int] | None:
    """(dag_id, task_id, run_id, map_index) of the task instance that submitted a Qarnot task."""
    labels = task.get("labels") or {}
    if not all(k in labels for k in LABELS):
        return None
    return (labels[LABELS[0]], labels[LABELS[1]], labels[LABELS[2]], int(labels[LABELS[3]]))


def try_of_task(task: Mapping[str, Any]) -> int:
    """The try number that submitted a Qarnot task (0 when unlabelled)."""
    try:
        return int((task.get("labels") or {}).get("airflow_try_number", 0))
    except ValueError:
        return 0


def ti_key(ti: Mapping[str, Any]) -> tuple[str, str, str, int]:
    """The same key for a task instance as the REST API shows it."""
    map_index = ti.get("map_index")
    return (ti["dag_id"], ti["task_id"], ti["dag_run_id"], -1 if map_index is None else int(map_index))


def tasks_by_ti(tasks: list[dict[str, Any]]) -> dict[tuple[str, str, str, int], list[dict[str, Any]]]:
    """Qarnot tasks grouped by task instance, oldest try first."""
    grouped: dict[tuple[str, str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for task in tasks:
        key = ti_key_of_task(task)
        if key is not None:
            grouped[key].append(task)
    for group in grouped.values():
        group.sort(key=lambda t: (try_of_task(t), str(t.get("creationDate", ""))))
    return grouped


def airflow_state_of(qarnot_state: str | None) -> str | None:
    """The final Airflow state a waiting task must have for a final Qarnot state (None: not final)."""
    if qarnot_state == states.SUCCESS:
        return "success"
    if qarnot_state in (states.FAILURE, states.CANCELLED):
        return "failed"
    return None


# ---------------------------------------------------------------------------------------------------
# The stack


class ChaosStack:
    """A `LocalStack` with the chaos DAGs, the emulator in simulate mode on fixed ports, and a record of the runs."""

    def __init__(self, root: Path, token: str, parallelism: int = 8) -> None:
        from cryptography.fernet import Fernet

        self.token = token
        self.fernet_key = Fernet.generate_key().decode()
        settings = {**STACK_SETTINGS, "AIRFLOW__CORE__FERNET_KEY": self.fernet_key}
        self.stack = LocalStack(root, DAGS_FOLDER, token, parallelism=parallelism, extra_env=settings)
        self.runs: list[tuple[str, str]] = []
        #: Faults injected by emulator processes that have been restarted since (their counters are gone).
        self.faults_before_restarts = 0
        #: Decrypted kwargs of trigger rows seen while tasks were deferred (scanned for the token).
        self.trigger_kwargs: list[str] = []
        self.started_at = time.monotonic()

    def start(self) -> None:
        """Start the emulator (simulate mode, fixed ports) and Airflow; wait until every chaos DAG is parsed."""
        stack = self.stack
        stack.reset()
        stack.start_emulator("--mode", "simulate", "--sim-duration", "2", port=free_port(), storage_port=free_port())
        stack.migrate()
        stack.enable_sqlite_wal()
        stack.start_airflow()
        stack.wait_until_healthy()
        for dag_id in DAG_IDS:
            stack.wait_for_dag(dag_id)

    def stop(self) -> list[str]:
        """Stop every process; returns the names of those that needed SIGKILL."""
        return self.stack.stop()

    # ------------------------------------------------------------------ runs

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None) -> str:
        """Start a DAG run and remember it for the audit.

        The run id is chosen here, so a POST answered 5xx (a busy sqlite DB) is simply sent again: a 409
        then means the first one did create the run.
        """
        run_id = f"chaos_{len(self.runs):04d}_{secrets.token_hex(3)}"
        for attempt in range(5):
            try:
                self.stack.trigger(dag_id, conf, run_id=run_id)
                break
            except requests.HTTPError as exc:
                status = exc.response.status_code if exc.response is not None else 0
                if status == 409 and attempt > 0:
                    break
                if status < 500 or attempt == 4:
                    raise
                time.sleep(1)
        self.runs.append((dag_id, run_id))
        return run_id

    def run_states(self, dag_id: str) -> dict[str, str]:
        """run_id -> state of every run of a DAG."""
        return {r["dag_run_id"]: r["state"] for r in self.stack.dag_runs(dag_id)}

    def wait_for_runs(self, runs: list[tuple[str, str]], timeout: float) -> dict[str, str]:
        """Wait until every run in `runs` is success or failed; returns run_id -> state."""
        wanted = defaultdict(set)
        for dag_id, run_id in runs:
            wanted[dag_id].add(run_id)

        def finished() -> dict[str, str] | None:
            self.stack._check_services_alive()
            seen: dict[str, str] = {}
            for dag_id, run_ids in wanted.items():
                current = self.run_states(dag_id)
                seen.update({r: current.get(r, "missing") for r in run_ids})
            return seen if all(s in FINISHED_RUN for s in seen.values()) else None

        return dict(poll(finished, timeout, interval=1.0, what=f"the end of {len(runs)} DAG run(s)"))

    def task_instances(self, dag_id: str, run_id: str = "~") -> list[dict[str, Any]]:
        return self.stack.all_task_instances(dag_id, run_id)

    # ------------------------------------------------------------------ Qarnot side

    def qarnot_tasks(self) -> list[dict[str, Any]]:
        return self.stack.emulator_tasks()

    def faults_injected(self) -> int:
        """Faults injected so far, across emulator restarts."""
        return self.faults_before_restarts + int(self.stack.emulator_stats().get("faults_injected", 0))

    def restart_emulator(self) -> None:
        """Restart the emulator (SIGTERM, same ports and state dir), keeping the fault count."""
        self.faults_before_restarts += int(self.stack.emulator_stats().get("faults_injected", 0))
        self.stack.restart_emulator()

    def _query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Read the metadata DB (read-only; Airflow keeps writing it)."""
        db = self.stack.home / "airflow.db"
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as conn:
            return list(conn.execute(sql, args).fetchall())

    def newest_triggerer_job(self) -> int:
        """The id of the newest triggerer job (each triggerer process is one)."""
        rows = self._query("SELECT MAX(id) FROM job WHERE job_type = 'TriggererJob'")
        return int(rows[0][0] or 0)

    def triggers_served_after(self, job_id: int) -> int:
        """How many trigger rows a triggerer newer than job `job_id` has taken."""
        return int(self._query("SELECT COUNT(*) FROM trigger WHERE triggerer_id > ?", job_id)[0][0])

    def task_runner_pids(self, ti_id: str) -> list[int]:
        """The task process running a task instance (its title is `airflow worker -- <ti id>`)."""
        return find_processes(f"airflow worker -- {ti_id}")

    # ------------------------------------------------------------------ secrets

    def sample_trigger_kwargs(self) -> int:
        """Decrypt every trigger row now in the DB and keep its kwargs for the token scan; returns how many."""
        from cryptography.fernet import Fernet

        fernet = Fernet(self.fernet_key.encode())
        rows = self._query("SELECT kwargs FROM trigger")
        for (raw,) in rows:
            text = raw if raw.startswith("{") else fernet.decrypt(raw.encode()).decode()
            self.trigger_kwargs.append(text)
        return len(rows)


def task_log(stack: LocalStack, dag_id: str, run_id: str, task_id: str, attempt: int | str) -> str:
    """The task log of one try (`*`: of every task or try), as the workers and the triggerer wrote it."""
    path = stack.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
    return "\n".join(
        p.read_text(errors="replace") for p in sorted(path.glob(f"task_id={task_id}/attempt={attempt}.log*"))
    )


def stale_executor_events(stack: LocalStack) -> int:
    """How often the scheduler applied a task's late executor event to its next try (an Airflow 3.3 race).

    When a trigger fires very soon after a task deferred, the deferring try's "success" event can reach
    the scheduler after the resumed try was queued or started; the scheduler then fails that try
    ("task-state-changed-externally"). Retries plus reattach-on-retry absorb it; this counts it.
    """
    log = stack.logs / "scheduler.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    return len(
        re.findall(r"finished with state success, but the task instance's state attribute is (?:queued|running)", text)
    )


# ---------------------------------------------------------------------------------------------------
# 1. DAG runs under API faults


def fault_rules(rate: float) -> list[dict[str, Any]]:
    """`rate` of the provider's API calls fail: 429, 503, connections dropped before or after acting.

    `GET /tasks` (which the provider never calls) is exempt: it is how this suite looks at the tasks.
    """
    quarter = rate / 4
    return [
        {"pattern": "GET /tasks"},
        {
            "pattern": "POST /tasks",
            "rate_429": quarter,
            "rate_503": quarter,
            "drop_after": 2 * quarter,
            "retry_after": 0.2,
        },
        {
            "pattern": "*",
            "rate_429": quarter,
            "rate_503": quarter,
            "drop_before": quarter,
            "drop_after": quarter,
            "retry_after": 0.2,
        },
    ]


def failing_runs(count: int, share: float) -> list[bool]:
    """Which of `count` runs get Qarnot tasks that fail: `share` of them, spread out."""
    return [int((i + 1) * share) > int(i * share) for i in range(count)]


def scenario_faulted_runs(
    chaos: ChaosStack, runs: int, rate: float = 0.2, share: float = 0.2, concurrent: int = 12
) -> Outcome:
    """N runs of the 3-task DAG under API faults; each task instance must end as its Qarnot task did.

    The first `POST /tasks` calls are all acted on and then dropped (so that case surely happens, even in
    a short run); then `rate` of every call fails at random (seeded). `share` of the runs make their
    Qarnot tasks fail; at most `concurrent` runs are unfinished at a time.
    """
    out = Outcome("faulted_runs")
    started = time.monotonic()
    stack = chaos.stack
    before = chaos.faults_injected()
    calls_before = _provider_calls(stack.emulator_stats())
    dropped_first = max(2, runs // 4)
    first = {"pattern": "POST /tasks", "drop_after": 1.0, "max_faults": dropped_first}
    stack.set_emulator_faults([first, *fault_rules(rate)[2:]], seed=7)
    plan = failing_runs(runs, share)
    run_ids: list[str] = []
    switched = False
    deadline = time.monotonic() + 300 + 10 * runs
    try:
        while True:  # at most `concurrent` runs unfinished at once: sqlite serialises every write
            current = chaos.run_states(PIPELINE)
            unfinished = [r for r in run_ids if current.get(r) not in FINISHED_RUN]
            while len(run_ids) < runs and len(unfinished) < concurrent:
                fail = plan[len(run_ids)]
                run_ids.append(chaos.trigger(PIPELINE, {"outcome": "failure" if fail else "success"}))
                unfinished.append(run_ids[-1])
            if not switched and stack.emulator_stats()["requests"].get("POST /tasks", 0) >= dropped_first:
                stack.set_emulator_faults(fault_rules(rate), seed=7)
                switched = True
            if not unfinished and len(run_ids) == runs:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(unfinished)} of {runs} runs still unfinished")
            time.sleep(1)
    finally:
        stack.clear_emulator_faults()
    run_states = {r: current[r] for r in run_ids}
    stats = stack.emulator_stats()
    logs = "\n".join(task_log(stack, PIPELINE, run_id, "*", "*") for run_id in run_ids)
    out.facts.update(
        runs=runs,
        failing_runs=sum(plan),
        api_calls=_provider_calls(stats) - calls_before,
        faults=chaos.faults_injected() - before,
        submits_acted_then_dropped=logs.count("it did create task"),
        fault_kinds=stats.get("faults", {}),
    )
    out.expect(
        out.facts["submits_acted_then_dropped"] >= dropped_first,
        f"only {out.facts['submits_acted_then_dropped']} submits were dropped after creating their task",
    )
    tis: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for ti in chaos.task_instances(PIPELINE):
        tis[ti["dag_run_id"]][ti["task_id"]] = ti
    owned = tasks_by_ti(chaos.qarnot_tasks())
    for run_id, fail in zip(run_ids, plan, strict=True):
        expected = (
            {"compute": "failed", "submit": "success", "watch": "failed"}
            if fail
            else dict.fromkeys(("compute", "submit", "watch"), "success")
        )
        got = {task_id: ti.get("state") for task_id, ti in tis[run_id].items()}
        out.expect(got == expected, f"run {run_id} ({'failure' if fail else 'success'}): {got}, expected {expected}")
        out.expect(run_states[run_id] == ("failed" if fail else "success"), f"run {run_id} is {run_states[run_id]}")
        if fail:  # each try of compute that submitted owns one Qarnot task, and every one of them failed
            compute = owned.get((PIPELINE, "compute", run_id, -1), [])
            tries = int(tis[run_id]["compute"].get("try_number") or 0)
            labels = [try_of_task(t) for t in compute]
            out.expect(
                bool(compute)
                and all(t["state"] == states.FAILURE for t in compute)
                and labels == sorted(set(labels))
                and set(labels) <= set(range(1, tries + 1)),
                f"run {run_id}: compute's {tries} tries own {[(try_of_task(t), t['state']) for t in compute]}",
            )
    out.expect(out.facts["faults"] > 0, "no fault was injected")
    out.seconds = time.monotonic() - started
    return out


def _provider_calls(stats: Mapping[str, Any]) -> int:
    """API calls the emulator served, but for `GET /tasks` (only this suite sends it)."""
    return int(stats.get("requests_total", 0)) - int(stats.get("requests", {}).get("GET /tasks", 0))


# ---------------------------------------------------------------------------------------------------
# 2. Triggerer killed while tasks are deferred


def deferred_with_active_task(chaos: ChaosStack, run_id: str, count: int) -> bool:
    """Whether `count` mapped tasks of the fan-out run are deferred, each with an active Qarnot task."""
    tis = [t for t in chaos.task_instances(FANOUT, run_id) if t["task_id"] == "wait"]
    if sum(1 for t in tis if t.get("state") == "deferred") < count:
        return False
    owned = tasks_by_ti(chaos.qarnot_tasks())
    active = [k for k, ts in owned.items() if k[2] == run_id and states.is_active(ts[-1]["state"])]
    return len(active) >= count


def scenario_triggerer_kill(chaos: ChaosStack, deferred: int) -> Outcome:
    """Restart the triggerer gracefully (a deploy), then SIGKILL it, while `deferred` tasks wait in it.

    After it is started again every task completes and no Qarnot task is aborted: neither a shutdown nor
    a crash is a user's kill.
    """
    out = Outcome("triggerer_kill")
    started = time.monotonic()
    duration = max(60, 2 * deferred + 20)
    run_id = chaos.trigger(FANOUT, {"count": deferred, "duration": str(duration)})
    poll(
        lambda: deferred_with_active_task(chaos, run_id, deferred),
        timeout=60 + 3 * deferred,
        interval=1.0,
        what=f"{deferred} deferred tasks with running Qarnot tasks",
    )
    out.facts["trigger_rows"] = chaos.sample_trigger_kwargs()
    old_job = chaos.newest_triggerer_job()
    restarted_at = time.monotonic()
    chaos.stack.restart("triggerer")
    poll(
        lambda: chaos.triggers_served_after(old_job) >= deferred,
        timeout=120,
        interval=1.0,
        what="the restarted triggerer taking every trigger over",
    )
    out.facts["takeover_s"] = round(time.monotonic() - restarted_at, 1)
    out.expect(deferred_with_active_task(chaos, run_id, deferred), "tasks ended before the kill: raise their duration")
    killed_at = time.monotonic()
    chaos.stack.restart("triggerer", hard=True)
    state = chaos.wait_for_runs([(FANOUT, run_id)], timeout=duration + 240)[run_id]
    out.facts.update(deferred=deferred, recovered_in=round(time.monotonic() - killed_at, 1), run=state)
    tis = [t for t in chaos.task_instances(FANOUT, run_id) if t["task_id"] == "wait"]
    owned = tasks_by_ti(chaos.qarnot_tasks())
    mine = [t for k, ts in owned.items() if k[2] == run_id for t in ts]
    out.expect(state == "success", f"the fan-out run ended {state}")
    out.expect(len(tis) == deferred and all(t["state"] == "success" for t in tis), "not every deferred task succeeded")
    out.expect(all(int(t.get("try_number") or 0) == 1 for t in tis), "some task needed a retry")
    out.expect(len(mine) == deferred, f"{len(mine)} Qarnot tasks for {deferred} task instances")
    cancelled = [t["uuid"] for t in mine if t["state"] == states.CANCELLED]
    out.expect(not cancelled, f"{len(cancelled)} Qarnot task(s) were aborted: {cancelled[:5]}")
    out.seconds = time.monotonic() - started
    return out


# ---------------------------------------------------------------------------------------------------
# 3. Emulator restarted in the middle of runs


def scenario_emulator_restart(chaos: ChaosStack, tasks: int) -> Outcome:
    """Restart the emulator while tasks are being submitted and polled: no task is lost, every run completes."""
    out = Outcome("emulator_restart")
    started = time.monotonic()
    fan = chaos.trigger(FANOUT, {"count": tasks, "duration": "12"})
    pipe = chaos.trigger(PIPELINE, {"outcome": "success", "duration": "8"})

    def mine() -> list[dict[str, Any]]:
        return [t for k, ts in tasks_by_ti(chaos.qarnot_tasks()).items() if k[2] in (fan, pipe) for t in ts]

    poll(lambda: len(mine()) >= max(2, tasks // 2), timeout=120, interval=0.3, what="half of the Qarnot tasks")
    before = {t["uuid"]: t["state"] for t in mine()}
    chaos.restart_emulator()
    after_restart = {t["uuid"] for t in chaos.qarnot_tasks()}
    run_states = chaos.wait_for_runs([(FANOUT, fan), (PIPELINE, pipe)], timeout=300)
    final = mine()
    lost = sorted(set(before) - after_restart)
    out.facts.update(tasks_before_restart=len(before), qarnot_tasks=len(final), runs=run_states)
    out.expect(not lost, f"tasks lost by the restart: {lost}")
    out.expect(set(run_states.values()) == {"success"}, f"runs ended {run_states}")
    tis = chaos.task_instances(FANOUT, fan) + chaos.task_instances(PIPELINE, pipe)
    out.expect(all(t["state"] == "success" for t in tis), "not every task instance succeeded")
    out.expect(all(t["state"] == states.SUCCESS for t in final), "not every Qarnot task succeeded")
    out.seconds = time.monotonic() - started
    return out


# ---------------------------------------------------------------------------------------------------
# 4. A user marks, clears; a timeout passes


def _ti_tasks(chaos: ChaosStack, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
    return tasks_by_ti(chaos.qarnot_tasks()).get((dag_id, task_id, run_id, -1), [])


def _seconds_until_cancelled(chaos: ChaosStack, uuid: str, limit: float) -> float | None:
    """Seconds until Qarnot task `uuid` is Cancelled, or None if it is not within `limit` seconds."""
    started = time.monotonic()
    try:
        poll(
            lambda: any(t["uuid"] == uuid and t["state"] == states.CANCELLED for t in chaos.qarnot_tasks()),
            timeout=limit,
            interval=0.5,
            what=f"the abort of {uuid}",
        )
    except TimeoutError:
        return None
    return round(time.monotonic() - started, 1)


def scenario_user_actions(chaos: ChaosStack) -> Outcome:
    """Mark failed and clear while deferred, and two timeouts: every Qarnot task is aborted."""
    out = Outcome("user_actions")
    started = time.monotonic()
    stack = chaos.stack
    run_id = chaos.trigger(KILL)

    def waiting_in_the_triggerer() -> bool:
        """Both deferred, with their trigger running (a user acting on a task sees it so); marking a task
        failed before any triggerer has started its trigger never reaches `on_kill` (Airflow 3.3)."""
        tis = {t["task_id"]: t["state"] for t in chaos.task_instances(KILL, run_id)}
        for task_id in ("to_fail", "to_clear"):
            owned = _ti_tasks(chaos, KILL, run_id, task_id)
            if tis.get(task_id) != "deferred" or not owned:
                return False
            if f"Waiting for Qarnot task {owned[0]['uuid']}" not in task_log(stack, KILL, run_id, task_id, 1):
                return False
        return True

    poll(waiting_in_the_triggerer, timeout=120, interval=0.5, what="to_fail and to_clear waiting in the triggerer")
    chaos.sample_trigger_kwargs()
    to_fail = _ti_tasks(chaos, KILL, run_id, "to_fail")[0]["uuid"]
    to_clear = _ti_tasks(chaos, KILL, run_id, "to_clear")[0]["uuid"]
    stack.patch_task_instance_state(KILL, run_id, "to_fail", "failed")
    out.facts["mark_failed_abort_s"] = _seconds_until_cancelled(chaos, to_fail, ABORT_WITHIN)
    stack.clear_task_instances(KILL, run_id, ["to_clear"])
    out.facts["clear_abort_s"] = _seconds_until_cancelled(chaos, to_clear, ABORT_WITHIN)
    out.expect(out.facts["mark_failed_abort_s"] is not None, f"marked failed: {to_fail} not aborted in 30 s")
    out.expect(out.facts["clear_abort_s"] is not None, f"cleared: {to_clear} not aborted in 30 s")
    chaos.wait_for_runs([(KILL, run_id)], timeout=240)
    tis = {t["task_id"]: t for t in chaos.task_instances(KILL, run_id)}
    got = {k: v["state"] for k, v in tis.items()}
    expected = {"to_fail": "failed", "to_clear": "success", "times_out": "failed", "times_out_here": "failed"}
    out.expect(got == expected, f"task states {got}, expected {expected}")
    cleared = _ti_tasks(chaos, KILL, run_id, "to_clear")
    out.expect(
        [t["state"] for t in cleared] == [states.CANCELLED, states.SUCCESS],
        f"to_clear's Qarnot tasks: {[(try_of_task(t), t['state']) for t in cleared]}",
    )
    for task_id in ("times_out", "times_out_here"):
        owned = _ti_tasks(chaos, KILL, run_id, task_id)
        out.expect(
            len(owned) == 1 and owned[0]["state"] == states.CANCELLED,
            f"{task_id}: Qarnot tasks {[t['state'] for t in owned]}, expected one Cancelled",
        )
        log = task_log(stack, KILL, run_id, task_id, 1)
        out.expect(
            re.search(r"Timeout: Qarnot task \S+ was still \w+.*aborted", log) is not None,
            f"{task_id}: its log does not say it timed out and aborted the task",
        )
    out.seconds = time.monotonic() - started
    return out


# ---------------------------------------------------------------------------------------------------
# 5. Worker killed right after it submitted


def scenario_worker_kill(chaos: ChaosStack) -> Outcome:
    """SIGKILL the task process of a task waiting on the worker; its retry reattaches to the same Qarnot task."""
    out = Outcome("worker_kill")
    started = time.monotonic()
    stack = chaos.stack
    run_id = chaos.trigger(WORKER_KILL, {"duration": "25"})
    uuid = poll(
        lambda: next((t["uuid"] for t in _ti_tasks(chaos, WORKER_KILL, run_id, "hold")), None),
        timeout=120,
        interval=0.2,
        what="the submit of hold",
    )
    ti_id = stack.task_instance(WORKER_KILL, run_id, "hold")["id"]
    pids = poll(lambda: chaos.task_runner_pids(ti_id), timeout=30, interval=0.2, what="hold's task process")
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    out.facts["killed_pids"] = len(pids)
    state = chaos.wait_for_runs([(WORKER_KILL, run_id)], timeout=240)[run_id]
    ti = stack.task_instance(WORKER_KILL, run_id, "hold")
    owned = _ti_tasks(chaos, WORKER_KILL, run_id, "hold")
    out.facts.update(run=state, tries=ti.get("try_number"), qarnot_tasks=len(owned))
    out.expect(state == "success" and ti["state"] == "success", f"run {state}, hold {ti['state']}")
    out.expect(ti.get("try_number") == 2, f"hold ran {ti.get('try_number')} tries, expected 2 (killed, then retried)")
    out.expect([t["uuid"] for t in owned] == [uuid], f"hold owns {[t['uuid'] for t in owned]}, expected only {uuid}")
    out.expect(stack.xcom(WORKER_KILL, run_id, "hold") == uuid, "the retry did not return the first try's task")
    out.expect("Reattached to Qarnot task" in task_log(stack, WORKER_KILL, run_id, "hold", 2), "no reattach logged")
    out.seconds = time.monotonic() - started
    return out


# ---------------------------------------------------------------------------------------------------
# The audit: duplicates, orphans, wrong outcomes


@dataclass
class Audit:
    """The invariants over everything the stack did."""

    dag_runs: int = 0
    qarnot_tasks: int = 0
    duplicates: int = 0
    orphaned_running: int = 0
    wrong_outcomes: int = 0
    stale_executor_events: int = 0
    details: list[str] = field(default_factory=list)

    def line(self) -> str:
        numbers = {k: v for k, v in self.__dict__.items() if k != "details"}
        ok = not (self.duplicates or self.orphaned_running or self.wrong_outcomes)
        text = f"[{'ok  ' if ok else 'FAIL'}] audit  " + " ".join(f"{k}={v}" for k, v in numbers.items())
        return text + "".join(f"\n         - {d}" for d in self.details[:50])


def judge(tasks: list[dict[str, Any]], tis: list[dict[str, Any]], dag_runs: int) -> Audit:
    """The invariants, from every Qarnot task (as `GET /tasks` shows them) and every task instance (REST API).

    - duplicate: a second Qarnot task for one try of one task instance (by the `airflow_*` labels);
    - orphan: a Qarnot task that is not final (the caller gives Airflow time to be done first);
    - wrong outcome: a finished task instance that disagrees with its last Qarnot task (see `KINDS`).
    """
    result = Audit(dag_runs=dag_runs, qarnot_tasks=len(tasks))
    orphans = [t for t in tasks if not states.is_final(t["state"])]
    result.orphaned_running = len(orphans)
    result.details += [f"orphan: {t['uuid']} {t['state']} {t.get('labels')}" for t in orphans]
    per_try = Counter((ti_key_of_task(t), try_of_task(t)) for t in tasks if ti_key_of_task(t) is not None)
    for (key, attempt), count in sorted(per_try.items(), key=str):
        if count > 1:
            result.duplicates += count - 1
            result.details.append(f"duplicate: {count} Qarnot tasks for {key} try {attempt}")
    owned = tasks_by_ti(tasks)
    for ti in tis:
        key = ti_key(ti)
        kind = KINDS.get(key[:2])
        if kind is None:
            continue
        watched = (key[0], SENSED[key[:2]], key[2], key[3]) if kind == "sensor" else key
        mine = owned.get(watched, [])
        problem = outcome_problem(kind, str(ti.get("state")), mine)
        if problem:
            result.wrong_outcomes += 1
            result.details.append(f"wrong outcome: {key}: {problem}")
    return result


def outcome_problem(kind: str, state: str, mine: list[dict[str, Any]]) -> str | None:
    """Why a finished task instance in `state` disagrees with `mine`, the Qarnot tasks it owns (or watches).

    "wait" and "sensor" must end like the last of them (success for Success, failed for Failure or
    Cancelled; failing before any Qarnot task exists is fine); "submit" succeeds exactly when it has one.
    """
    if state not in ("success", "failed"):
        return None if state in ("upstream_failed", "skipped") else f"ended {state}"
    if kind == "submit":
        return None if (state == "success") == bool(mine) else f"{state} with {len(mine)} Qarnot task(s)"
    if not mine:
        return None if state == "failed" else "success without any Qarnot task"
    expected = airflow_state_of(mine[-1]["state"])
    return None if expected == state else f"{state}, but its last Qarnot task is {mine[-1]['state']}"


def audit(chaos: ChaosStack, settle: float = 15.0) -> Audit:
    """`judge` everything the stack did, once every recorded run has ended.

    Waits up to `settle` more seconds for Qarnot tasks that legitimately outlive their Airflow task (a
    `wait_for_completion=False` submit); whatever is still active then is an orphan.
    """
    chaos.wait_for_runs(chaos.runs, timeout=300)
    with contextlib.suppress(TimeoutError):
        poll(lambda: all(states.is_final(t["state"]) for t in chaos.qarnot_tasks()), timeout=settle, interval=1.0)
    recorded = set(chaos.runs)
    dag_ids = sorted({dag_id for dag_id, _ in recorded})
    tis = [ti for d in dag_ids for ti in chaos.task_instances(d) if (ti["dag_id"], ti["dag_run_id"]) in recorded]
    result = judge(chaos.qarnot_tasks(), tis, len(chaos.runs))
    result.stale_executor_events = stale_executor_events(chaos.stack)
    return result


# ---------------------------------------------------------------------------------------------------
# 6. Bad input, in-process


@dataclass(frozen=True)
class BadInput:
    """One invalid argument or connection, and what the user must be told.

    :param build: keyword arguments of the operator (or, with `sensor=True`, the sensor) to run.
    :param message: a regular expression the error must match (it names the problem).
    :param fail_fast: the error must be AirflowFailException (no retry can help); False: plain
        AirflowException (a retry may help); None: either.
    :param calls: whether the emulator may see API calls (False: validation must suffice).
    :param conn: the Airflow connection `qarnot_bad` for this case, as JSON fields (None: the good one).
    :param params: template context `params` (the arguments hold templates).
    """

    name: str
    build: Mapping[str, Any]
    message: str
    fail_fast: bool | None = True
    calls: bool = False
    conn: Mapping[str, Any] | None = None
    sensor: bool = False
    params: Mapping[str, Any] | None = None


GOOD = {"profile": "docker-batch", "instance_count": 1, "constants": {"EMULATOR_DURATION_S": "1"}}

BAD_INPUTS: tuple[BadInput, ...] = (
    BadInput("empty name", {"name": ""}, r"name must be a non-empty string"),
    BadInput("name not a string", {"name": 42}, r"name must be a non-empty string"),
    BadInput("instance_count 0", {"instance_count": 0}, r"instance_count must be at least 1"),
    BadInput("instance_count negative", {"instance_count": -3}, r"instance_count must be at least 1"),
    BadInput("instance_count absurd", {"instance_count": 10**9}, r"instance_count must be at most"),
    BadInput("instance_count not a number", {"instance_count": "many"}, r"instance_count must be an integer"),
    BadInput(
        "count and ranges", {"instance_count": 2, "advanced_ranges": "0-3"}, r"either instance_count or advanced_ranges"
    ),
    BadInput("neither count nor ranges", {"instance_count": None}, r"one of instance_count or advanced_ranges"),
    BadInput("range backwards", {"instance_count": None, "advanced_ranges": "5-1"}, r"advanced_ranges: range .*ends"),
    BadInput("range not a number", {"instance_count": None, "advanced_ranges": "1,x"}, r"advanced_ranges: 'x'"),
    BadInput("range empty", {"instance_count": None, "advanced_ranges": " "}, r"advanced_ranges must be a non-empty"),
    BadInput("unknown profile", {"profile": "no-such-profile"}, r"(?s)MissingProfile.*no-such-profile", calls=True),
    BadInput("no profile", {"profile": None}, r"profile is required"),
    BadInput("constant not a str", {"constants": {"N": 4}}, r"constants\['N'\] must be a str"),
    BadInput("constant key not a str", {"constants": {1: "a"}}, r"constants: every key must be a non-empty str"),
    BadInput("constants not a mapping", {"constants": ["a=b"]}, r"constants must be a mapping of str to str"),
    BadInput("constants not JSON", {"constants": "{DOCKER_CMD: true"}, r"constants is a string that is neither JSON"),
    BadInput("missing bucket", {"resources": ["chaos-no-such-bucket"]}, r"chaos-no-such-bucket", calls=True),
    BadInput("tag with a comma", {"tags": ["a,b"]}, r"contains a comma"),
    BadInput("labels not a mapping", {"labels": ["x"]}, r"labels must be a mapping"),
    BadInput("bad results regex", {"results_whitelist": "("}, r"results_whitelist is not a valid regular expression"),
    BadInput("unknown scheduling type", {"scheduling_type": "Sometimes"}, r"scheduling_type must be one of"),
    BadInput("poll_interval zero", {"poll_interval": 0}, r"poll_interval must be a positive"),
    BadInput("poll_interval absurd", {"poll_interval": 10**7}, r"poll_interval must be at most"),
    BadInput("poll_interval not a number", {"poll_interval": "often"}, r"poll_interval must be a number"),
    BadInput("timeout zero", {"timeout": 0}, r"timeout must be a positive"),
    BadInput("timeout negative", {"timeout": -60}, r"timeout must be a positive"),
    BadInput("timeout infinite", {"timeout": float("inf")}, r"timeout must be a positive, finite"),
    BadInput("timeout absurd", {"timeout": 10**15}, r"timeout must be at most"),
    BadInput(
        "template renders a float count", {"instance_count": "{{ params.n }}"}, r"instance_count", params={"n": 2.5}
    ),
    BadInput(
        "template renders a list of constants",
        {"constants": "{{ params.c }}"},
        r"constants must be a mapping",
        params={"c": [1, 2]},
    ),
    BadInput(
        "download without waiting",
        {"wait_for_completion": False, "download_results_to": "/tmp/x"},
        r"download_results_to needs wait_for_completion=True",
    ),
    BadInput("missing connection", {"qarnot_conn_id": "chaos_no_such_conn"}, r"chaos_no_such_conn", fail_fast=None),
    BadInput("connection without token", {}, r"no API token", conn={"password": ""}),
    BadInput("connection host not a URL", {}, r"host must be an API URL", conn={"host": "ftp://{host}"}),
    BadInput("connection host bad port", {}, r"invalid port", conn={"host": "http://127.0.0.1:99999"}),
    BadInput("connection plain http remote", {}, r"plain http", conn={"host": "http://api.qarnot.example"}),
    BadInput("connection extra not JSON", {}, r"extra is not valid JSON", conn={"extra": "{verify: no"}),
    BadInput("connection extra not an object", {}, r"extra must be a JSON object", conn={"extra": "[1, 2]"}),
    BadInput("connection extra bad timeout", {}, r"extra field 'timeout'", conn={"extra": {"timeout": "-1"}}),
    BadInput("connection extra bad verify", {}, r"extra field 'verify'", conn={"extra": {"verify": "/no/such/ca.pem"}}),
    BadInput("connection token in extra", {}, r"put the API token in the password", conn={"extra": {"token": "x"}}),
    BadInput(
        "unreachable host",
        {},
        r"(?i)connect.*(refused|gave up)|gave up.*connect",
        fail_fast=False,
        conn={"host": "http://127.0.0.1:{closed_port}"},
    ),
    BadInput("bad token", {}, r"rejected the token", calls=True, conn={"password": "{wrong_token}"}),
    BadInput(
        "self-signed certificate",
        {},
        r"(?i)certificate verif",
        conn={"host": "https://127.0.0.1:{tls_port}"},
    ),
    BadInput("sensor without uuid", {"task_uuid": "  "}, r"task_uuid must be a non-empty", sensor=True),
    BadInput("sensor unknown task", {"task_uuid": "0000-no-such-task"}, r"0000-no-such-task", sensor=True, calls=True),
    BadInput(
        "sensor poke_interval zero",
        {"task_uuid": "x", "poke_interval": 0},
        r"poke_interval",
        sensor=True,
    ),
)


@dataclass
class BadInputResult:
    """How one bad input was reported."""

    case: BadInput
    error: str
    kind: str
    calls: int
    problems: list[str]

    @property
    def clear(self) -> bool:
        return not self.problems


class _SelfSignedServer:
    """An HTTPS server on loopback with a self-signed certificate (the client must refuse it)."""

    def __init__(self, workdir: Path) -> None:
        cert, key = self_signed_certificate(workdir)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    def __enter__(self) -> _SelfSignedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def _env(**values: str | None) -> Iterator[None]:
    """Set (or, with None, remove) environment variables for the duration of the block."""
    saved = {k: os.environ.get(k) for k in values}
    try:
        for key, value in values.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class TaskInstanceStandIn:
    """The part of a task instance the operator and the sensor use (in-process runs), recording XCom pushes."""

    def __init__(self, task_id: str, try_number: int = 1, max_tries: int = 2, dag_id: str = "chaos_in_process") -> None:
        self.dag_id, self.task_id, self.run_id = dag_id, task_id, "manual__in-process"
        self.map_index, self.try_number, self.max_tries = -1, try_number, max_tries
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


#: Loggers silenced while the bad inputs run: what they say is expected there, and the errors are checked.
QUIET_LOGGERS = (
    "airflow_provider_qarnot.client.connection",
    "airflow_provider_qarnot.client.task",
    "airflow.sdk.definitions.connection",
)


def _drop(record: logging.LogRecord) -> bool:
    return False


class BadInputSandbox:
    """An in-process emulator with the run's token, an HTTPS server with a self-signed certificate, a closed port."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.wrong_token = TOKEN_PREFIX + "wrong-" + secrets.token_hex(6)
        self._stack = contextlib.ExitStack()
        self.emulator: Emulator | None = None

    def __enter__(self) -> BadInputSandbox:
        from airflow_provider_qarnot.emulator import Emulator

        # Quiet: the client's retry notes (the unreachable host) and Airflow's traceback for a non-JSON extra.
        # A filter, not a level: Airflow configures logging lazily, which resets the levels of loggers.
        for name in QUIET_LOGGERS:
            logger = logging.getLogger(name)
            logger.addFilter(_drop)
            self._stack.callback(logger.removeFilter, _drop)
        workdir = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="chaos-bad-input-")))
        self.emulator = self._stack.enter_context(Emulator(token=self.token, mode="simulate"))
        self.tls = self._stack.enter_context(_SelfSignedServer(workdir))
        self.closed_port = free_port()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def connection(self, fields: Mapping[str, Any] | None) -> str:
        """The JSON of the `qarnot_bad` connection: the good one with `fields` replaced."""
        assert self.emulator is not None
        conn: dict[str, Any] = {"conn_type": "qarnot", "host": self.emulator.api_url, "password": self.token}
        slots = {
            "{host}": self.emulator.api_url.split("://")[1],
            "{closed_port}": str(self.closed_port),
            "{tls_port}": str(self.tls.port),
            "{wrong_token}": self.wrong_token,
        }
        for key, value in (fields or {}).items():
            if isinstance(value, str):
                for slot, filling in slots.items():
                    value = value.replace(slot, filling)
            conn[key] = value
        return json.dumps(conn)

    def check(self, case: BadInput) -> BadInputResult:
        """Run one bad input's task once and judge how its failure was reported."""
        from airflow.sdk.exceptions import AirflowException, AirflowFailException, TaskDeferred

        from airflow_provider_qarnot.operators.qarnot import QarnotSubmitTaskOperator
        from airflow_provider_qarnot.sensors.qarnot import QarnotTaskSensor

        assert self.emulator is not None
        self.emulator.reset()
        kwargs: dict[str, Any] = {"qarnot_conn_id": "qarnot_bad", **case.build}
        ti = TaskInstanceStandIn("bad", dag_id="chaos_bad_input")
        context: dict[str, Any] = {"ti": ti, "params": dict(case.params or {}), "run_id": ti.run_id}
        error: BaseException | None = None
        with _env(AIRFLOW_CONN_QARNOT_BAD=self.connection(case.conn)):
            try:
                if case.sensor:
                    task: Any = QarnotTaskSensor(task_id="bad", deferrable=True, timeout=60, **kwargs)
                else:
                    task = QarnotSubmitTaskOperator(task_id="bad", **{**GOOD, "deferrable": True, **kwargs})
                task.render_template_fields(context)
                task.execute(context)
            except TaskDeferred:
                error = None
            except Exception as exc:
                error = exc
        calls = int(self.emulator.stats()["requests_total"])
        problems: list[str] = []
        text = "" if error is None else str(error)
        if error is None:
            problems.append("no error: the task went ahead")
        elif not isinstance(error, AirflowException):
            problems.append(f"{type(error).__name__} is not an Airflow exception")
        elif case.fail_fast is True and not isinstance(error, AirflowFailException):
            problems.append(f"{type(error).__name__} is retried, but no retry can help")
        elif case.fail_fast is False and isinstance(error, AirflowFailException):
            problems.append("AirflowFailException, but a retry may help")
        if error is not None and not re.search(case.message, text):
            problems.append(f"the message does not match {case.message!r}")
        if calls and not case.calls:
            problems.append(f"{calls} API call(s) although validation suffices")
        if error is not None:
            shown = "".join(traceback.format_exception(error)) + repr(error)
            for secret in (self.token, self.wrong_token):
                if secret in shown:
                    problems.append("the token is in the exception")
        return BadInputResult(case, text[:300], type(error).__name__ if error else "-", calls, problems)

    def repr_leaks(self) -> list[str]:
        """Objects a user may print (hook, settings, client connection, trigger) that show the token."""
        from airflow_provider_qarnot.hooks.qarnot import QarnotHook
        from airflow_provider_qarnot.triggers.qarnot import QarnotTaskTrigger

        leaks = []
        with _env(AIRFLOW_CONN_QARNOT_BAD=self.connection(None)):
            hook = QarnotHook("qarnot_bad")
            trigger = QarnotTaskTrigger(task_uuid="u", qarnot_conn_id="qarnot_bad")
            shown = {
                "hook": repr(hook),
                "settings": repr(hook.settings),
                "connection": repr(hook.get_conn()),
                "trigger": repr(trigger) + repr(trigger.serialize()),
                "test_connection": repr(hook.test_connection()),
            }
            hook.close()
        for name, text in shown.items():
            if self.token in text:
                leaks.append(f"repr of the {name}")
        return leaks


def scenario_bad_inputs(token: str) -> tuple[Outcome, list[str]]:
    """Every bad input of `BAD_INPUTS`, in-process; returns the outcome and the token leaks of reprs."""
    out = Outcome("bad_inputs")
    started = time.monotonic()
    with BadInputSandbox(token) as sandbox:
        results = [sandbox.check(case) for case in BAD_INPUTS]
        leaks = sandbox.repr_leaks()
    out.facts.update(cases=len(results), clear=sum(r.clear for r in results))
    for result in results:
        out.expect(result.clear, f"{result.case.name}: {'; '.join(result.problems)} [{result.kind}: {result.error}]")
    out.seconds = time.monotonic() - started
    return out, leaks


# ---------------------------------------------------------------------------------------------------
# 7. Secrets


def find_token(token: str, roots: list[Path], texts: Mapping[str, str]) -> tuple[list[str], list[Path]]:
    """Where `token` appears: every file under `roots` (read as bytes) and each of `texts`; also the files read."""
    needle = token.encode()
    files = sorted(p for root in roots if root.exists() for p in root.rglob("*") if p.is_file())
    leaks = [str(p) for p in files if needle in p.read_bytes()]
    leaks += [name for name, text in texts.items() if token in text]
    return leaks, files


def scan_for_token(chaos: ChaosStack, token: str) -> Outcome:
    """Look for the token in every file of AIRFLOW_HOME (task and trigger logs, the sqlite DB with its XComs,
    rendered fields and trigger rows), every component log, and every decrypted trigger row seen while
    tasks were deferred."""
    out = Outcome("secrets")
    started = time.monotonic()
    texts = {f"trigger kwargs #{i}": text for i, text in enumerate(chaos.trigger_kwargs)}
    leaks, files = find_token(token, [chaos.stack.home, chaos.stack.logs], texts)
    log_files = [p for p in files if p.suffix == ".log" or ".log." in p.name]
    out.facts.update(files=len(files), log_files=len(log_files), trigger_rows=len(texts), leaks=leaks)
    out.expect(not leaks, f"the token is in: {leaks[:10]}")
    out.expect(len(log_files) > 10 and bool(texts), "the scan saw too little to mean anything")
    out.expect(all('"task_uuid"' in t for t in texts.values()), "some trigger rows were not decrypted")
    out.seconds = time.monotonic() - started
    return out


# ---------------------------------------------------------------------------------------------------
# 8. Fuzzing


def scenario_fuzz(run: bool) -> Outcome:
    """The parsers' hypothesis tests: referenced (they run with the test suite), or run again (`--long`)."""
    out = Outcome("fuzz")
    out.facts["tests"] = len(FUZZ_TESTS)
    if not run:
        out.facts["status"] = "referenced, run by pytest"
        return out
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *FUZZ_TESTS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    found = re.search(r"(\d+) passed", result.stdout)
    out.facts["passed"] = int(found.group(1)) if found else 0
    out.expect(result.returncode == 0, f"fuzz tests failed:\n{result.stdout[-2000:]}")
    out.seconds = time.monotonic() - started
    return out


# ---------------------------------------------------------------------------------------------------
# The whole run


@dataclass
class Report:
    """Everything one chaos run found."""

    outcomes: dict[str, Outcome]
    audit: Audit
    numbers: dict[str, int]
    needed_sigkill: list[str]
    leftovers: list[str]
    seconds: float

    @property
    def ok(self) -> bool:
        """The acceptance: no duplicate, orphan, wrong outcome or leak; every bad input reported clearly;
        every scenario's own checks held; every process stopped cleanly."""
        numbers = self.numbers
        zero = all(numbers[k] == 0 for k in ("duplicates", "orphaned_running", "wrong_outcomes", "token_leaks"))
        clear = numbers["bad_inputs"] == numbers["bad_inputs_clear"]
        return zero and clear and all(o.ok for o in self.outcomes.values()) and not self.leftovers


def guarded(name: str, step: Callable[[], Outcome]) -> Outcome:
    """Run one scenario; an exception (a timeout, a dead component) becomes a failed outcome, not an abort."""
    started = time.monotonic()
    try:
        return step()
    except Exception as exc:
        out = Outcome(name, seconds=time.monotonic() - started)
        out.problems.append(f"{type(exc).__name__}: {exc}"[:2000])
        return out


def run(
    sizes: Sizes,
    root: Path,
    *,
    long: bool = False,
    bad_inputs: bool = True,
    echo: Callable[[str], None] = print,
) -> Report:
    """Every scenario with `sizes`, on one stack under `root`, then the audit and the token scan.

    `bad_inputs=False` skips the in-process bad-input table (the tests run it case by case instead).
    """
    token = make_token()
    started = time.monotonic()
    outcomes: dict[str, Outcome] = {}
    repr_leaks: list[str] = []

    def record(outcome: Outcome) -> None:
        outcomes[outcome.name] = outcome
        echo(outcome.line())

    if bad_inputs:
        bad, repr_leaks = scenario_bad_inputs(token)
        record(bad)
    chaos = ChaosStack(root, token, parallelism=sizes.parallelism)
    audit_result = Audit()
    faults = 0
    try:
        echo(f"== starting the emulator and Airflow in {root}")
        chaos.start()
        echo(f"   up after {time.monotonic() - started:.0f}s")
        steps: list[tuple[str, Callable[[], Outcome]]] = [
            (
                "faulted_runs",
                lambda: scenario_faulted_runs(
                    chaos, sizes.pipeline_runs, sizes.fault_rate, sizes.failure_share, sizes.concurrent_runs
                ),
            ),
            ("worker_kill", lambda: scenario_worker_kill(chaos)),
            ("user_actions", lambda: scenario_user_actions(chaos)),
            ("triggerer_kill", lambda: scenario_triggerer_kill(chaos, sizes.deferred)),
            ("emulator_restart", lambda: scenario_emulator_restart(chaos, sizes.restart_tasks)),
        ]
        for name, step in steps:
            record(guarded(name, step))
        audit_result = audit(chaos)
        faults = chaos.faults_injected()
        echo(audit_result.line())
    finally:
        killed = chaos.stop()
        leftovers = chaos.stack.leftovers()
    record(scan_for_token(chaos, token))
    record(scenario_fuzz(run=long))
    bad_outcome = outcomes.get("bad_inputs", Outcome("bad_inputs"))
    leaks = len(outcomes["secrets"].facts["leaks"]) + len(repr_leaks)
    leaks += sum("token is in the exception" in p for p in bad_outcome.problems)
    numbers = {
        "dag_runs": audit_result.dag_runs,
        "faults_injected": faults,
        "duplicates": audit_result.duplicates,
        "orphaned_running": audit_result.orphaned_running,
        "wrong_outcomes": audit_result.wrong_outcomes,
        "bad_inputs": int(bad_outcome.facts.get("cases", 0)),
        "bad_inputs_clear": int(bad_outcome.facts.get("clear", 0)),
        "token_leaks": leaks,
    }
    seconds = time.monotonic() - started
    echo(f"== {seconds:.0f}s in all; needed SIGKILL to stop: {killed or 'none'}; left running: {leftovers or 'none'}")
    return Report(outcomes, audit_result, numbers, killed, leftovers, seconds)


def main(argv: list[str] | None = None) -> int:
    """`python -m tools.chaos [--short | --long] [--root DIR]`: the last line printed is the JSON summary."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--long", action="store_true", help="the full sizes (100 runs, 50 deferred tasks, ...)")
    size.add_argument("--short", action="store_true", help="small sizes (the default; what the tests use)")
    parser.add_argument("--root", type=Path, default=None, help="where the stack lives (default: a new temp dir)")
    args = parser.parse_args(argv)
    # The bad-input table imports Airflow in this process: give it a throw-away home first.
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="chaos-airflow-home-"))
    os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    root = (args.root or Path(tempfile.mkdtemp(prefix="chaos-stack-"))).resolve()
    sizes = LONG if args.long else SHORT
    print(f"== chaos run ({'long' if args.long else 'short'}): {sizes}", flush=True)
    report = run(sizes, root, long=args.long, echo=lambda line: print(line, flush=True))
    print(json.dumps(report.numbers), flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
