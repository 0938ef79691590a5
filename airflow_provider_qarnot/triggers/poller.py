"""Shared polling: one poller per (connection id, event loop) reads the state of every watched task at once.

Many deferred Qarnot tasks on one triggerer would each send `GET /tasks/{uuid}` every interval. Instead
each trigger registers a `Watch` with the poller of its connection; every interval the poller sends
`QConnection.task_states(uuids)` (one `POST /tasks/paginate` per 100 tasks) in a worker thread, and
wakes only the triggers whose task became final or disappeared.

- Interval: the poller polls at the smallest `poll_interval` of its watchers, so no trigger is polled
  less often than it asked; one with a longer interval is simply served more often, at no extra cost.
  A new watcher with a shorter interval brings the next poll forward.
- Failures: a failed poll wakes nobody (the next interval tries again) unless the error cannot pass
  (e.g. the token was revoked) or a watcher has had no successful poll for `max_errors` times its own
  poll interval (a time budget, so a slow watcher sharing with a fast one keeps its own patience);
  then its trigger is woken with an error. A failure delays events, it never loses one: the task's
  state is still on the server at the next poll.
- Isolation: when a batch read fails with an error that cannot pass but is not about the connection
  (not 401/403, not TLS), the poller reads the tasks one by one, so one bad task fails only its watchers.
- Membership: triggers unwatch in `finally` (completion, timeout, cancellation, triggerer shutdown), so
  the set of watched tasks is always the set of waiting triggers; the poller's asyncio task ends when
  nobody watches and a later watcher starts a new one.
- Deadlines are not the poller's business: each trigger waits on its watch with its own timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from airflow_provider_qarnot.client import states
from airflow_provider_qarnot.client.exceptions import (
    CertificateVerificationException,
    MissingTaskException,
    UnauthorizedException,
)
from airflow_provider_qarnot.client.models import TaskSummary
from airflow_provider_qarnot.client.retry import RetryPolicy
from airflow_provider_qarnot.utils.errors import describe, is_transient

if TYPE_CHECKING:
    from airflow_provider_qarnot.hooks.qarnot import QarnotConnectionSettings, QarnotHook

log = logging.getLogger(__name__)

#: Retries inside one poll are short: the next poll is the real retry.
POLL_RETRY = RetryPolicy(max_attempts=2, base_delay=0.2, max_delay=1.0, max_elapsed=5.0)

OutcomeKind = Literal["final", "missing", "error"]
#: Errors about the connection itself: every watcher fails at once, no per-task reads are tried.
CONNECTION_ERRORS = (UnauthorizedException, CertificateVerificationException)


@dataclass(frozen=True)
class WatchOutcome:
    """Why a watching trigger was woken: its task is final, is gone from the results, or polling failed."""

    kind: OutcomeKind
    summary: TaskSummary | None = None
    message: str = ""


class Watch:
    """One trigger's wait for one task; resolved at most once.

    Transient failures are tolerated for `max_errors * poll_interval` seconds since the last successful
    poll (or since the watch started), whatever the rate at which the shared poller actually polls.
    """

    def __init__(self, task_uuid: str, poll_interval: float, max_errors: int) -> None:
        self.task_uuid = task_uuid
        self.poll_interval = poll_interval
        self.max_errors = max_errors
        self.consecutive_errors = 0
        self.last_ok = time.monotonic()
        self.last_summary: TaskSummary | None = None
        self._future: asyncio.Future[WatchOutcome] = asyncio.get_running_loop().create_future()

    @property
    def done(self) -> bool:
        """Whether the trigger has been woken."""
        return self._future.done()

    async def wait(self, timeout: float | None) -> WatchOutcome | None:
        """The outcome, or None when `timeout` seconds pass first (the watch stays registered)."""
        if timeout is not None and timeout <= 0:
            return self._future.result() if self._future.done() else None
        done, _ = await asyncio.wait({self._future}, timeout=timeout)
        return self._future.result() if done else None

    def resolve(self, outcome: WatchOutcome) -> None:
        """Wake the trigger with `outcome` (ignored once woken)."""
        if not self._future.done():
            self._future.set_result(outcome)

    @property
    def error_budget(self) -> float:
        """Seconds without a successful poll after which transient failures become an error."""
        return self.max_errors * self.poll_interval

    def on_summary(self, summary: TaskSummary) -> None:
        """A successful poll saw the task."""
        self.consecutive_errors = 0
        self.last_ok = time.monotonic()
        self.last_summary = summary
        if states.is_final(summary.state):
            self.resolve(WatchOutcome("final", summary))

    def on_error(self, exc: BaseException) -> None:
        """A poll failed; wake the trigger only if the error cannot pass or has lasted past the budget."""
        self.consecutive_errors += 1
        transient = is_transient(exc)
        failing_for = time.monotonic() - self.last_ok
        if not transient or failing_for >= self.error_budget:
            why = (
                ""
                if not transient
                else f" (no successful poll for {failing_for:.0f}s, {self.consecutive_errors} failed polls in a row)"
            )
            self.resolve(WatchOutcome("error", None, f"Polling Qarnot failed{why}: {describe(exc)}"))


def _poll_hook(settings: QarnotConnectionSettings) -> QarnotHook:
    """A hook for polling (imported here: the trigger has already loaded the hook module off the event loop)."""
    from airflow_provider_qarnot.hooks.qarnot import QarnotHook

    return QarnotHook(settings.conn_id, settings=settings, retry=POLL_RETRY)


class TaskStatePoller:
    """Polls the state of every watched task of one connection, on one event loop."""

    def __init__(self, settings: QarnotConnectionSettings) -> None:
        self.settings = settings
        self._hook = _poll_hook(settings)
        self._watches: dict[str, set[Watch]] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_poll: float | None = None
        #: Batch polls sent and failed so far (for tests and benchmarks).
        self.polls = 0
        self.failed_polls = 0

    @property
    def running(self) -> bool:
        """Whether the polling task is alive."""
        return self._task is not None and not self._task.done()

    @property
    def watched(self) -> set[str]:
        """The uuids of the tasks being watched."""
        return set(self._watches)

    @property
    def interval(self) -> float:
        """The smallest poll interval among the watchers."""
        return min((w.poll_interval for ws in self._watches.values() for w in ws), default=1.0)

    def use_settings(self, settings: QarnotConnectionSettings) -> None:
        """Switch to newer connection settings (a trigger read the connection after it changed)."""
        if settings != self.settings:
            self.settings = settings
            self._hook = _poll_hook(settings)

    def watch(self, task_uuid: str, poll_interval: float, max_errors: int) -> Watch:
        """Start watching a task for one trigger; the caller must `unwatch` it in a `finally`."""
        watch = Watch(task_uuid, poll_interval, max_errors)
        self._watches.setdefault(task_uuid, set()).add(watch)
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"qarnot-poller-{self.settings.conn_id}"
            )
        else:
            self._wakeup.set()
        return watch

    def unwatch(self, watch: Watch) -> None:
        """Stop watching (idempotent); the poller stops once nobody watches."""
        watches = self._watches.get(watch.task_uuid)
        if watches is None:
            return
        watches.discard(watch)
        if not watches:
            del self._watches[watch.task_uuid]
        if not self._watches:
            self._wakeup.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            while self._watches:
                due = (self._last_poll if self._last_poll is not None else started) + self.interval
                delay = due - loop.time()
                if delay > 0:
                    self._wakeup.clear()
                    with contextlib.suppress(asyncio.TimeoutError):  # not the builtin before Python 3.11
                        await asyncio.wait_for(self._wakeup.wait(), timeout=delay)
                    continue  # re-check membership and the (maybe shorter) interval
                await self._poll_once()
                self._last_poll = loop.time()
        except Exception as exc:  # a bug here must not leave triggers waiting forever
            log.exception("The shared Qarnot poller stopped")
            for watch in [w for ws in self._watches.values() for w in ws]:
                watch.resolve(WatchOutcome("error", None, f"The shared Qarnot poller stopped: {exc!r}"))
        finally:
            _forget(loop, self)

    async def _poll_once(self) -> None:
        uuids = list(self._watches)
        hook = self._hook
        self.polls += 1
        found: dict[str, TaskSummary | Exception]
        try:
            found = dict(await asyncio.to_thread(hook.task_states, uuids))
        except Exception as exc:
            self.failed_polls += 1
            if is_transient(exc) or isinstance(exc, CONNECTION_ERRORS):
                log.warning("Polling %d Qarnot task(s) failed: %s", len(uuids), describe(exc))
                found = dict.fromkeys(uuids, exc)
            else:
                log.warning("Polling %d Qarnot task(s) failed (%s); reading them one by one", len(uuids), describe(exc))
                found = await asyncio.to_thread(_read_each, hook, uuids)
        for uuid in uuids:
            result = found.get(uuid)
            for watch in list(self._watches.get(uuid, ())):
                if result is None:
                    watch.resolve(WatchOutcome("missing", None, f"Qarnot task {uuid} is missing from the poll"))
                elif isinstance(result, Exception):
                    watch.on_error(result)
                else:
                    watch.on_summary(result)


def _read_each(hook: QarnotHook, uuids: list[str]) -> dict[str, TaskSummary | Exception]:
    """Each task's summary or read error, one `GET /tasks/{uuid}` each; deleted tasks are absent."""
    found: dict[str, TaskSummary | Exception] = {}
    for uuid in uuids:
        try:
            found[uuid] = hook.get_summary(uuid)
        except MissingTaskException:
            continue
        except Exception as exc:
            found[uuid] = exc
    return found


_POLLERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, TaskStatePoller]] = weakref.WeakKeyDictionary()


def get_poller(settings: QarnotConnectionSettings) -> TaskStatePoller:
    """The poller of this connection on the running event loop (created on first use)."""
    loop = asyncio.get_running_loop()
    pollers = _POLLERS.setdefault(loop, {})
    poller = pollers.get(settings.conn_id)
    if poller is None:
        poller = pollers[settings.conn_id] = TaskStatePoller(settings)
    else:
        poller.use_settings(settings)
    return poller


def active_pollers() -> dict[str, TaskStatePoller]:
    """The pollers registered on the running event loop, by connection id."""
    return dict(_POLLERS.get(asyncio.get_running_loop(), {}))


def _forget(loop: asyncio.AbstractEventLoop, poller: TaskStatePoller) -> None:
    """Drop a stopped poller from the registry once nobody watches (a later watcher makes a new one)."""
    pollers = _POLLERS.get(loop)
    if not poller._watches and pollers is not None and pollers.get(poller.settings.conn_id) is poller:
        del pollers[poller.settings.conn_id]


__all__ = [
    "CONNECTION_ERRORS",
    "POLL_RETRY",
    "TaskStatePoller",
    "Watch",
    "WatchOutcome",
    "active_pollers",
    "get_poller",
]
