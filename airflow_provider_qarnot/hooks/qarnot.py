"""`QarnotHook`: the only door from Airflow to the Qarnot client.

It reads the Airflow connection (API URL in host, token in password, options in extra), builds a
`QConnection`, and holds the task helpers the operator, the sensor and the trigger share: submit
with reattach-on-retry, read a task's state, abort, tail its stdout, poll many tasks at once.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from airflow.sdk import BaseHook

from airflow_provider_qarnot.client import states
from airflow_provider_qarnot.client.connection import DEFAULT_CLUSTER_URL, QConnection, tag_filter
from airflow_provider_qarnot.client.exceptions import MissingTaskException, QarnotException, UnauthorizedException
from airflow_provider_qarnot.client.models import TaskSummary, parse_task_summary
from airflow_provider_qarnot.client.retry import RetryPolicy
from airflow_provider_qarnot.client.spec import TaskSpec
from airflow_provider_qarnot.client.task import QTask
from airflow_provider_qarnot.hooks import DEFAULT_CONN_ID
from airflow_provider_qarnot.utils.errors import describe

if TYPE_CHECKING:
    from pathlib import Path

    from airflow.sdk import Connection

DEFAULT_CONSOLE_URL = "https://console.qarnot.com"
#: Prefix of the tag that marks a Qarnot task with the Airflow task instance that submitted it.
TI_TAG_PREFIX = "airflow-ti-"
LABEL_DAG_ID = "airflow_dag_id"
LABEL_TASK_ID = "airflow_task_id"
LABEL_RUN_ID = "airflow_run_id"
LABEL_MAP_INDEX = "airflow_map_index"
LABEL_TRY_NUMBER = "airflow_try_number"
LABEL_RUN_AFTER = "airflow_run_after"
LABEL_DEPLOYMENT = "airflow_deployment"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


class InvalidConnectionError(ValueError):
    """The Airflow connection cannot describe a Qarnot cluster; the message names the field."""


# ---------------------------------------------------------------------------------------------------
# Connection settings


@dataclass(frozen=True)
class QarnotConnectionSettings:
    """Everything needed to build a `QConnection`, read from an Airflow connection (the token is not in repr)."""

    conn_id: str
    cluster_url: str
    token: str = field(repr=False)
    storage_url: str | None = None
    verify: bool | str = True
    timeout: float | tuple[float, float] | None = None
    console_url: str = DEFAULT_CONSOLE_URL

    def connect(self, retry: RetryPolicy | None = None) -> QConnection:
        """A new client connection with these settings (no network call)."""
        return QConnection(
            self.cluster_url,
            self.token,
            storage_url=self.storage_url,
            timeout=self.timeout,
            verify=self.verify,
            retry=retry,
        )

    def task_url(self, task_uuid: str) -> str:
        """The console page of a task: `{console_url}/tasks/{uuid}`, or the `{uuid}` placeholder filled in."""
        if "{uuid}" in self.console_url:
            return self.console_url.replace("{uuid}", task_uuid)
        return f"{self.console_url.rstrip('/')}/tasks/{task_uuid}"

    @classmethod
    def from_connection(cls, conn: Connection) -> QarnotConnectionSettings:
        """Read and check an Airflow connection; `InvalidConnectionError` names the faulty field."""
        conn_id = str(conn.conn_id)

        def fail(what: str) -> InvalidConnectionError:
            return InvalidConnectionError(f"Qarnot connection {conn_id!r}: {what}")

        extras = _parse_extra(conn.extra, fail)
        for secret_key in ("token", "api_token", "password"):
            if _extra(extras, secret_key) is not None:
                raise fail(f"extra field {secret_key!r} is not read; put the API token in the password field")
        token = (conn.password or "").strip()
        if not token:
            raise fail("no API token; put it in the password field")
        allow_http = _bool_extra(extras, "allow_insecure_http", False, fail)
        cluster_url = _cluster_url(conn.host, conn.port, allow_http, fail)
        storage_url = _url_extra(extras, "storage_url", fail)
        console_url = _url_extra(extras, "console_url", fail) or DEFAULT_CONSOLE_URL
        return cls(
            conn_id=conn_id,
            cluster_url=cluster_url,
            token=token,
            storage_url=storage_url,
            verify=_verify_extra(extras, fail),
            timeout=_timeout_extra(extras, fail),
            console_url=console_url,
        )


def _parse_extra(raw: Any, fail: Any) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    if isinstance(raw, Mapping):
        return dict(raw)
    try:
        data = json.loads(raw)
    except (TypeError, ValueError):
        raise fail("extra is not valid JSON") from None
    if not isinstance(data, dict):
        raise fail(f"extra must be a JSON object, got {type(data).__name__}")
    return data


def _extra(extras: Mapping[str, Any], name: str) -> Any:
    """An extra read by its plain name or its UI-prefixed name; empty strings read as absent."""
    for key in (name, f"extra__qarnot__{name}"):
        value = extras.get(key)
        if value is not None and not (isinstance(value, str) and not value.strip()):
            return value.strip() if isinstance(value, str) else value
    return None


def _bool_extra(extras: Mapping[str, Any], name: str, default: bool, fail: Any) -> bool:
    value = _extra(extras, name)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise fail(f"extra field {name!r} must be true or false, got {value!r}")


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _cluster_url(host: str | None, port: int | None, allow_http: bool, fail: Any) -> str:
    text = (host or "").strip()
    if not text:
        return DEFAULT_CLUSTER_URL
    if "://" not in text:
        text = f"https://{text}"
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise fail(f"host must be an API URL such as {DEFAULT_CLUSTER_URL}, got {host!r}")
    netloc = parts.netloc
    try:
        has_port = parts.port is not None
    except ValueError:
        raise fail(f"host has an invalid port: {host!r}") from None
    if port and not has_port:
        netloc = f"{netloc}:{int(port)}"
    if parts.scheme == "http" and not _is_loopback(parts.hostname) and not allow_http:
        raise fail(
            f"host {host!r} uses plain http, which would send the token unencrypted; use https "
            "(http is accepted for loopback hosts, or set extra allow_insecure_http=true)"
        )
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def _url_extra(extras: Mapping[str, Any], name: str, fail: Any) -> str | None:
    value = _extra(extras, name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise fail(f"extra field {name!r} must be an http(s) URL, got {value!r}")
    return value.rstrip("/")


def _verify_extra(extras: Mapping[str, Any], fail: Any) -> bool | str:
    value = _extra(extras, "verify")
    if value is None:
        return True
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        if not os.path.exists(value):
            raise fail(f"extra field 'verify' names a CA bundle that does not exist: {value!r}")
        return value
    raise fail(f"extra field 'verify' must be true, false or a CA bundle path, got {value!r}")


def _timeout_extra(extras: Mapping[str, Any], fail: Any) -> float | tuple[float, float] | None:
    value = _extra(extras, "timeout")
    if value is None:
        return None
    message = f"extra field 'timeout' must be a positive number of seconds or [connect, read], got {value!r}"
    items: Sequence[Any]
    if isinstance(value, str):
        items = [v for v in value.replace(" ", "").split(",") if v]
    elif isinstance(value, list | tuple):
        items = value
    else:
        items = [value]
    try:
        numbers = [float(v) for v in items if not isinstance(v, bool)]
    except (TypeError, ValueError):
        raise fail(message) from None
    if len(numbers) != len(items) or len(numbers) not in (1, 2) or any(not n > 0 for n in numbers):
        raise fail(message)
    return numbers[0] if len(numbers) == 1 else (numbers[0], numbers[1])


# ---------------------------------------------------------------------------------------------------
# Task instance identity (reattach on retry)


@dataclass(frozen=True)
class TaskInstanceIdentity:
    """The Airflow task instance a Qarnot task belongs to; its tag is how a retry finds earlier submits.

    `deployment` (`[qarnot] deployment_id`) keeps deployments that share a Qarnot account apart: it is part
    of the tag. `run_after` (the DAG run's `run_after`, fixed when the run is created and kept through
    retries, clears and state changes) tells this DAG run from an earlier one of the same run id that was
    deleted and triggered again; it is a label, so such tasks are still found, as stale. (A scheduled run
    deleted and re-created by the scheduler keeps its `run_after`, and so its results.)
    """

    dag_id: str
    task_id: str
    run_id: str
    map_index: int = -1
    deployment: str = ""
    run_after: str | None = None

    @property
    def tag(self) -> str:
        """A short deterministic tag (no commas) naming this task instance: `airflow-ti-<sha1[:20]>`."""
        key = f"{self.dag_id}|{self.task_id}|{self.run_id}|{self.map_index}"
        if self.deployment:
            key = f"{self.deployment}|{key}"
        return TI_TAG_PREFIX + hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()[:20]

    def labels(self, try_number: int | None = None) -> dict[str, str]:
        """Readable labels for the Qarnot task (and the try that submitted it)."""
        labels = {
            LABEL_DAG_ID: self.dag_id,
            LABEL_TASK_ID: self.task_id,
            LABEL_RUN_ID: self.run_id,
            LABEL_MAP_INDEX: str(self.map_index),
        }
        if self.deployment:
            labels[LABEL_DEPLOYMENT] = self.deployment
        if self.run_after is not None:
            labels[LABEL_RUN_AFTER] = self.run_after
        if try_number is not None:
            labels[LABEL_TRY_NUMBER] = str(try_number)
        return labels

    def matches(self, summary: TaskSummary) -> bool:
        """Whether a Qarnot task carries this identity (the tag, and the labels when it has them).

        `run_after` is not compared here: a task of an earlier DAG run of the same id is this task
        instance's too (so that it can be aborted), just not of the current run (`same_run`).
        """
        if self.tag not in summary.tags:
            return False
        expected = {k: v for k, v in self.labels().items() if k != LABEL_RUN_AFTER}
        return all(summary.labels.get(k, v) == v for k, v in expected.items())

    def same_run(self, summary: TaskSummary) -> bool:
        """Whether a task of this identity was submitted in this DAG run (not an earlier one of the same id)."""
        run_after = summary.labels.get(LABEL_RUN_AFTER)
        return run_after is None or self.run_after is None or run_after == self.run_after

    @classmethod
    def from_context(cls, context: Mapping[str, Any], deployment: str | None = None) -> TaskInstanceIdentity:
        """The identity of the running task instance (`deployment` defaults to `[qarnot] deployment_id`)."""
        ti = context["ti"]
        map_index = getattr(ti, "map_index", -1)
        run_after = getattr(context.get("dag_run"), "run_after", None)
        return cls(
            dag_id=str(ti.dag_id),
            task_id=str(ti.task_id),
            run_id=str(ti.run_id),
            map_index=-1 if map_index is None else int(map_index),
            deployment=deployment_id() if deployment is None else deployment,
            run_after=run_after.isoformat() if isinstance(run_after, datetime) else None,
        )


def deployment_id() -> str:
    """`[qarnot] deployment_id`: this Airflow deployment's name in task identities (empty by default)."""
    from airflow.sdk import conf

    value = conf.get("qarnot", "deployment_id", fallback="") or ""
    return value.strip()


ReattachAction = Literal["submit", "attach", "reuse"]


@dataclass(frozen=True)
class ReattachDecision:
    """What a new try does about earlier Qarnot tasks of its task instance.

    `stale` are the other still-running tasks of the task instance (duplicates, the task of a try that is
    not reattached to, those of tries before a clear): they are aborted before attaching or submitting.
    """

    action: ReattachAction
    summary: TaskSummary | None = None
    reason: str = ""
    stale: tuple[TaskSummary, ...] = ()


def _try_number(summary: TaskSummary) -> int | None:
    try:
        return int(summary.labels[LABEL_TRY_NUMBER])
    except (KeyError, ValueError):
        return None


def _newest_first(summaries: Iterable[TaskSummary]) -> list[TaskSummary]:
    oldest = datetime.min.replace(tzinfo=timezone.utc)
    return sorted(summaries, key=lambda s: (s.creation_date or oldest, _try_number(s) or 0), reverse=True)


def decide_reattach(
    candidates: Iterable[TaskSummary],
    identity: TaskInstanceIdentity,
    first_try: int | None = None,
    *,
    reattach: bool = True,
    try_number: int | None = None,
) -> ReattachDecision:
    """Keep this try's own task, else attach to the newest running one, else reuse a success, else submit.

    Only tasks of this identity count, and only those of this DAG run (not of an earlier run of the same
    id) and, when `first_try` is known, submitted by a try of the current run of the task instance
    (tries before a clear start over). A task labelled with
    the current `try_number` is this try's own, whatever its state and `reattach`: Airflow can run a
    try's `execute()` twice, and one try never owns two Qarnot tasks. Every other running task is
    `stale`: of this run, those not attached to (all of them with `reattach=False`); of the runs before
    a clear, all of them (their tries are over, even when the trigger's `on_kill` lost its race).
    """
    mine_all = _newest_first(s for s in candidates if identity.matches(s))
    active = [s for s in mine_all if not states.is_final(s.state) and s.state not in states.PENDING_STATES]
    eligible = [s for s in mine_all if identity.same_run(s)]
    if first_try is not None:
        eligible = [s for s in eligible if (_try_number(s) or first_try) >= first_try]
    current_run = {s.uuid for s in eligible}
    before_clear = tuple(s for s in active if s.uuid not in current_run)
    running = [s for s in active if s.uuid in current_run]
    own = [s for s in eligible if try_number is not None and _try_number(s) == try_number]
    if own:
        mine = own[0]
        others = tuple(s for s in running if s.uuid != mine.uuid) + before_clear
        action: ReattachAction = "reuse" if states.is_final(mine.state) else "attach"
        return ReattachDecision(action, mine, f"this try already submitted task {mine.uuid} ({mine.state})", others)
    if not reattach:
        return ReattachDecision("submit", None, "reattach is off", tuple(running) + before_clear)
    if running:
        reason = f"an earlier try's task {running[0].uuid} is {running[0].state}"
        return ReattachDecision("attach", running[0], reason, tuple(running[1:]) + before_clear)
    succeeded = [s for s in eligible if states.is_success(s.state)]
    if succeeded:
        reason = f"an earlier try's task {succeeded[0].uuid} succeeded"
        return ReattachDecision("reuse", succeeded[0], reason, before_clear)
    if eligible:
        return ReattachDecision("submit", None, f"{len(eligible)} earlier task(s) ended without success", before_clear)
    return ReattachDecision("submit", None, "no earlier task", before_clear)


# ---------------------------------------------------------------------------------------------------
# The hook


class QarnotHook(BaseHook):
    """Talk to Qarnot through an Airflow connection of type `qarnot`.

    :param qarnot_conn_id: the Airflow connection: host = API URL (default https://api.qarnot.com),
        password = API token, extra = `storage_url`, `verify` (bool or CA bundle path), `timeout`
        (seconds or [connect, read]), `console_url`.
    :param settings: already-read connection settings (the trigger reads them asynchronously once).
    :param retry: the client's retry policy for transient errors (default: the client's).
    """

    conn_name_attr = "qarnot_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = "qarnot"
    hook_name = "Qarnot"

    def __init__(
        self,
        qarnot_conn_id: str = DEFAULT_CONN_ID,
        *,
        settings: QarnotConnectionSettings | None = None,
        retry: RetryPolicy | None = None,
        logger_name: str | None = None,
    ) -> None:
        super().__init__(logger_name=logger_name)
        self.qarnot_conn_id = qarnot_conn_id
        self._settings = settings
        self._retry = retry
        self._conn: QConnection | None = None

    def __repr__(self) -> str:
        return f"QarnotHook(qarnot_conn_id={self.qarnot_conn_id!r})"

    # ------------------------------------------------------------------ connection

    @property
    def settings(self) -> QarnotConnectionSettings:
        """The connection's settings (read once, on first use)."""
        if self._settings is None:
            self._settings = QarnotConnectionSettings.from_connection(self.get_connection(self.qarnot_conn_id))
        return self._settings

    @classmethod
    async def aget_settings(cls, qarnot_conn_id: str = DEFAULT_CONN_ID) -> QarnotConnectionSettings:
        """Read a connection's settings without blocking the event loop (for triggers)."""
        conn = await cls.aget_connection(qarnot_conn_id)
        return QarnotConnectionSettings.from_connection(conn)

    def get_conn(self) -> QConnection:
        """The client connection (built once per hook); warns when TLS verification is off."""
        if self._conn is None:
            settings = self.settings
            if settings.verify is False:
                self.log.warning(
                    "TLS certificate verification is off for Qarnot connection %r (extra verify=false): "
                    "the API token could be sent to an impostor; prefer a CA bundle path",
                    settings.conn_id,
                )
            self._conn = settings.connect(self._retry)
        return self._conn

    def close(self) -> None:
        """Close the client's pooled HTTP connections."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def redact(self, text: str) -> str:
        """`text` with the token replaced (for anything that came from outside: stdout, Qarnot errors).

        Never raises: before the connection's settings are read there is no token to hide.
        """
        if self._conn is None and self._settings is not None:
            self.get_conn()
        return self._conn.redact(text) if self._conn is not None else text

    def test_connection(self) -> tuple[bool, str]:
        """Check the token with `GET /info`; the message never contains the token."""
        try:
            conn = self.get_conn()
            info = conn.user_info(refresh=True)
        except UnauthorizedException as exc:
            if exc.status_code is None:  # refused before any call (missing, or not sendable as a header)
                return False, str(exc)
            return False, "The Qarnot API rejected the token (HTTP 401/403): check the connection's password"
        except Exception as exc:  # the UI shows the message: never raise, never show the token
            text = describe(exc)
            return False, self._conn.redact(text) if self._conn is not None else text
        who = info.get("email") or "an account without an email"
        return True, f"Connected to {self.settings.cluster_url} as {who}"

    def task_url(self, task_uuid: str) -> str:
        """The console page of a task."""
        return self.settings.task_url(task_uuid)

    # ------------------------------------------------------------------ tasks

    def submit_task(self, spec: TaskSpec, on_created: Callable[[str], None] | None = None) -> QTask:
        """Create a Qarnot task (at most once, even when the POST's outcome is unknown) and read its state.

        `on_created(uuid)` is called as soon as the task exists, before its state is read, so that a
        kill arriving meanwhile can abort it.
        """
        task = QTask.from_spec(self.get_conn(), spec)
        task.submit(on_created=on_created)
        return task

    def find_tasks_by_tag(self, tag: str) -> list[TaskSummary]:
        """Every task carrying `tag`, in full (with labels), in one paginated search."""
        found: list[TaskSummary] = []
        for item in self.get_conn().search_tasks(tag_filter(tag)):
            try:
                found.append(parse_task_summary(item))
            except QarnotException:
                continue
        return found

    def submit_or_reattach(
        self,
        spec: TaskSpec,
        identity: TaskInstanceIdentity,
        *,
        first_try: int | None = None,
        try_number: int | None = None,
        reattach: bool = True,
        on_created: Callable[[str], None] | None = None,
    ) -> tuple[QTask, ReattachDecision]:
        """Keep this try's own task, attach to (or reuse) an earlier try's, or submit `spec`.

        Always one search by the task instance's tag first, also on a first try: Airflow 3.3 can run a
        try's `execute()` again after it submitted (a late executor event racing a fast trigger), and that
        second run must find the task instead of submitting a twin. Earlier tries' running tasks that are
        not attached to are aborted. `on_created(uuid)` is called as soon as the task's uuid is known.
        """
        found = self.find_tasks_by_tag(identity.tag)
        decision = decide_reattach(found, identity, first_try, reattach=reattach, try_number=try_number)
        for stale in decision.stale:
            self.log.warning(
                "Aborting Qarnot task %s of an earlier try (%s): only one may run", stale.uuid, stale.state
            )
            try:
                self.abort_task(stale.uuid)
            except QarnotException as exc:
                self.log.warning("Could not abort Qarnot task %s: %s", stale.uuid, self.redact(describe(exc)))
        if decision.summary is not None:
            if on_created is not None:
                on_created(decision.summary.uuid)
            try:
                return self.get_task(decision.summary.uuid), decision
            except MissingTaskException:
                decision = ReattachDecision("submit", None, f"task {decision.summary.uuid} was deleted meanwhile")
        return self.submit_task(spec, on_created=on_created), decision

    def abort_tasks_of_try(
        self, identity: TaskInstanceIdentity, try_number: int | None, looks: Sequence[float] = (0.0,)
    ) -> list[str]:
        """Abort the running tasks that this try of this task instance submitted; returns their uuids.

        For a submit cut short (a timeout or a kill during `POST /tasks`): the server may have created the
        task all the same, and may commit it late, so it is looked for again after each wait of `looks`
        (seconds, one after the other), until found. A failed look is logged, and the next one is made.
        """
        for wait in looks:
            time.sleep(wait)
            try:
                mine = [
                    s
                    for s in self.find_tasks_by_tag(identity.tag)
                    if identity.matches(s)
                    and identity.same_run(s)
                    and s.labels.get(LABEL_TRY_NUMBER) == str(try_number)
                    and states.is_active(s.state)
                ]
                for summary in mine:
                    self.log.warning("Aborting Qarnot task %s: its submit was cut short", summary.uuid)
                    self.abort_task(summary.uuid)
            except QarnotException as exc:
                self.log.warning("Looking for the task of a cut-short submit failed: %s", self.redact(describe(exc)))
                continue
            if mine:
                return [s.uuid for s in mine]
        return []

    def get_task(self, task_uuid: str) -> QTask:
        """An existing task, read fresh; `MissingTaskException` when there is none."""
        return QTask.retrieve(self.get_conn(), task_uuid)

    def get_summary(self, task_uuid: str) -> TaskSummary:
        """The current state, errors and instances of a task (one `GET /tasks/{uuid}`)."""
        summary = self.get_task(task_uuid).summary
        if summary is None:  # pragma: no cover - retrieve always sets it
            raise MissingTaskException(f"Task {task_uuid} has no state")
        return summary

    def task_states(self, task_uuids: Iterable[str]) -> dict[str, TaskSummary]:
        """The current summary of many tasks in ⌈N/100⌉ requests; deleted tasks are absent."""
        return self.get_conn().task_states(task_uuids)

    def abort_task(self, task_uuid: str) -> bool:
        """Abort a task unless it is final or gone; True when an abort was sent."""
        try:
            task = self.get_task(task_uuid)
        except MissingTaskException:
            self.log.info("Qarnot task %s no longer exists; nothing to abort", task_uuid)
            return False
        if states.is_final(task.state):
            self.log.info("Qarnot task %s is already %s; nothing to abort", task_uuid, task.state)
            return False
        task.abort()
        self.log.info("Asked Qarnot to abort task %s (it was %s)", task_uuid, task.state)
        return True

    def stdout_tail(self, task: QTask | str, lines: int) -> list[str]:
        """The last `lines` lines of a task's stdout, token-scrubbed (empty when `lines` <= 0)."""
        if lines <= 0:
            return []
        qtask = self.get_task(task) if isinstance(task, str) else task
        return self.redact(qtask.stdout()).splitlines()[-lines:]

    def fresh_stdout(self, task: QTask) -> list[str]:
        """The stdout lines written since the previous call, token-scrubbed."""
        return self.redact(task.fresh_stdout()).splitlines()

    def download_results(self, task: QTask, local_dir: str | Path) -> list[Path]:
        """Download a task's results into `local_dir`; returns the files written."""
        return task.download_results(local_dir)


__all__ = [
    "DEFAULT_CONN_ID",
    "DEFAULT_CONSOLE_URL",
    "InvalidConnectionError",
    "QarnotConnectionSettings",
    "QarnotHook",
    "ReattachDecision",
    "TaskInstanceIdentity",
    "decide_reattach",
]
