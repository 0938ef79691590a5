"""`QarnotTaskSensor`: wait for an existing Qarnot task to end, in poke, reschedule or deferrable mode."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, BaseSensorOperator, PokeReturnValue, conf
from airflow.sdk.exceptions import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferralTimeout,
)

from airflow_provider_qarnot.client import states
from airflow_provider_qarnot.hooks.qarnot import DEFAULT_CONN_ID, QarnotHook
from airflow_provider_qarnot.links.qarnot import XCOM_TASK_URL, XCOM_TASK_UUID, QarnotTaskLink
from airflow_provider_qarnot.operators.qarnot import MAX_TIMEOUT, seconds
from airflow_provider_qarnot.triggers.qarnot import (
    DEFERRAL_BACKSTOP,
    EVENT_STATUSES,
    MAX_ERROR_REDEFERS,
    QarnotTaskTrigger,
    next_watch,
    shared_polling_default,
)
from airflow_provider_qarnot.utils.errors import airflow_errors, task_outcome_exception

if TYPE_CHECKING:
    from airflow.sdk import Context


class QarnotTaskSensor(BaseSensorOperator):
    """Succeed when a Qarnot task reaches Success; fail when it ends in Failure or Cancelled.

    A failed or cancelled task fails the sensor without retry (the task cannot change any more) and
    with the Qarnot errors in the message; `soft_fail=True` turns that, and a timeout, into a skip.
    The sensor never aborts the task it watches.

    :param task_uuid: the Qarnot task (templated; typically `{{ ti.xcom_pull(task_ids='submit') }}`).
    :param qarnot_conn_id: the Airflow connection of type `qarnot`.
    :param deferrable: wait in the triggerer (through `QarnotTaskTrigger`) instead of poking.
    :param shared_polling: let the trigger poll through the shared poller (default `[qarnot] shared_polling`).
    `poke_interval`, `timeout`, `mode` ("poke" or "reschedule") and `soft_fail` are the usual sensor arguments.
    """

    template_fields: Sequence[str] = ("task_uuid", "qarnot_conn_id")
    operator_extra_links = (QarnotTaskLink(),)
    ui_color = "#fbe3c0"

    def __init__(
        self,
        *,
        task_uuid: str,
        qarnot_conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        shared_polling: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.task_uuid = task_uuid
        self.qarnot_conn_id = qarnot_conn_id
        self.deferrable = deferrable
        self.shared_polling = shared_polling
        #: The task's uuid as Qarnot reports it (`task_uuid` may be a shortname), once read.
        self._canonical_uuid: str | None = None

    @cached_property
    def hook(self) -> QarnotHook:
        """The hook of `qarnot_conn_id` (built on first use, after templates are rendered)."""
        return QarnotHook(self.qarnot_conn_id)

    def _uuid(self) -> str:
        if not isinstance(self.task_uuid, str) or not self.task_uuid.strip():
            raise AirflowFailException(f"task_uuid must be a non-empty Qarnot task uuid, got {self.task_uuid!r}")
        return self.task_uuid.strip()

    def execute(self, context: Context) -> Any:
        """Publish the console URL, then poke (or reschedule) like any sensor, or defer after one poke."""
        uuid = self._uuid()
        with airflow_errors("Reading the Qarnot connection"):
            url = self.hook.task_url(uuid)
        context["ti"].xcom_push(key=XCOM_TASK_UUID, value=uuid)
        context["ti"].xcom_push(key=XCOM_TASK_URL, value=url)
        if not self.deferrable:
            return super().execute(context)
        poke_interval = seconds(self.poke_interval, "poke_interval", allow_none=False, maximum=MAX_TIMEOUT)
        timeout = seconds(self.timeout, "timeout", allow_none=False, maximum=MAX_TIMEOUT)
        assert poke_interval is not None and timeout is not None
        try:
            done = self.poke(context)
        except AirflowException as exc:
            raise self._skip_or(exc) from exc
        if done:
            return self._canonical_uuid or uuid
        self._defer(self._canonical_uuid or uuid, time.time() + timeout)

    def _defer(self, uuid: str, deadline: float, error_redefers: int = 0) -> None:
        """Wait in the triggerer until `deadline`; Airflow's own deferral timeout comes later."""
        shared = shared_polling_default() if self.shared_polling is None else self.shared_polling
        self.defer(
            trigger=QarnotTaskTrigger(
                task_uuid=uuid,  # the canonical uuid: the shared poller's batch reads match uuids only
                qarnot_conn_id=self.qarnot_conn_id,
                deadline=deadline,
                poll_interval=self.poke_interval,
                cancel_on_kill=False,
                shared_polling=shared,
            ),
            method_name="execute_complete",
            kwargs={"deadline": deadline, "error_redefers": error_redefers},
            timeout=timedelta(seconds=max(0.0, deadline - time.time()) + DEFERRAL_BACKSTOP + self.poke_interval),
        )

    def poke(self, context: Context) -> bool | PokeReturnValue:
        """One state check: done on Success, AirflowFailException on Failure or Cancelled, else not yet."""
        uuid = self._uuid()
        with airflow_errors(f"Reading Qarnot task {uuid}"):
            summary = self.hook.get_summary(uuid)
        ti = context.get("ti")
        if self._canonical_uuid is None and summary.uuid and summary.uuid != uuid and ti is not None:
            # `task_uuid` was a shortname: publish the uuid it names, for downstream tasks and the link.
            ti.xcom_push(key=XCOM_TASK_UUID, value=summary.uuid)
            ti.xcom_push(key=XCOM_TASK_URL, value=self.hook.task_url(summary.uuid))
        self._canonical_uuid = summary.uuid or uuid
        if states.is_success(summary.state):
            self.log.info("Qarnot task %s succeeded", uuid)
            return PokeReturnValue(is_done=True, xcom_value=self._canonical_uuid)
        if states.is_final(summary.state):
            raise task_outcome_exception(summary, retryable=False, redact=self.hook.redact)
        self.log.info("Qarnot task %s is %s", uuid, summary.state)
        return False

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Resume after the trigger with the poke loop's skip rules, not `BaseSensorOperator`'s broader ones.

        Airflow's deferred-sensor resume skips (with `soft_fail`) on any failure, an API blip or a crashed
        trigger included; here, as in the poke loop, `soft_fail` skips only outcomes that cannot change (the
        task failed or was cancelled) and timeouts; `never_fail` skips everything.
        """
        try:
            try:
                return BaseOperator.resume_execution(self, next_method, next_kwargs, context)
            except TaskDeferralTimeout as exc:
                raise AirflowSensorTimeout(*exc.args) from exc
        except AirflowException as exc:  # TaskDeferralError (a crashed trigger) is one too
            raise self._skip_or(exc) from exc

    def _skip_or(self, exc: AirflowException) -> AirflowException:
        """The poke loop's rules: `soft_fail` skips outcomes that cannot change (AirflowFailException) and
        timeouts, `never_fail` skips everything; any other failure (an API blip) is raised as it is."""
        if isinstance(exc, AirflowSkipException):
            return exc
        if self.never_fail or (self.soft_fail and isinstance(exc, AirflowFailException | AirflowSensorTimeout)):
            return AirflowSkipException(f"Skipping ({'never_fail' if self.never_fail else 'soft_fail'}): {exc}")
        return exc

    def execute_complete(
        self,
        context: Context,
        event: dict[str, Any] | None = None,
        deadline: float | None = None,
        error_redefers: int | None = None,
    ) -> str:
        """Resume after the trigger's event; after an `error` event, watch a still running task again (to
        the same deadline, up to `MAX_ERROR_REDEFERS` times, when the deferral's kwargs came back with the
        event) rather than fail on an API blip."""
        if not isinstance(event, dict) or event.get("status") not in EVENT_STATUSES:
            raise AirflowException(f"Unexpected event from the Qarnot trigger: {event!r}")
        status, message = event["status"], str(event.get("message") or "")
        if status == "success":
            return str(event.get("task_uuid") or self.task_uuid)
        if status == "timeout":
            raise AirflowSensorTimeout(f"Sensor timed out: {message}")
        if status == "error":
            # The trigger gave up polling: one poke says whether the task ended meanwhile, is gone for good
            # (AirflowFailException), or still runs (a retryable failure).
            if self.poke(context):
                return str(event.get("task_uuid") or self.task_uuid)
            failure = f"Watching Qarnot task {event.get('task_uuid')} failed: {message}"
            again = next_watch(error_redefers)
            if deadline is not None and again is not None:
                self.log.warning(
                    "%s; the task still runs: watching it again (%d of %d)", failure, again, MAX_ERROR_REDEFERS
                )
                self._defer(self._canonical_uuid or self._uuid(), deadline, again)
            raise AirflowException(failure)
        raise AirflowFailException(message)


__all__ = ["QarnotTaskSensor"]
