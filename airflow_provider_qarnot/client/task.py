"""`QTask`: the Qarnot task model — submit, update, wait, abort, delete, retrieve, output and results."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from airflow_provider_qarnot.client import states
from airflow_provider_qarnot.client.connection import QConnection, new_submit_tag
from airflow_provider_qarnot.client.errors import ApiCall
from airflow_provider_qarnot.client.exceptions import (
    MalformedResponseException,
    MissingTaskException,
    QarnotException,
    TaskNotSubmittedException,
    TransientFailureException,
    UnauthorizedException,
)
from airflow_provider_qarnot.client.models import InstanceInfo, TaskError, TaskSummary, parse_task_summary
from airflow_provider_qarnot.client.retry import RetryPolicy
from airflow_provider_qarnot.client.spec import ResourceBucket, TaskSpec

log = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL = 10.0
#: The submit loop is `POST /tasks`'s one retry policy: the transport sends it exactly once per attempt.
_NO_RETRY = RetryPolicy.none()
#: Extra submit-tag lookups after the last attempt's unknown outcome, and the longest wait before each.
_LAST_LOOKUPS = 2
_MAX_LOOKUP_WAIT = 5.0


class QTask:
    """One Qarnot task: built from its create-time fields, validated at once, submitted at most once.

    `QTask(conn, "render", "docker-batch", 8, constants={...})` raises ValueError for an invalid
    combination before any call is made.
    """

    def __init__(
        self,
        connection: QConnection,
        name: str,
        profile: str | None = None,
        instance_count: int | None = None,
        **fields: Any,
    ) -> None:
        unknown = set(fields) - set(TaskSpec.field_names())
        if unknown:
            raise TypeError(f"QTask got unknown fields: {', '.join(sorted(unknown))}")
        spec = TaskSpec(name=name, profile=profile, instance_count=instance_count, **fields)
        spec.validate()
        self._init(connection, spec)

    def _init(self, connection: QConnection, spec: TaskSpec) -> None:
        self._conn = connection
        self.spec = spec
        self._uuid: str | None = None
        self._summary: TaskSummary | None = None
        self._submit_tag = new_submit_tag()

    @classmethod
    def from_spec(cls, connection: QConnection, spec: TaskSpec) -> QTask:
        """Build a task from a spec, validating it first."""
        spec.validate()
        task = cls.__new__(cls)
        task._init(connection, spec)
        return task

    @classmethod
    def retrieve(cls, connection: QConnection, uuid: str) -> QTask:
        """Load an existing task by uuid (or shortname); `MissingTaskException` when there is none."""
        if not isinstance(uuid, str) or not uuid.strip():
            raise ValueError("uuid must be a non-empty string")
        data = connection.request("GET", f"/tasks/{_quoted(uuid.strip())}", call=ApiCall.TASK)
        return cls._from_json(connection, data)

    @classmethod
    def _from_json(cls, connection: QConnection, data: Any) -> QTask:
        summary = parse_task_summary(data)
        task = cls.__new__(cls)
        try:
            spec = TaskSpec.from_json(summary.raw)
        except (TypeError, ValueError, AttributeError, OverflowError) as exc:  # a field of an unexpected shape
            raise MalformedResponseException(f"Task {summary.uuid}: unreadable task fields ({exc})") from None
        task._init(connection, spec)
        task._uuid = summary.uuid
        task._summary = summary
        return task

    def __repr__(self) -> str:
        return f"QTask(name={self.spec.name!r}, uuid={self._uuid!r}, state={self.state!r})"

    # ------------------------------------------------------------------ properties

    @property
    def uuid(self) -> str | None:
        """The task's uuid once submitted, else None."""
        return self._uuid

    @property
    def connection(self) -> QConnection:
        """The connection this task talks through."""
        return self._conn

    @property
    def summary(self) -> TaskSummary | None:
        """The last state read from the API (None before submission)."""
        return self._summary

    @property
    def state(self) -> str:
        """The last known state (`UnSubmitted` before submission); call `update()` to refresh."""
        if self._summary is None or self._summary.state is None:
            return states.UNSUBMITTED if self._uuid is None else states.SUBMITTED
        return self._summary.state

    @property
    def progress(self) -> float | None:
        """Progress in percent, as last read."""
        return self._summary.progress if self._summary else None

    @property
    def errors(self) -> tuple[TaskError, ...]:
        """The task's errors, as last read."""
        return self._summary.errors if self._summary else ()

    @property
    def instances(self) -> tuple[InstanceInfo, ...]:
        """Each completed instance's state, times and error, as last read."""
        return self._summary.instances if self._summary else ()

    @property
    def resources(self) -> list[ResourceBucket]:
        """The resource buckets given to the task."""
        return [ResourceBucket.coerce(r) for r in self.spec.resources]

    @property
    def results(self) -> str | None:
        """The name of the bucket the task's results go to."""
        return self.spec.result_bucket

    @property
    def results_count(self) -> int | None:
        """How many result objects the API counts for this task, as last read."""
        return self._summary.results_count if self._summary else None

    def _require_uuid(self) -> str:
        if self._uuid is None:
            raise TaskNotSubmittedException(f"Task {self.spec.name!r} has not been submitted")
        return self._uuid

    # ------------------------------------------------------------------ lifecycle

    def submit(self, on_created: Callable[[str], None] | None = None) -> str:
        """Create the task on Qarnot once and return its state; on a submitted task, only return the state.

        This loop is the submit's one retry policy (the transport does not retry `POST /tasks` itself).
        A POST that surely was not acted on (a failed connect, a 429) is sent again after a backoff. When
        the outcome is unknown (dropped connection, read timeout, 5xx), the task's unique submit tag is
        looked up, after a backoff that gives a slow server time to commit, before anything is sent
        again; a task found that way is the one this call created, and any late twin (an earlier POST
        committed later) is aborted and deleted. A task given no shortname gets the submit tag as one, so
        the server refuses a twin even past the lookups. So one call never leaves two tasks. `on_created(uuid)`
        is called as soon as the task is known to exist, before its first refresh (the operator needs
        the uuid early to abort it if killed).
        """
        if self._uuid is not None:
            return self.state
        self.spec.validate()
        body = self.spec.to_json(extra_tags=[self._submit_tag])
        if not body.get("shortname"):
            # Shortnames are unique: the server itself refuses a resend once an earlier POST of this submit
            # committed, even one committed after every lookup had looked (a slow server).
            body["shortname"] = self._submit_tag
        policy = self._conn.retry
        started = time.monotonic()
        attempt = 0
        uncertain = False
        while True:
            attempt += 1
            try:
                data = self._conn.request(
                    "POST", "/tasks", json=body, call=ApiCall.SUBMIT_TASK, idempotent=False, retry=_NO_RETRY
                )
                uuid = data.get("uuid") if isinstance(data, dict) else None
                if not isinstance(uuid, str) or not uuid:
                    raise MalformedResponseException("POST /tasks answered without a task uuid")
            except (TransientFailureException, MalformedResponseException) as exc:
                unsent = isinstance(exc, TransientFailureException) and exc.unsent
                retry_after = exc.retry_after if isinstance(exc, TransientFailureException) else None
                delay = policy.next_delay(attempt, time.monotonic() - started, retry_after)
                reason = exc.reason if isinstance(exc, TransientFailureException) else str(exc)
                tries = f"{attempt} attempt{'s' if attempt > 1 else ''}"
                if unsent and not uncertain:
                    if delay is None:
                        raise TransientFailureException(
                            f"Could not submit task {self.spec.name!r}: {reason}; no task was created "
                            f"({tries}, none accepted by the API)",
                            status_code=exc.status_code,
                            attempts=attempt,
                            unsent=True,
                        ) from None
                    log.info(
                        "Submit of %r was not accepted (%s); sending it again in %.2fs", self.spec.name, reason, delay
                    )
                    time.sleep(delay)
                    continue
                uncertain = True
                found = self._look_up_own_task(reason, delay, attempt)
                if found is not None:
                    log.info(
                        "Submit of %r had an unknown outcome (%s); it did create task %s", self.spec.name, reason, found
                    )
                    return self._adopt(found, on_created, uncertain=True)
                if delay is None:
                    raise TransientFailureException(
                        f"Could not submit task {self.spec.name!r}: {reason}; no task was created as far as the "
                        f"API shows (none carries its submit tag {self._submit_tag} after {tries})",
                        status_code=exc.status_code,
                        attempts=attempt,
                    ) from None
                log.info("Submit of %r failed (%s) and created nothing; sending it again", self.spec.name, reason)
                continue
            except QarnotException as refusal:
                # A resend refused for good (a quota the first POST filled, the shortname it took...): the task
                # of the earlier, unknown outcome may exist all the same, and must not run unknown to us.
                if not uncertain:
                    raise
                found = self._look_up_own_task("a resend was refused", 0.0, attempt)
                if found is None and body.get("shortname") == self._submit_tag:
                    found = self._find_by_shortname()
                if found is None:  # unknown, not invalid: a retry (which searches first) may still find it
                    raise TransientFailureException(
                        f"Submit of task {self.spec.name!r} had an unknown outcome and a resend was refused "
                        f"({type(refusal).__name__}: {refusal}); no task with its submit tag {self._submit_tag} "
                        "can be seen yet",
                        status_code=refusal.status_code,
                        attempts=attempt,
                    ) from None
                log.info("A resend of %r was refused, but its first submit did create task %s", self.spec.name, found)
                return self._adopt(found, on_created, uncertain=True)
            return self._adopt(uuid, on_created, uncertain=uncertain)

    def _look_up_own_task(self, reason: str, delay: float | None, attempt: int) -> str | None:
        """After a submit with an unknown outcome: the uuid of the task it created, if the submit tag finds one.

        Waits `delay` first; after the last attempt (`delay` None) it looks a few more times, spaced out,
        since saying "nothing was created" wrongly would let a later retry create a twin.
        """
        if delay is not None:
            waits = [delay]  # the policy's own delay before the resend, bounded by max_delay and max_elapsed
        else:
            waits = [min(self._conn.retry.backoff(attempt + i), _MAX_LOOKUP_WAIT) for i in range(_LAST_LOOKUPS)]
        for wait in waits:
            time.sleep(wait)
            try:
                found = self._find_by_submit_tag()
            except QarnotException as lookup_exc:
                raise TransientFailureException(
                    f"Submit of task {self.spec.name!r} had an unknown outcome ({reason}), and looking it up by its "
                    f"submit tag {self._submit_tag} failed: {lookup_exc}",
                    attempts=attempt,
                ) from None
            if found is not None:
                return found.uuid
        return None

    def _adopt(self, uuid: str, on_created: Callable[[str], None] | None, *, uncertain: bool) -> str:
        """This object is task `uuid` now: tell `on_created`, remove late twins of an uncertain submit, read it."""
        self._uuid = uuid
        if on_created is not None:
            on_created(uuid)
        if uncertain:
            self._remove_late_twins(uuid)
        return self._first_refresh()

    def _first_refresh(self) -> str:
        """Read a just-created task's state; a failed read must not lose the uuid (the task exists)."""
        try:
            return self.update()
        except QarnotException as exc:
            log.warning("Task %s was created, but reading its state failed: %s", self._uuid, exc)
            return self.state

    def _remove_late_twins(self, keep: str) -> None:
        """Delete (which aborts) any other task of this submit: an earlier POST that the server committed late."""
        try:
            twins = [s.uuid for s in self._conn.task_summaries(tags=[self._submit_tag]) if s.uuid and s.uuid != keep]
        except QarnotException as exc:
            log.warning("Could not check submit tag %s for late duplicates: %s", self._submit_tag, exc)
            return
        for uuid in twins:
            log.warning("Removing task %s: a late duplicate of task %s from the same submit", uuid, keep)
            try:
                self._conn.request("DELETE", f"/tasks/{_quoted(uuid)}", call=ApiCall.TASK)
            except MissingTaskException:
                continue
            except QarnotException as exc:
                log.warning("Deleting duplicate task %s failed: %s", uuid, exc)

    def _find_by_shortname(self) -> str | None:
        """The uuid of the task whose shortname is this submit's tag (a direct read), if there is one."""
        try:
            data = self._conn.request("GET", f"/tasks/{_quoted(self._submit_tag)}", call=ApiCall.TASK)
            return parse_task_summary(data).uuid or None
        except QarnotException:
            return None

    def _find_by_submit_tag(self) -> TaskSummary | None:
        """The oldest task carrying this object's submit tag, if any (the lookup itself retries transient errors)."""
        matches = [s for s in self._conn.task_summaries(tags=[self._submit_tag]) if s.uuid]
        if not matches:
            return None
        if len(matches) > 1:
            log.warning("Submit tag %s matches %d tasks; keeping the oldest", self._submit_tag, len(matches))
        return min(matches, key=lambda s: (s.creation_date is None, s.creation_date))

    def update(self) -> str:
        """Refresh the task from the API and return its state."""
        uuid = self._require_uuid()
        data = self._conn.request("GET", f"/tasks/{_quoted(uuid)}", call=ApiCall.TASK)
        summary = parse_task_summary(data)
        self._summary = summary
        self.spec = _merge_spec(self.spec, summary)
        return self.state

    def wait(
        self,
        timeout: float | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        on_poll: Callable[[QTask], None] | None = None,
    ) -> bool:
        """Block until the task is final (Success, Failure or Cancelled); False if `timeout` seconds pass first.

        Transitional states (PendingCancel, PendingDelete) and unknown states keep it waiting.
        `on_poll` is called after every refresh (the operator streams stdout from it).
        """
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must not be negative")
        self._require_uuid()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state = self.update()
            if on_poll is not None:
                on_poll(self)
            if states.is_final(state):
                return True
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                time.sleep(min(poll_interval, remaining))
            else:
                time.sleep(poll_interval)

    def abort(self) -> None:
        """Ask Qarnot to stop the task; a task that is already final, or already stopping, is left as it is."""
        uuid = self._require_uuid()
        try:
            self._conn.request("POST", f"/tasks/{_quoted(uuid)}/abort", call=ApiCall.TASK, idempotent=True)
        except UnauthorizedException:
            # Qarnot answers 403 to aborting a task that is no longer running: already final, or already
            # being cancelled or deleted (a second abort, or a retried one whose first answer was lost).
            state = self.update()
            if states.is_final(state) or state in states.PENDING_STATES:
                return
            raise

    def delete(self, purge_resources: bool = False, purge_results: bool = False) -> None:
        """Delete the task (aborting it if running); optionally delete its resource and result buckets."""
        uuid = self._require_uuid()
        if purge_resources or purge_results:
            self.update()
        self._conn.request("DELETE", f"/tasks/{_quoted(uuid)}", call=ApiCall.TASK)
        if purge_resources or purge_results:
            storage = self._conn.storage
            if purge_resources:
                for res in self.resources:
                    storage.delete_bucket(res.bucket_name, missing_ok=True)
            if purge_results and self.spec.result_bucket:
                storage.delete_bucket(self.spec.result_bucket, missing_ok=True)

    # ------------------------------------------------------------------ output

    def _output(self, stream: str, fresh: bool, instance_id: int | None) -> str:
        uuid = self._require_uuid()
        path = f"/tasks/{_quoted(uuid)}/{stream}" + (f"/{int(instance_id)}" if instance_id is not None else "")
        call = ApiCall.TASK_INSTANCE if instance_id is not None else ApiCall.TASK
        text = self._conn.request("POST" if fresh else "GET", path, call=call, expect_json=False)
        return str(text or "")

    def stdout(self, instance_id: int | None = None) -> str:
        """The whole stdout the API still holds (it keeps a bounded buffer), of the task or one instance."""
        return self._output("stdout", False, instance_id)

    def fresh_stdout(self, instance_id: int | None = None) -> str:
        """Only the stdout written since the previous fresh read with this token."""
        return self._output("stdout", True, instance_id)

    def stderr(self, instance_id: int | None = None) -> str:
        """The whole stderr the API still holds, of the task or one instance."""
        return self._output("stderr", False, instance_id)

    def fresh_stderr(self, instance_id: int | None = None) -> str:
        """Only the stderr written since the previous fresh read with this token."""
        return self._output("stderr", True, instance_id)

    # ------------------------------------------------------------------ results

    def result_keys(self) -> list[str] | None:
        """The object keys this task's instances reported as results, or None if they reported none."""
        bucket = self.spec.result_bucket
        keys: list[str] = []
        for inst in self.instances:
            for url in inst.results:
                key = _key_from_result_url(url, bucket)
                if key is not None:
                    keys.append(key)
        return sorted(set(keys)) or None

    def download_results(self, local_dir: str | Path) -> list[Path]:
        """Download this task's results into `local_dir`; returns the files written or already up to date.

        Only the task's own objects are fetched: those under its `resultsBucketPrefix` when it has one,
        else the keys its instances reported, else (as the first SDK did) the whole result bucket.
        """
        self.update()
        bucket = self.spec.result_bucket
        if not bucket:
            raise QarnotException(f"Task {self.spec.name!r} has no result bucket")
        storage = self._conn.storage
        prefix = self.spec.results_bucket_prefix
        keys = self.result_keys()
        if prefix:
            files = storage.download_prefix(bucket, prefix, local_dir)
            if files or keys is None:
                return files
            # The API did not put the results under the prefix (an older API may ignore the field): take
            # the objects the instances reported rather than silently returning nothing.
            log.warning(
                "Task %s: nothing under results prefix %r in bucket %s; downloading the %d result(s) its "
                "instances reported instead",
                self._uuid,
                prefix,
                bucket,
                len(keys),
            )
        if keys is not None:
            return storage.download_keys(bucket, keys, local_dir)
        return storage.download_prefix(bucket, "", local_dir)


def _merge_spec(spec: TaskSpec, summary: TaskSummary) -> TaskSpec:
    """Keep the local spec, filling in what the server reports and the spec lacks (result bucket and prefix)."""
    if summary.results_bucket_prefix and not spec.results_bucket_prefix:
        spec = replace(spec, results_bucket_prefix=summary.results_bucket_prefix)
    if summary.result_bucket and not spec.result_bucket:
        spec = replace(spec, result_bucket=summary.result_bucket)
    return spec


def _quoted(uuid: str) -> str:
    """A uuid or shortname as one URL path segment."""
    return quote(uuid, safe="")


def _key_from_result_url(url: str, bucket: str | None) -> str | None:
    """The object key of an `s3://host/bucket/key` result URL (the host part is optional)."""
    if not url.startswith("s3://"):
        return None
    parts = url[len("s3://") :].split("/")
    if bucket and bucket in parts:
        index = parts.index(bucket)
        key = "/".join(parts[index + 1 :])
        return key or None
    return "/".join(parts[2:]) or None


def retrieve_existing(connection: QConnection, uuid: str) -> QTask | None:
    """Like `QTask.retrieve`, but None when the task no longer exists."""
    try:
        return QTask.retrieve(connection, uuid)
    except MissingTaskException:
        return None
