"""`QarnotTaskTrigger`: waits in the triggerer until a Qarnot task is final, its deadline passes, or polling fails."""

from __future__ import annotations

import asyncio
import importlib
import math
import time
import weakref
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from airflow.sdk import conf
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_qarnot.client import states
from airflow_provider_qarnot.client.exceptions import MissingTaskException
from airflow_provider_qarnot.client.models import TaskSummary
from airflow_provider_qarnot.hooks import DEFAULT_CONN_ID
from airflow_provider_qarnot.triggers.poller import POLL_RETRY, Watch, WatchOutcome, get_poller
from airflow_provider_qarnot.utils.errors import describe, is_transient, task_outcome_message

if TYPE_CHECKING:
    from airflow_provider_qarnot.hooks.qarnot import QarnotConnectionSettings, QarnotHook

# The triggerer imports this module on its event loop, so it stays light: the hook module (and with it
# `requests`, about 0.3 s to import) is loaded in a worker thread the first time a trigger runs.
_HOOK_MODULE = "airflow_provider_qarnot.hooks.qarnot"

#: The event status of each final state (any other state never ends the wait).
STATUS_BY_STATE: dict[str, str] = {
    states.SUCCESS: "success",
    states.FAILURE: "failure",
    states.CANCELLED: "cancelled",
}
EVENT_STATUSES = ("success", "failure", "cancelled", "timeout", "error")
DEFAULT_MAX_CONSECUTIVE_ERRORS = 20
#: How many times an operator or sensor watches its task again after an `error` event, when a read shows
#: that the task still runs (the API came back): more would hide an API that keeps failing.
MAX_ERROR_REDEFERS = 3
DEFAULT_MIN_EVENT_DELAY = 5.0
MAX_MIN_EVENT_DELAY = 300.0
#: How much later than the trigger's own deadline Airflow's deferral timeout fires (so our timeout event wins).
DEFERRAL_BACKSTOP = 120.0


def shared_polling_default() -> bool:
    """`[qarnot] shared_polling` (default True): whether new triggers poll through the shared poller."""
    return conf.getboolean("qarnot", "shared_polling", fallback=True)


def min_event_delay() -> float:
    """`[qarnot] min_event_delay` (default 5 s, at most 300): the least time between a trigger's start and
    its event. An unreadable value falls back to the default: a typo must not crash every trigger."""
    try:
        value = float(conf.getfloat("qarnot", "min_event_delay", fallback=DEFAULT_MIN_EVENT_DELAY))
    except Exception:
        return DEFAULT_MIN_EVENT_DELAY
    if not math.isfinite(value):
        return DEFAULT_MIN_EVENT_DELAY
    return min(max(value, 0.0), MAX_MIN_EVENT_DELAY)


def next_watch(error_redefers: int | None) -> int | None:
    """After an `error` event for a task that still runs: the count to defer again with, or None to give up
    (the budget is spent, or the deferral's kwargs did not come back with the event, as under `dag.test()`,
    so how often it happened is unknown)."""
    if error_redefers is None or error_redefers >= MAX_ERROR_REDEFERS:
        return None
    return error_redefers + 1


def task_event(
    status: str, task_uuid: str, state: str | None, message: str, errors: list[str] | None = None
) -> dict[str, Any]:
    """The one event shape: `{"status", "task_uuid", "state", "message", "errors"}` (JSON-native)."""
    return {"status": status, "task_uuid": task_uuid, "state": state, "message": message, "errors": errors or []}


def final_event(summary: TaskSummary) -> dict[str, Any]:
    """The event for a task in a final state."""
    errors = [str(e) for e in summary.errors]
    errors += [f"instance {i.instance_id}: {i.error or i.state}" for i in summary.instances if not i.succeeded]
    status = STATUS_BY_STATE[states.normalize_state(summary.state) or ""]
    return task_event(status, summary.uuid, summary.state, task_outcome_message(summary), errors)


class QarnotTaskTrigger(BaseTrigger):
    """Fire one event when a Qarnot task ends (success/failure/cancelled), its deadline passes, or polling fails.

    :param task_uuid: the Qarnot task to watch.
    :param qarnot_conn_id: the Airflow connection (read once per run, asynchronously; never the token itself).
    :param deadline: wall-clock epoch seconds after which a `timeout` event fires (None: no deadline).
    :param poll_interval: seconds between state checks.
    :param cancel_on_kill: abort the task when a user marks the deferred task failed/success or clears it.
    :param shared_polling: poll through the loop's shared poller (one batched request for all triggers
        of the connection) instead of one `GET /tasks/{uuid}` per trigger.
    :param max_consecutive_errors: the error budget: transient poll failures become an `error` event once
        no poll has succeeded for this many poll intervals.
    """

    def __init__(
        self,
        task_uuid: str,
        qarnot_conn_id: str = DEFAULT_CONN_ID,
        deadline: float | None = None,
        poll_interval: float = 10.0,
        cancel_on_kill: bool = True,
        shared_polling: bool = True,
        max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if not isinstance(task_uuid, str) or not task_uuid:
            raise ValueError("task_uuid must be a non-empty string")
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval!r}")
        if max_consecutive_errors < 1:
            raise ValueError("max_consecutive_errors must be at least 1")
        self.task_uuid = task_uuid
        self.qarnot_conn_id = qarnot_conn_id
        self.deadline = None if deadline is None else float(deadline)
        self.poll_interval = float(poll_interval)
        self.cancel_on_kill = bool(cancel_on_kill)
        self.shared_polling = bool(shared_polling)
        self.max_consecutive_errors = int(max_consecutive_errors)
        self._hook: QarnotHook | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The class path and exactly the constructor's kwargs (small, JSON-native, no secret)."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "task_uuid": self.task_uuid,
                "qarnot_conn_id": self.qarnot_conn_id,
                "deadline": self.deadline,
                "poll_interval": self.poll_interval,
                "cancel_on_kill": self.cancel_on_kill,
                "shared_polling": self.shared_polling,
                "max_consecutive_errors": self.max_consecutive_errors,
            },
        )

    def _remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.time()

    async def _get_hook(self) -> QarnotHook:
        if self._hook is None:
            self._hook = await self._new_hook()
        return self._hook

    async def _new_hook(self) -> QarnotHook:
        """A hook of this trigger's connection, with the loop's shared connection read and short retries."""
        hook_class = await _hook_class()
        settings = await _shared_settings(hook_class, self.qarnot_conn_id)
        return hook_class(self.qarnot_conn_id, settings=settings, retry=POLL_RETRY)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until there is something to report, then yield exactly one event."""
        started = time.monotonic()
        try:
            hook = await self._get_hook()
        except Exception as exc:
            event = task_event("error", self.task_uuid, None, f"Cannot read the Qarnot connection: {describe(exc)}")
            await self._settle(started, event)
            yield TriggerEvent(event)  # type: ignore[no-untyped-call]
            return
        mode = "the shared poller" if self.shared_polling else "its own polling"
        self.log.info("Waiting for Qarnot task %s (%s, every %ss)", self.task_uuid, mode, self.poll_interval)
        event = await self._wait(hook)
        await self._settle(started, event)
        # Messages and errors quote Qarnot (and through it the task's output): never the token.
        event["message"] = hook.redact(event["message"])
        event["errors"] = [hook.redact(e) for e in event["errors"]]
        self.log.info("Qarnot task %s: %s", self.task_uuid, event["message"])
        yield TriggerEvent(event)  # type: ignore[no-untyped-call]

    async def _settle(self, started: float, event: dict[str, Any]) -> None:
        """Hold an event that came within `[qarnot] min_event_delay` seconds of the trigger's start.

        Airflow 3.3 may fail a task whose trigger fires within seconds of its deferral: the worker's late
        "success" for the deferral reaches the scheduler after the resumed try started (apache/airflow#72716,
        #71580). A short hold lets the scheduler drain that event first; it costs nothing for tasks that
        run longer than the delay. A timeout is never held past the deadline.
        """
        delay = min_event_delay() - (time.monotonic() - started)
        remaining = self._remaining()
        if event["status"] == "timeout" or delay <= 0 or (remaining is not None and remaining <= 0):
            return
        await asyncio.sleep(delay if remaining is None else min(delay, remaining))

    async def _wait(self, hook: QarnotHook) -> dict[str, Any]:
        while True:
            if self.shared_polling:
                outcome = await self._wait_shared(hook.settings)
            else:
                outcome = await self._wait_direct(hook)
            if outcome is None:
                return await self._timeout_event(hook)
            if outcome.kind == "final" and outcome.summary is not None:
                return final_event(outcome.summary)
            if outcome.kind == "error":
                return task_event("error", self.task_uuid, None, outcome.message)
            # Missing from a batch: confirm with one direct read before reporting anything.
            try:
                summary = await asyncio.to_thread(hook.get_summary, self.task_uuid)
            except MissingTaskException:
                return task_event("error", self.task_uuid, None, f"Qarnot task {self.task_uuid} no longer exists")
            except Exception as exc:
                if not is_transient(exc):
                    return task_event("error", self.task_uuid, None, f"Reading the task failed: {describe(exc)}")
                continue
            if states.is_final(summary.state):
                return final_event(summary)

    async def _wait_shared(self, settings: QarnotConnectionSettings) -> WatchOutcome | None:
        poller = get_poller(settings)
        watch: Watch = poller.watch(self.task_uuid, self.poll_interval, self.max_consecutive_errors)
        try:
            return await watch.wait(self._remaining())
        finally:
            poller.unwatch(watch)

    async def _wait_direct(self, hook: QarnotHook) -> WatchOutcome | None:
        """Per-task polling: one `GET /tasks/{uuid}` per interval (the baseline shared polling is measured against).

        The reads feed a private `Watch`, so failures are judged exactly as the shared poller judges them.
        """
        watch = Watch(self.task_uuid, self.poll_interval, self.max_consecutive_errors)
        while not watch.done:
            remaining = self._remaining()
            if remaining is not None and remaining <= 0:
                return None
            await asyncio.sleep(self.poll_interval if remaining is None else min(self.poll_interval, remaining))
            if remaining is not None and remaining <= self.poll_interval:
                return None  # the deadline came first; _timeout_event reads the task one last time
            try:
                summary = await asyncio.to_thread(hook.get_summary, self.task_uuid)
            except MissingTaskException:
                watch.resolve(WatchOutcome("missing"))
            except Exception as exc:
                watch.on_error(exc)
                if not watch.done:
                    self.log.warning(
                        "Polling Qarnot task %s failed (%d in a row): %s", self.task_uuid, watch.consecutive_errors, exc
                    )
            else:
                watch.on_summary(summary)
        return await watch.wait(0)

    async def _timeout_event(self, hook: QarnotHook) -> dict[str, Any]:
        """At the deadline, one last read: a task that ended just in time is reported as such."""
        state: str | None = None
        try:
            summary = await asyncio.to_thread(hook.get_summary, self.task_uuid)
        except Exception as exc:
            self.log.warning("Last read of Qarnot task %s before timing out failed: %s", self.task_uuid, exc)
        else:
            if states.is_final(summary.state):
                return final_event(summary)
            state = summary.state
        return task_event(
            "timeout",
            self.task_uuid,
            state,
            f"Timeout: Qarnot task {self.task_uuid} was still {state or 'unfinished'} at its deadline",
        )

    async def on_kill(self) -> None:
        """A user marked the deferred task failed/success or cleared it: abort the Qarnot task (Airflow 3.3+).

        Not called on triggerer restart or normal completion, so running work survives those. Airflow 3.3
        may still call it when a trigger is reassigned to another triggerer (apache/airflow#73454): then
        the task instance is still DEFERRED, and the Qarnot task is left to the trigger's new home. A cleared
        task rerun fast enough to be DEFERRED again looks the same; its new try aborts the old task.
        """
        if not self.cancel_on_kill:
            self.log.info("cancel_on_kill is off; leaving Qarnot task %s running", self.task_uuid)
            return
        # Airflow cancels on_kill after 30 s. When a user marks a big mapped task failed, hundreds of aborts
        # queue for the same few worker threads: a cancel may end the wait, never the abort itself.
        abort = asyncio.ensure_future(self._abort_unless_deferred())
        _ABORTS_IN_FLIGHT.add(abort)
        abort.add_done_callback(_ABORTS_IN_FLIGHT.discard)
        await asyncio.shield(abort)

    async def _abort_unless_deferred(self) -> None:
        """Abort the Qarnot task, unless the task instance is still deferred (see `on_kill`)."""
        if not await self._safe_to_cancel():
            self.log.info(
                "The task instance is still deferred (its trigger moved to another triggerer, or a cleared "
                "task's next try deferred already and aborts this try's task itself): leaving Qarnot task %s",
                self.task_uuid,
            )
            return
        # A hook of its own: Airflow runs `cleanup()` (closing the trigger's hook) as soon as on_kill times out.
        hook = await self._new_hook()
        try:
            aborted = await asyncio.to_thread(hook.abort_task, self.task_uuid)
        except Exception as exc:  # nobody may be waiting any more: log it here
            self.log.warning("Could not abort Qarnot task %s: %s", self.task_uuid, hook.redact(describe(exc)))
            return
        finally:
            hook.close()
        self.log.info("Qarnot task %s %s", self.task_uuid, "aborted" if aborted else "was already over")

    async def _safe_to_cancel(self) -> bool:
        """Whether the task instance has left DEFERRED (a user acted on it); True when its state is unreadable."""
        try:
            state = await asyncio.to_thread(_task_instance_state, self.task_instance)
        except Exception as exc:
            self.log.warning(
                "Could not read the state of the task instance (%s); aborting Qarnot task %s as cancel_on_kill asks",
                exc,
                self.task_uuid,
            )
            return True
        return state != "deferred"

    async def cleanup(self) -> None:
        """Release the HTTP connections (never aborts anything: this runs on every exit, restarts included)."""
        if self._hook is not None:
            self._hook.close()


_hook_class_cache: type[QarnotHook] | None = None
#: Aborts started by `on_kill`, held until they end (a shielded task nobody references may be collected).
_ABORTS_IN_FLIGHT: set[asyncio.Future[None]] = set()


async def _hook_class() -> type[QarnotHook]:
    """`QarnotHook`, its module imported in a worker thread (the import lock hands every thread the finished
    module; `sys.modules` alone could show a module that another thread is still importing)."""
    global _hook_class_cache
    if _hook_class_cache is None:
        module = await asyncio.to_thread(importlib.import_module, _HOOK_MODULE)
        _hook_class_cache = module.QarnotHook
    return _hook_class_cache


#: How long the triggers of one event loop share one read of a connection. A burst of triggers (a mapped
#: task of a thousand deferring at once) then costs one connection read instead of a thousand round trips
#: to the triggerer's supervisor; a changed connection is seen by triggers started after this time.
SETTINGS_TTL = 30.0
_SETTINGS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[str, tuple[float, asyncio.Task[QarnotConnectionSettings]]]
] = weakref.WeakKeyDictionary()


async def _shared_settings(hook_class: type[QarnotHook], conn_id: str) -> QarnotConnectionSettings:
    """The connection's settings, read once per `SETTINGS_TTL` for all the triggers of this event loop.

    A failed read is not kept: the next trigger reads again.
    """
    loop = asyncio.get_running_loop()
    cache = _SETTINGS.setdefault(loop, {})
    entry = cache.get(conn_id)
    if entry is None or entry[0] <= loop.time() or (entry[1].done() and entry[1].exception() is not None):
        entry = (loop.time() + SETTINGS_TTL, loop.create_task(hook_class.aget_settings(conn_id)))
        cache[conn_id] = entry
    # shield: a trigger cancelled while it waits must not cancel the read the others wait on
    return await asyncio.shield(entry[1])


def _task_instance_state(ti: Any) -> str | None:
    """The current state of the trigger's task instance, asked through the triggerer's supervisor (blocking)."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    if ti is None:
        raise RuntimeError("the trigger has no task instance")
    map_index = -1 if ti.map_index is None else int(ti.map_index)
    found = RuntimeTaskInstance.get_task_states(
        dag_id=ti.dag_id, task_ids=[ti.task_id], run_ids=[ti.run_id], map_index=map_index
    )
    state = found[ti.run_id][ti.task_id if map_index < 0 else f"{ti.task_id}_{map_index}"]
    return None if state is None else str(getattr(state, "value", state))  # an enum or its value


__all__ = [
    "DEFERRAL_BACKSTOP",
    "EVENT_STATUSES",
    "STATUS_BY_STATE",
    "QarnotTaskTrigger",
    "final_event",
    "shared_polling_default",
    "task_event",
]
