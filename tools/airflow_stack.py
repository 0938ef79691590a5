"""A real Airflow stack on sqlite (api-server, scheduler, dag-processor, triggerer) plus the Qarnot emulator.

Used by the README's demo command and by the end-to-end test, so both exercise exactly the same
set-up: nothing here is mocked, and every process it starts is stopped when it stops.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tools.processes import Service, free_port, stop_all

BIN = Path(sys.executable).parent
AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
#: Who stops before whom: the clients of the api-server, then the api-server, then the emulator they all call.
STOP_ORDER = (("scheduler", "dag-processor", "triggerer"), ("api-server",), ("emulator",))
READY_LINE = re.compile(r"Qarnot emulator ready: api=(\S+) storage=(\S+)")


@dataclass
class TaskProgress:
    """What the stack saw of one task instance while a DAG run went on."""

    task_id: str
    map_index: int = -1
    state: str | None = None
    states_seen: list[str] = field(default_factory=list)
    try_number: int = 0


class LocalStack:
    """The emulator and the four Airflow components, in a project-local directory."""

    def __init__(
        self,
        root: Path,
        dags_folder: Path,
        token: str,
        parallelism: int = 4,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.root = root
        self.home = root / "airflow"
        self.logs = root / "logs"
        self.dags_folder = dags_folder
        self.token = token
        self.parallelism = parallelism
        #: Settings added to (or overriding) every Airflow component's environment, e.g. `AIRFLOW__...` tweaks.
        self.extra_env = dict(extra_env or {})
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.emulator_url: str | None = None
        self.storage_url: str | None = None
        self.services: list[Service] = []
        self._session = requests.Session()

    # ------------------------------------------------------------------ set-up

    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
                "AIRFLOW__API__BASE_URL": self.api_url,
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__SECRET_KEY": "local-stack-secret",
                "AIRFLOW__API_AUTH__JWT_SECRET": "local-stack-jwt-secret-0123456789abcdef",
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
                "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.emulator_url:
            conn = {
                "conn_type": "qarnot",
                "host": self.emulator_url,
                "password": self.token,
                "extra": {"storage_url": self.storage_url},
            }
            env["AIRFLOW_CONN_QARNOT_DEFAULT"] = json.dumps(conn)
        env.update(self.extra_env)
        return env

    def start_emulator(self, *extra_args: str, timeout: float = 60.0, port: int = 0, storage_port: int = 0) -> None:
        """Start `qarnot-emulator` (on free ports unless given) and wait for its ready line.

        Give fixed ports to restart it later at the same URL (see `restart_emulator`).
        """
        service = Service(
            "emulator",
            [
                str(BIN / "qarnot-emulator"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--storage-port",
                str(storage_port),
                "--state-dir",
                str(self.root / "emulator-state"),
                *extra_args,
            ],
            {**{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}, "QARNOT_CLIENT_TOKEN": self.token},
            self.logs / "emulator.log",
        )
        service.start()
        self.services.append(service)
        self._wait_for_emulator(service, 0, timeout)

    def _wait_for_emulator(self, service: Service, ready_lines_before: int, timeout: float) -> None:
        """Wait for the emulator's ready line number `ready_lines_before + 1` in its log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            matches = READY_LINE.findall(service.tail(100_000))
            if len(matches) > ready_lines_before:
                self.emulator_url, self.storage_url = matches[-1]
                return
            if not service.running:
                raise RuntimeError(f"the emulator exited early:\n{service.tail()}")
            time.sleep(0.1)
        raise RuntimeError(f"the emulator did not become ready in {timeout:.0f}s:\n{service.tail()}")

    def restart_emulator(self, hard: bool = False, timeout: float = 60.0) -> None:
        """Stop the emulator (SIGKILL when `hard`), start it again with the same arguments, wait until it serves.

        With fixed ports (see `start_emulator`) it comes back at the same URL, and with its `--state-dir`
        it comes back with its tasks.
        """
        old = self.service("emulator")
        before = len(READY_LINE.findall(old.tail(100_000)))
        url = self.emulator_url
        self.restart("emulator", hard=hard)
        self._wait_for_emulator(self.service("emulator"), before, timeout)
        if url != self.emulator_url:
            raise RuntimeError(f"the emulator came back at {self.emulator_url}, not {url}: give it fixed ports")

    def enable_sqlite_wal(self) -> None:
        """Put the metadata DB in WAL mode (it stays so): readers stop blocking writers, which a busy stack needs."""
        import sqlite3

        with contextlib.closing(sqlite3.connect(self.home / "airflow.db")) as conn:
            conn.execute("PRAGMA journal_mode=WAL")

    def migrate(self) -> None:
        """Create a fresh metadata database."""
        self.home.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [str(BIN / "airflow"), "db", "migrate"],
            env=self.base_env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")

    def start_airflow(self) -> None:
        """Start api-server, scheduler, dag-processor and triggerer, each in its own process group."""
        env = self.base_env()
        for component in AIRFLOW_COMPONENTS:
            argv = [str(BIN / "airflow"), component]
            if component == "api-server":
                argv += ["--port", str(self.api_port), "--host", "127.0.0.1"]
            service = Service(component, argv, env, self.logs / f"{component}.log")
            service.start()
            self.services.append(service)

    def service(self, name: str) -> Service:
        return next(s for s in self.services if s.name == name)

    def restart(self, name: str, hard: bool = False) -> None:
        """Stop one component (SIGKILL when `hard`) and start it again."""
        old = self.service(name)
        if hard:
            old.signal_group(9)
        stop_all([old])
        new = Service(old.name, old.argv, self.base_env() if name != "emulator" else old.env, old.log_path)
        new.start()
        self.services[self.services.index(old)] = new

    # ------------------------------------------------------------------ REST API

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """One REST API call; a read answered 5xx is retried a few times (a busy sqlite DB answers so under load)."""
        attempts = 5 if method.upper() == "GET" else 1
        for attempt in range(attempts):
            response = self._session.request(method, f"{self.api_url}/api/v2{path}", timeout=30, **kwargs)
            if response.status_code < 500 or attempt == attempts - 1:
                break
            time.sleep(1)
        response.raise_for_status()
        return response.json() if response.content else None

    def wait_until_healthy(self, timeout: float = 180.0) -> None:
        """Wait until the api-server answers and the scheduler, dag-processor and triggerer report healthy."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            self._check_services_alive()
            try:
                last = self.api("GET", "/monitor/health")
            except requests.RequestException as exc:
                last = str(exc)
            else:
                parts = [last.get(k, {}).get("status") for k in ("metadatabase", "scheduler", "triggerer")]
                if all(p == "healthy" for p in parts):
                    return
            time.sleep(1)
        raise RuntimeError(f"Airflow did not become healthy in {timeout:.0f}s; last health: {last}")

    def wait_for_dag(self, dag_id: str, timeout: float = 180.0) -> None:
        """Wait until the dag-processor has parsed `dag_id` (and fail fast on its import error)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_services_alive()
            try:
                self.api("GET", f"/dags/{dag_id}")
                return
            except requests.HTTPError:
                errors = self.api("GET", "/importErrors").get("import_errors", [])
                if errors:
                    raise RuntimeError(f"DAG import errors: {json.dumps(errors, indent=1)[:3000]}") from None
            except requests.RequestException:
                pass
            time.sleep(1)
        raise RuntimeError(f"DAG {dag_id} was not parsed within {timeout:.0f}s")

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None, run_id: str | None = None) -> str:
        """Start a DAG run (with `run_id`, or one Airflow names); returns its run id."""
        body: dict[str, Any] = {"logical_date": None, "conf": dict(conf or {})}
        if run_id is not None:
            body["dag_run_id"] = run_id
        run = self.api("POST", f"/dags/{dag_id}/dagRuns", json=body)
        return str(run["dag_run_id"])

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        quoted = urllib.parse.quote(run_id, safe="")
        return list(self.api("GET", f"/dags/{dag_id}/dagRuns/{quoted}/taskInstances").get("task_instances", []))

    def wait_for_run(
        self,
        dag_id: str,
        run_id: str,
        timeout: float = 600.0,
        on_progress: Callable[[str, dict[str, TaskProgress], float], None] | None = None,
        poll: float = 0.5,
    ) -> tuple[str, dict[str, TaskProgress]]:
        """Follow a DAG run to its end; returns its final state and what was seen of each task."""
        quoted = urllib.parse.quote(run_id, safe="")
        progress: dict[str, TaskProgress] = {}
        started = time.monotonic()
        while True:
            self._check_services_alive()
            run = self.api("GET", f"/dags/{dag_id}/dagRuns/{quoted}")
            for ti in self.task_instances(dag_id, run_id):
                key = ti["task_id"] if ti.get("map_index", -1) < 0 else f"{ti['task_id']}[{ti['map_index']}]"
                entry = progress.setdefault(key, TaskProgress(ti["task_id"], ti.get("map_index", -1)))
                entry.state = ti.get("state")
                entry.try_number = ti.get("try_number") or 0
                if entry.state and (not entry.states_seen or entry.states_seen[-1] != entry.state):
                    entry.states_seen.append(entry.state)
            elapsed = time.monotonic() - started
            if on_progress is not None:
                on_progress(run["state"], progress, elapsed)
            if run["state"] in ("success", "failed"):
                return str(run["state"]), progress
            if elapsed > timeout:
                raise TimeoutError(f"DAG run {run_id} still {run['state']} after {timeout:.0f}s")
            time.sleep(poll)

    def all_task_instances(self, dag_id: str, run_id: str = "~") -> list[dict[str, Any]]:
        """Every task instance of a DAG run (`~`: of every run), following the API's pages."""
        quoted = urllib.parse.quote(run_id, safe="~")
        found: list[dict[str, Any]] = []
        while True:
            page = self.api(
                "GET",
                f"/dags/{dag_id}/dagRuns/{quoted}/taskInstances",
                params={"limit": 100, "offset": len(found), "order_by": "id"},
            )
            items = list(page.get("task_instances", []))
            found += items
            if not items or len(found) >= int(page.get("total_entries", 0)):
                return found

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        """Every run of a DAG, following the API's pages."""
        found: list[dict[str, Any]] = []
        while True:
            page = self.api("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100, "offset": len(found)})
            items = list(page.get("dag_runs", []))
            found += items
            if not items or len(found) >= int(page.get("total_entries", 0)):
                return found

    def task_instance(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        """One task instance as the REST API shows it (its `id`, `state`, `try_number`...)."""
        path = f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances/{task_id}"
        return dict(self.api("GET", path if map_index < 0 else f"{path}/{map_index}"))

    def patch_task_instance_state(
        self, dag_id: str, run_id: str, task_id: str, new_state: str, map_index: int = -1
    ) -> Any:
        """Mark a task instance `success`, `failed` or `skipped`, as a user does in the UI."""
        path = f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances/{task_id}"
        return self.api("PATCH", path if map_index < 0 else f"{path}/{map_index}", json={"new_state": new_state})

    def clear_task_instances(self, dag_id: str, run_id: str, task_ids: list[str]) -> Any:
        """Clear task instances of one run whatever their state, as a user does in the UI (they run again)."""
        body = {"dry_run": False, "dag_run_id": run_id, "task_ids": task_ids, "only_failed": False}
        return self.api("POST", f"/dags/{dag_id}/clearTaskInstances", json=body)

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        quoted = urllib.parse.quote(run_id, safe="")
        entry = self.api("GET", f"/dags/{dag_id}/dagRuns/{quoted}/taskInstances/{task_id}/xcomEntries/{key}")
        return entry.get("value")

    # ------------------------------------------------------------------ the emulator's API and admin endpoints

    def emulator(self, method: str, path: str, attempts: int = 20, **kwargs: Any) -> Any:
        """A request to the emulator with the stack's token; retried while it answers 429/5xx or is restarting.

        Only for inspection and the admin endpoints (`/_emulator/...`, never faulted); the code under
        test gets no such help.
        """
        if not self.emulator_url:
            raise RuntimeError("the emulator is not started")
        headers = {"Authorization": self.token}
        for attempt in range(attempts):
            try:
                response = self._session.request(
                    method, f"{self.emulator_url}{path}", headers=headers, timeout=30, **kwargs
                )
            except requests.ConnectionError:
                if attempt == attempts - 1:
                    raise
            else:
                if response.status_code < 429 or attempt == attempts - 1:
                    response.raise_for_status()
                    return response.json() if response.content else None
            time.sleep(0.3)
        raise AssertionError("unreachable")  # pragma: no cover

    def emulator_stats(self) -> dict[str, Any]:
        """The emulator's counters: requests per route, faults injected, tasks by state."""
        return dict(self.emulator("GET", "/_emulator/stats"))

    def set_emulator_faults(self, rules: list[dict[str, Any]], seed: int | None = None) -> dict[str, Any]:
        """Replace the emulator's fault rules (see docs/emulator.md, "Fault injection")."""
        body: dict[str, Any] = {"rules": rules}
        if seed is not None:
            body["seed"] = seed
        return dict(self.emulator("PUT", "/_emulator/faults", json=body))

    def clear_emulator_faults(self) -> None:
        """No more injected faults."""
        self.emulator("DELETE", "/_emulator/faults")

    def emulator_tasks(self, tag: str | None = None) -> list[dict[str, Any]]:
        """Every Qarnot task of the emulator (`GET /tasks`), or those carrying `tag`."""
        return list(self.emulator("GET", "/tasks", params={"tag": tag} if tag else None))

    def _check_services_alive(self) -> None:
        for service in self.services:
            if not service.running:
                raise RuntimeError(f"{service.name} exited unexpectedly:\n{service.tail()}")

    # ------------------------------------------------------------------ tear-down

    def stop(self) -> list[str]:
        """Stop every process, each before what it depends on; returns those that needed SIGKILL.

        The scheduler, dag-processor and triggerer go first (their running tasks still report to the
        api-server and abort their Qarnot tasks on the emulator), then the api-server, the emulator last.
        """
        ordered = {name for tier in STOP_ORDER for name in tier}
        killed = stop_all([s for s in self.services if s.name not in ordered])
        for tier in STOP_ORDER:
            killed += stop_all([s for s in self.services if s.name in tier])
        self._session.close()
        return killed

    def leftovers(self) -> list[str]:
        """Names of services that still have a live process."""
        return [s.name for s in self.services if s.group_alive()]

    def reset(self) -> None:
        """Remove the previous run's database, logs and emulator state."""
        for path in (self.home, self.logs, self.root / "emulator-state"):
            shutil.rmtree(path, ignore_errors=True)
