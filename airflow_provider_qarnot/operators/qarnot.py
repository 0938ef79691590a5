"""`QarnotSubmitTaskOperator`: submit a Qarnot task (or reattach to an earlier try's), wait for it, report it."""

from __future__ import annotations

import ast
import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, conf
from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR, TriggerFailureReason
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowTaskTimeout

from airflow_provider_qarnot.client import states
from airflow_provider_qarnot.client.exceptions import MissingTaskException, QarnotException
from airflow_provider_qarnot.client.models import parse_timespan
from airflow_provider_qarnot.client.retry import RetryPolicy
from airflow_provider_qarnot.client.spec import ResourceBucket, TaskSpec
from airflow_provider_qarnot.client.task import QTask
from airflow_provider_qarnot.hooks.qarnot import DEFAULT_CONN_ID, QarnotHook, TaskInstanceIdentity
from airflow_provider_qarnot.links.qarnot import XCOM_TASK_URL, XCOM_TASK_UUID, QarnotTaskLink
from airflow_provider_qarnot.triggers.poller import POLL_RETRY
from airflow_provider_qarnot.triggers.qarnot import (
    DEFERRAL_BACKSTOP,
    EVENT_STATUSES,
    MAX_ERROR_REDEFERS,
    QarnotTaskTrigger,
    next_watch,
    shared_polling_default,
)
from airflow_provider_qarnot.utils.errors import (
    airflow_errors,
    task_outcome_exception,
    task_outcome_message,
    to_airflow_exception,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Bounds on the waiting parameters: a poll interval over an hour, or a huge log tail, is a typo, not a choice.
MAX_POLL_INTERVAL = 3600.0
#: When `execution_timeout` cuts a submit short, look for the task it may have created after these waits
#: (seconds, one after the other: at 0, 2 and 7 s): a server may commit a request whose client has gone late.
SUBMIT_CUT_SHORT_LOOKS = (0.0, 2.0, 5.0)
#: The longest `timeout` (ten years): past it a deadline is no limit, and dates and timedeltas overflow.
MAX_TIMEOUT = 10 * 366 * 24 * 3600.0
MAX_LOG_TAIL_LINES = 10_000
#: With auto_delete and wait_for_completion, the task must outlive its end by this much (and 3 polls).
MIN_AUTO_DELETE_TTL = 60.0

#: TaskSpec fields the operator exposes under the same name. The spec's `resources` is the operator's
#: `resource_buckets`: `BaseOperator.resources` is Airflow's own CPU/RAM hint, and `.partial()`/`.expand()`
#: hand a `resources` argument to Airflow's serializer as such.
SPEC_FIELDS: tuple[str, ...] = tuple(f for f in TaskSpec.field_names() if f not in ("name", "resources"))
#: Fields that a template renders as text but that the API needs as integers or booleans.
INT_FIELDS = (
    "instance_count",
    "max_retries_per_instance",
    "max_total_retries",
    "max_time_queue_seconds",
    "results_cache_ttl_sec",
    "default_resources_cache_ttl_sec",
)
BOOL_FIELDS = (
    "auto_delete",
    "export_credentials",
    "upload_results_on_cancellation",
    "wait_for_pool_resources_synchronization",
)
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")
_TRUE_TEXT = {"true", "yes", "on", "1"}
_FALSE_TEXT = {"false", "no", "off", "0"}
JSON_FIELDS = (
    "constants",
    "constraints",
    "tags",
    "labels",
    "resource_buckets",
    "hardware_constraints",
    "depends_on",
    "secrets_access",
)


def seconds(value: Any, argument: str, *, allow_none: bool = True, maximum: float | None = None) -> float | None:
    """A positive number of seconds from a number or a timedelta; AirflowFailException names `argument`."""
    if value is None and allow_none:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    elif isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise AirflowFailException(
                f"{argument} must be a number of seconds or a timedelta, got {value!r}"
            ) from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise AirflowFailException(
            f"{argument} must be a positive, finite number of seconds or a timedelta, got {value!r}"
        )
    if maximum is not None and value > maximum:
        raise AirflowFailException(f"{argument} must be at most {maximum:g} seconds, got {value!r}")
    return float(value)


class QarnotSubmitTaskOperator(BaseOperator):
    """Run a Qarnot task: submit it (or reattach on retry), wait for it, log its stdout, download its results.

    Task fields (all templated; see `TaskSpec` for their meaning): `name` (default `<dag_id>.<task_id>`),
    `profile`, `instance_count` or `advanced_ranges`, `constants`, `constraints`, `tags`, `labels`,
    `resource_buckets` (bucket names or `{"bucket_name", "prefix", "strip_prefix"}`), `result_bucket`,
    `results_bucket_prefix`, `hardware_constraints`, `scheduling_type`, `pool_uuid`, `job_uuid`,
    `shortname`, `depends_on`, `max_retries_per_instance`, `max_total_retries`, results/snapshot
    white/blacklists, `completion_ttl`, `max_time_queue_seconds`, `secrets_access` and the rest.

    :param qarnot_conn_id: the Airflow connection of type `qarnot`.
    :param wait_for_completion: wait until the Qarnot task is final (else return its uuid at once).
    :param deferrable: wait in the triggerer instead of holding a worker slot.
    :param poll_interval: seconds (or timedelta) between state checks.
    :param timeout: seconds (or timedelta) the Qarnot task may take from the start of this try; past it,
        the task is aborted and the Airflow task fails with a timeout message. None: no limit. The
        operator's `execution_timeout`, when shorter, applies the same way (also while deferred).
    :param cancel_on_kill: abort the Qarnot task when the Airflow task is killed, marked or cleared.
    :param reattach_on_retry: on a retry, attach to this task instance's still-running Qarnot task or
        take its successful one, instead of submitting a second task. Either way a retry aborts the
        earlier tries' tasks it does not attach to, and a try that gives up with no retry left aborts its own.
    :param download_results_to: a local directory (templated) to download the results into on success.
    :param log_tail_lines: how many last lines of stdout go to the task log when the Qarnot task ends.
    :param shared_polling: let the trigger poll through the shared poller (default `[qarnot] shared_polling`).
    """

    template_fields: Sequence[str] = (
        "qarnot_conn_id",
        "name",
        "resource_buckets",
        *SPEC_FIELDS,
        "download_results_to",
    )
    template_fields_renderers = dict.fromkeys(JSON_FIELDS, "json")
    operator_extra_links = (QarnotTaskLink(),)
    ui_color = "#fbe3c0"

    def __init__(
        self,
        *,
        qarnot_conn_id: str = DEFAULT_CONN_ID,
        name: str | None = None,
        profile: str | None = None,
        instance_count: int | str | None = None,
        advanced_ranges: str | None = None,
        constants: Mapping[str, str] | None = None,
        constraints: Mapping[str, str] | None = None,
        tags: Sequence[str] | None = None,
        labels: Mapping[str, str] | None = None,
        resource_buckets: Sequence[str | Mapping[str, Any] | ResourceBucket] | None = None,
        result_bucket: str | None = None,
        results_bucket_prefix: str | None = None,
        hardware_constraints: Sequence[Mapping[str, Any]] | None = None,
        scheduling_type: str | None = None,
        pool_uuid: str | None = None,
        job_uuid: str | None = None,
        project_uuid: str | None = None,
        shortname: str | None = None,
        depends_on: Sequence[str] | None = None,
        max_retries_per_instance: int | None = None,
        max_total_retries: int | None = None,
        results_whitelist: str | None = None,
        results_blacklist: str | None = None,
        snapshot_whitelist: str | None = None,
        snapshot_blacklist: str | None = None,
        auto_delete: bool = False,
        completion_ttl: timedelta | str | None = None,
        max_time_queue_seconds: int | None = None,
        secrets_access: Mapping[str, Any] | None = None,
        results_cache_ttl_sec: int | None = None,
        default_resources_cache_ttl_sec: int | None = None,
        targeted_reservation_name: str | None = None,
        upload_results_on_cancellation: bool | None = None,
        wait_for_pool_resources_synchronization: bool | None = None,
        export_credentials: bool = False,
        wait_for_completion: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float | timedelta = 10.0,
        timeout: float | timedelta | None = None,
        cancel_on_kill: bool = True,
        reattach_on_retry: bool = True,
        download_results_to: str | None = None,
        log_tail_lines: int = 50,
        shared_polling: bool | None = None,
        **kwargs: Any,
    ) -> None:
        airflow_resources = kwargs.get("resources")
        if airflow_resources is not None and not isinstance(airflow_resources, Mapping):
            # A list can only mean Qarnot buckets (Airflow's own `resources` is a mapping): accept it here.
            # `.partial()`/`.expand()` cannot take it this way; they need `resource_buckets`.
            if resource_buckets is not None:
                raise TypeError("give the Qarnot resource buckets as resource_buckets=, not also as resources=")
            resource_buckets = kwargs.pop("resources")
        super().__init__(**kwargs)
        self.qarnot_conn_id = qarnot_conn_id
        self.name = name
        self.profile = profile
        self.instance_count = instance_count
        self.advanced_ranges = advanced_ranges
        self.constants = constants
        self.constraints = constraints
        self.tags = tags
        self.labels = labels
        self.resource_buckets = resource_buckets
        self.result_bucket = result_bucket
        self.results_bucket_prefix = results_bucket_prefix
        self.hardware_constraints = hardware_constraints
        self.scheduling_type = scheduling_type
        self.pool_uuid = pool_uuid
        self.job_uuid = job_uuid
        self.project_uuid = project_uuid
        self.shortname = shortname
        self.depends_on = depends_on
        self.max_retries_per_instance = max_retries_per_instance
        self.max_total_retries = max_total_retries
        self.results_whitelist = results_whitelist
        self.results_blacklist = results_blacklist
        self.snapshot_whitelist = snapshot_whitelist
        self.snapshot_blacklist = snapshot_blacklist
        self.auto_delete = auto_delete
        self.completion_ttl = completion_ttl
        self.max_time_queue_seconds = max_time_queue_seconds
        self.secrets_access = secrets_access
        self.results_cache_ttl_sec = results_cache_ttl_sec
        self.default_resources_cache_ttl_sec = default_resources_cache_ttl_sec
        self.targeted_reservation_name = targeted_reservation_name
        self.upload_results_on_cancellation = upload_results_on_cancellation
        self.wait_for_pool_resources_synchronization = wait_for_pool_resources_synchronization
        self.export_credentials = export_credentials
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.cancel_on_kill = cancel_on_kill
        self.reattach_on_retry = reattach_on_retry
        self.download_results_to = download_results_to
        self.log_tail_lines = log_tail_lines
        self.shared_polling = shared_polling
        self._task_uuid: str | None = None
        self._streamed = False
        self._killed = False
        self._aborted = False  # this try's task was aborted already (no second abort from on_kill)
        #: While a submit is under way: who submits (to find what a submit cut short may have created).
        self._submitting: tuple[TaskInstanceIdentity, int | None] | None = None

    @cached_property
    def hook(self) -> QarnotHook:
        """The hook of `qarnot_conn_id` (built on first use, after templates are rendered)."""
        return QarnotHook(self.qarnot_conn_id)

    # ------------------------------------------------------------------ arguments

    def build_spec(self, context: Context) -> TaskSpec:
        """The validated task spec, tagged and labelled with this task instance; AirflowFailException names a bad field.

        Called before any API call, after templates are rendered.
        """
        identity = TaskInstanceIdentity.from_context(context)
        fields: dict[str, Any] = {f: getattr(self, f) for f in SPEC_FIELDS}
        fields["resources"] = self.resource_buckets
        for key in JSON_FIELDS:
            spec_key = "resources" if key == "resource_buckets" else key
            fields[spec_key] = _decode_json(fields[spec_key], key)
        for key in INT_FIELDS:
            fields[key] = _rendered_int(fields[key])
        for key in BOOL_FIELDS:
            fields[key] = _rendered_bool(fields[key], key)
        for key in ("constants", "constraints", "labels", "secrets_access"):
            if fields[key] is None:
                fields.pop(key)
        for key in ("tags", "resources", "hardware_constraints", "depends_on"):
            if fields[key] is None:
                fields[key] = ()
        default_name = f"{identity.dag_id}.{identity.task_id}"
        if identity.map_index >= 0:
            default_name += f"[{identity.map_index}]"
        fields["name"] = self.name if self.name is not None else default_name
        if isinstance(fields["tags"], list | tuple):
            fields["tags"] = [*fields["tags"], identity.tag]
        user_labels = fields.get("labels")
        if user_labels is None or isinstance(user_labels, Mapping):
            try_number = getattr(context["ti"], "try_number", None)
            fields["labels"] = {**(user_labels or {}), **identity.labels(try_number)}
        spec = TaskSpec(**fields)
        try:
            spec.validate()
        except ValueError as exc:
            raise AirflowFailException(f"Invalid Qarnot task argument: {exc}") from exc
        return spec

    def check_arguments(self) -> tuple[float, float | None]:
        """Check the waiting arguments; returns (poll_interval, time limit) in seconds.

        The time limit is the shorter of `timeout` and `execution_timeout` (Airflow 3.3 does not enforce
        `execution_timeout` while a task is deferred, so the operator does, through the trigger's deadline).
        """
        poll = seconds(self.poll_interval, "poll_interval", allow_none=False, maximum=MAX_POLL_INTERVAL)
        assert poll is not None
        timeout = seconds(self.timeout, "timeout", maximum=MAX_TIMEOUT)
        if self.execution_timeout is not None:
            limit = self.execution_timeout.total_seconds()
            timeout = limit if timeout is None else min(timeout, limit)
        self._check_auto_delete(poll)
        lines = self.log_tail_lines
        if isinstance(lines, bool) or not isinstance(lines, int) or not 0 <= lines <= MAX_LOG_TAIL_LINES:
            raise AirflowFailException(
                f"log_tail_lines must be an integer from 0 to {MAX_LOG_TAIL_LINES}, got {lines!r}"
            )
        if self.download_results_to is not None:
            if not isinstance(self.download_results_to, str) or not self.download_results_to.strip():
                raise AirflowFailException(
                    f"download_results_to must be a directory path, got {self.download_results_to!r}"
                )
            if not self.wait_for_completion:
                raise AirflowFailException("download_results_to needs wait_for_completion=True")
        if self.deferrable and not self.wait_for_completion:
            self.log.warning("deferrable=True has no effect with wait_for_completion=False")
        return poll, timeout

    def _check_auto_delete(self, poll_interval: float) -> None:
        """Waiting for a task that Qarnot deletes as soon as it ends would end in "task not found"."""
        if _rendered_bool(self.auto_delete, "auto_delete") is not True or not self.wait_for_completion:
            return
        ttl = self.completion_ttl
        ttl = parse_timespan(ttl) if isinstance(ttl, str) else ttl
        if self.completion_ttl is not None and not isinstance(ttl, timedelta):
            return  # unreadable: build_spec names it
        minimum = max(MIN_AUTO_DELETE_TTL, 3 * poll_interval)
        if ttl is None or ttl.total_seconds() < minimum:
            raise AirflowFailException(
                f"auto_delete=True with wait_for_completion=True needs a completion_ttl of at least {minimum:g} "
                f"seconds (max(60, 3 x poll_interval)), got {self.completion_ttl!r}: Qarnot would delete the task "
                "before the operator reads how it ended. Set completion_ttl (e.g. timedelta(minutes=10)) or "
                "wait_for_completion=False"
            )

    # ------------------------------------------------------------------ execution

    def execute(self, context: Context) -> str:
        """Submit or reattach, publish the uuid and console URL, then wait here or in the triggerer.

        When `execution_timeout` fires on the worker (during the submit, the wait or the download), the
        Qarnot task is aborted whatever `cancel_on_kill` says: it is a time limit like `timeout`.
        """
        try:
            return self._execute(context)
        except AirflowTaskTimeout:
            if self._task_uuid is not None and not self._aborted:
                self.log.error("execution_timeout passed: aborting Qarnot task %s", self._task_uuid)
                self._abort_quietly(self._task_uuid, POLL_RETRY)
            elif self._submitting is not None:
                self.log.error("execution_timeout passed during the submit: aborting what it may have created")
                try:  # short retries: the time is up already, and a slow API is likely why
                    hook = QarnotHook(self.qarnot_conn_id, settings=self.hook.settings, retry=POLL_RETRY)
                    hook.abort_tasks_of_try(*self._submitting, looks=SUBMIT_CUT_SHORT_LOOKS)
                except Exception as exc:
                    self.log.warning(
                        "Could not look for the task of the cut-short submit: %s", self.hook.redact(str(exc))
                    )
            raise

    def _execute(self, context: Context) -> str:
        poll_interval, timeout = self.check_arguments()
        spec = self.build_spec(context)
        deadline = None if timeout is None else time.time() + timeout
        identity = TaskInstanceIdentity.from_context(context)
        hook = self.hook
        try_number = getattr(context["ti"], "try_number", None)
        self._submitting = (identity, try_number)
        with airflow_errors(f"Submitting Qarnot task {spec.name!r}"):
            task, decision = hook.submit_or_reattach(
                spec,
                identity,
                first_try=_first_try(context, self.retries),
                try_number=try_number,
                reattach=self.reattach_on_retry,
                on_created=self._on_created,
            )
        self._submitting = None
        uuid = str(task.uuid)
        self._task_uuid = uuid
        if decision.action == "submit":
            self.log.info("Submitted Qarnot task %s (%s; %s)", uuid, spec.name, decision.reason)
        else:
            self.log.info("Reattached to Qarnot task %s instead of submitting: %s", uuid, decision.reason)
        url = hook.task_url(uuid)
        context["ti"].xcom_push(key=XCOM_TASK_UUID, value=uuid)
        context["ti"].xcom_push(key=XCOM_TASK_URL, value=url)
        self.log.info("Qarnot task %s is %s: %s", uuid, task.state, url)
        if not self.wait_for_completion:
            return uuid
        if states.is_final(task.state):
            return self._finish(hook, task)
        if self.deferrable:
            self._defer(uuid, deadline, poll_interval)
        return self._wait_here(context, hook, task, poll_interval, deadline, timeout)

    def _defer(self, uuid: str, deadline: float | None, poll_interval: float, error_redefers: int = 0) -> None:
        """Wait for the task in the triggerer until `deadline`; Airflow's own deferral timeout comes later."""
        shared = shared_polling_default() if self.shared_polling is None else self.shared_polling
        backstop = None if deadline is None else max(0.0, deadline - time.time()) + DEFERRAL_BACKSTOP + poll_interval
        self.defer(
            trigger=QarnotTaskTrigger(
                task_uuid=uuid,
                qarnot_conn_id=self.qarnot_conn_id,
                deadline=deadline,
                poll_interval=poll_interval,
                cancel_on_kill=self.cancel_on_kill,
                shared_polling=shared,
            ),
            method_name="execute_complete",
            kwargs={"deadline": deadline, "error_redefers": error_redefers},
            timeout=None if backstop is None else timedelta(seconds=backstop),
        )

    def _on_created(self, uuid: str) -> None:
        """The Qarnot task exists: remember it at once, so that a kill arriving during the submit aborts it."""
        self._task_uuid = uuid
        if self._killed and self.cancel_on_kill:
            self._abort_quietly(uuid, POLL_RETRY)

    def _wait_here(
        self,
        context: Context,
        hook: QarnotHook,
        task: QTask,
        poll_interval: float,
        deadline: float | None,
        limit: float | None,
    ) -> str:
        """Wait on the worker, streaming new stdout to the task log at every poll."""
        self._streamed = True
        uuid = str(task.uuid)
        remaining = None if deadline is None else max(0.0, deadline - time.time())
        try:
            finished = task.wait(timeout=remaining, poll_interval=poll_interval, on_poll=self._stream_stdout)
        except (QarnotException, ValueError, TypeError) as exc:
            raise self._give_up(context, uuid, to_airflow_exception(exc, f"Waiting for Qarnot task {uuid}")) from exc
        if not finished:
            raise AirflowException(
                f"Timeout: Qarnot task {uuid} was still {task.state} at the end of its {limit:g}-second "
                f"limit (timeout, or execution_timeout when shorter); {self._abort_for_timeout(uuid)}"
            )
        return self._finish(hook, task)

    def _stream_stdout(self, task: QTask) -> None:
        """Log the stdout written since the last poll."""
        self._log_stdout(task, lambda: self.hook.fresh_stdout(task))

    def _log_tail(self, hook: QarnotHook, task: QTask) -> None:
        """Log the last `log_tail_lines` lines of stdout (unless they were streamed already)."""
        if not self._streamed and self.log_tail_lines > 0:
            self._log_stdout(task, lambda: hook.stdout_tail(task, self.log_tail_lines), tail=True)

    def _log_stdout(self, task: QTask, read: Callable[[], list[str]], tail: bool = False) -> None:
        """Copy stdout lines to the task log; a failure to read them never fails the task."""
        try:
            lines = read()
        except Exception as exc:
            self.log.warning("Could not read the stdout of Qarnot task %s: %s", task.uuid, exc)
            return
        if tail and lines:
            self.log.info("Last %d line(s) of the stdout of Qarnot task %s:", len(lines), task.uuid)
        for line in lines:
            self.log.info("[qarnot %s] %s", task.uuid, line)

    def _finish(self, hook: QarnotHook, task: QTask) -> str:
        """Report a final task: log its stdout tail, then download its results or raise its failure."""
        summary = task.summary
        assert summary is not None
        self._log_tail(hook, task)
        if not states.is_success(summary.state):
            raise task_outcome_exception(summary, redact=hook.redact)
        self.log.info(task_outcome_message(summary, redact=hook.redact))
        if self.download_results_to:
            with airflow_errors(f"Downloading the results of Qarnot task {task.uuid}"):
                files = hook.download_results(task, self.download_results_to)
            self.log.info("Downloaded %d result file(s) to %s", len(files), self.download_results_to)
        return str(task.uuid)

    def execute_complete(
        self,
        context: Context,
        event: dict[str, Any] | None = None,
        deadline: float | None = None,
        error_redefers: int | None = None,
    ) -> str:
        """Resume after the trigger's event: finish on a final state, abort and fail on timeout, fail on error.

        After an `error` event (the trigger gave up polling), a task that reads as still running is watched
        again, to the same deadline, up to `MAX_ERROR_REDEFERS` times: the API is back, and the work done
        so far is not thrown away. Without the deferral's kwargs (`dag.test()` drops them when it passes
        the event), how often that happened is unknown, so it is not done.
        """
        if not isinstance(event, dict) or event.get("status") not in EVENT_STATUSES or not event.get("task_uuid"):
            raise AirflowException(f"Unexpected event from the Qarnot trigger: {event!r}")
        uuid = str(event["task_uuid"])
        self._task_uuid = uuid
        status = event["status"]
        if status == "timeout":
            raise AirflowException(f"{event.get('message') or 'Timeout'}; {self._abort_for_timeout(uuid)}")
        hook = self.hook
        if status == "error":
            # The trigger gave up polling. One read here says whether the task ended meanwhile (report it),
            # is gone or unreadable for good (fail without retry), or still runs (leave it for a retry).
            failure = AirflowException(f"Waiting for Qarnot task {uuid} failed: {event.get('message')}")
            try:
                task = hook.get_task(uuid)
            except MissingTaskException as exc:
                if _rendered_bool(self.auto_delete, "auto_delete"):  # it may have ended, and then been deleted
                    raise AirflowException(
                        f"{failure}; the Qarnot task no longer exists (auto_delete may have removed it once it "
                        "ended, so its outcome is unknown)"
                    ) from exc
                raise AirflowFailException(f"{failure}; the Qarnot task no longer exists") from exc
            except (QarnotException, ValueError, TypeError) as exc:
                mapped = to_airflow_exception(exc, f"Reading Qarnot task {uuid}")
                if isinstance(mapped, AirflowFailException):
                    raise AirflowFailException(f"{failure}; {mapped}") from exc
                raise self._give_up(context, uuid, failure) from exc
            if states.is_final(task.state):
                return self._finish(hook, task)
            again = next_watch(error_redefers)
            if again is not None:
                self.log.warning(
                    "%s; Qarnot task %s reads as %s now: watching it again (%d of %d)",
                    failure,
                    uuid,
                    task.state,
                    again,
                    MAX_ERROR_REDEFERS,
                )
                poll_interval, _ = self.check_arguments()
                self._defer(uuid, deadline, poll_interval, again)
            raise self._give_up(context, uuid, failure)
        try:
            task = hook.get_task(uuid)
        except MissingTaskException:  # deleted since it ended (auto_delete): the event is all there is
            return self._finish_from_event(event, "it was deleted since")
        except (QarnotException, ValueError, TypeError) as exc:
            raise to_airflow_exception(exc, f"Reading Qarnot task {uuid}") from exc
        if not states.is_final(task.state):  # the event saw it final: trust it over a stale read
            return self._finish_from_event(event, f"a new read says {task.state}")
        return self._finish(hook, task)

    def _finish_from_event(self, event: dict[str, Any], why: str) -> str:
        """Report a final task from the trigger's event alone, when the task can no longer be read as final."""
        uuid, message = str(event["task_uuid"]), str(event.get("message") or "")
        if event["status"] != "success":
            raise AirflowException(message or f"Qarnot task {uuid} ended with status {event['status']}")
        self.log.info("%s (the task's own record is not available: %s)", message, why)
        if self.download_results_to:
            # Retryable: the next try finds no task to reuse and computes the results again.
            raise AirflowException(
                f"Qarnot task {uuid} succeeded, but its results cannot be downloaded ({why}): raise "
                "completion_ttl so that the task outlives the wait for a worker"
            )
        return uuid

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Also handle the resumes Airflow fails on its own, which bypass `execute_complete` and `on_kill`.

        On a deferral timeout (Airflow's backstop) the Qarnot task is aborted; on a trigger failure it is
        aborted when no retry is left. Then Airflow raises `TaskDeferralTimeout` or `TaskDeferralError`.
        """
        if next_method == TRIGGER_FAIL_REPR:
            self._after_failed_deferral(context, (next_kwargs or {}).get("error"))
        return super().resume_execution(next_method, next_kwargs, context)

    def _after_failed_deferral(self, context: Context, error: Any) -> None:
        """Abort the Qarnot task of a deferral that timed out, or whose trigger failed on the last try."""
        ti = context["ti"]
        try:
            uuid = ti.xcom_pull(task_ids=ti.task_id, key=XCOM_TASK_UUID, map_indexes=ti.map_index)
        except Exception as exc:
            self.log.warning("Could not read the Qarnot task uuid from XCom; nothing aborted: %s", exc)
            return
        if not isinstance(uuid, str) or not uuid:
            return
        self._task_uuid = uuid
        if error == TriggerFailureReason.TRIGGER_TIMEOUT:
            self.log.error("The deferral timed out: aborting Qarnot task %s", uuid)
            self._abort_quietly(uuid)
        else:
            self.log.error("%s", self._give_up(context, uuid, AirflowException(f"The trigger failed: {error}")))

    def _give_up(self, context: Context, uuid: str, exc: AirflowException) -> AirflowException:
        """The exception for a try that gives up on its Qarnot task: abort the task unless a retry will reattach.

        Nothing can reattach when no retry is left, when the error cannot pass (AirflowFailException), or
        when `reattach_on_retry` is off (the next try would abort it anyway).
        """
        if self.reattach_on_retry and not isinstance(exc, AirflowFailException) and not _last_try(context):
            return type(exc)(f"{exc}; Qarnot task {uuid} is left running for the next try to reattach")
        if self._abort_quietly(uuid):
            return type(exc)(f"{exc}; no retry will reattach, so Qarnot task {uuid} was aborted")
        return type(exc)(f"{exc}; no retry will reattach, but aborting Qarnot task {uuid} failed (see the log)")

    def _abort_for_timeout(self, uuid: str) -> str:
        """Abort a task whose time is up; says, for the failure's message, whether that worked."""
        if self._abort_quietly(uuid):
            return "the Qarnot task was aborted"
        return f"aborting Qarnot task {uuid} failed (see the log), so it may still be running"

    def _abort_quietly(self, uuid: str, retry: RetryPolicy | None = None) -> bool:
        """Abort a Qarnot task, best effort; False (and a warning) when that failed."""
        try:
            QarnotHook(self.qarnot_conn_id, settings=self.hook.settings, retry=retry).abort_task(uuid)
        except Exception as exc:
            self.log.warning("Could not abort Qarnot task %s: %s", uuid, self.hook.redact(str(exc)))
            return False
        self._aborted = uuid == self._task_uuid or self._aborted
        return True

    def on_kill(self) -> None:
        """The worker is killing this task (SIGTERM, execution_timeout): abort the Qarnot task if asked to.

        It runs in a signal handler, so the abort uses a short retry policy. A kill that arrives before the
        task exists is remembered, and the task is aborted as soon as it is created.
        """
        self._killed = True
        if self.cancel_on_kill and self._task_uuid and not self._aborted:
            self._abort_quietly(self._task_uuid, POLL_RETRY)


def _decode_json(value: Any, argument: str) -> Any:
    """A list or mapping argument given as rendered text (a template) is decoded: JSON (`| tojson`), or the
    Python literal that Jinja writes for a dict or list (`{{ params.constants }}` renders with single quotes)."""
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            pass
        try:
            return ast.literal_eval(value.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise AirflowFailException(
                f"{argument} is a string that is neither JSON nor a Python literal: {value[:200]!r}"
            ) from None
    return value


def _rendered_int(value: Any) -> Any:
    """An integer field rendered from a template ("8") as the integer; anything else is left to validation."""
    if isinstance(value, str):
        text = value.strip()
        if text == "None":
            return None
        if _INTEGER_TEXT.fullmatch(text):
            return int(text)
    return value


def _rendered_bool(value: Any, argument: str) -> Any:
    """A boolean field rendered from a template ("False") as the boolean: `bool("False")` would be True."""
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    if text in _TRUE_TEXT:
        return True
    if text in _FALSE_TEXT:
        return False
    if text == "none":
        return None
    raise AirflowFailException(f"{argument} must be true or false, got {value!r}")


def _last_try(context: Context) -> bool:
    """Whether Airflow will not retry this try if it fails: its try number is past `max_tries`.

    This is how the Execution API decides (`try_number <= max_tries` is retry-eligible).
    """
    ti = context["ti"]
    try_number, max_tries = getattr(ti, "try_number", None), getattr(ti, "max_tries", None)
    if not isinstance(try_number, int) or not isinstance(max_tries, int):
        return False
    return try_number > max_tries


def _first_try(context: Context, retries: int | None) -> int | None:
    """The first try number of the current run of this task instance (a clear starts a new run)."""
    max_tries = getattr(context["ti"], "max_tries", None)
    if not isinstance(max_tries, int) or isinstance(max_tries, bool):
        return None
    return max(1, max_tries - int(retries or 0) + 1)


__all__ = ["QarnotSubmitTaskOperator"]
