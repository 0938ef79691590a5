"""The emulator's state and behaviour (no HTTP): tasks, instances, jobs, pools and their state machines.

One re-entrant lock (:attr:`Backend.lock`) guards everything. Executors (``runner.py``) run the instances
and report back through the ``instance_*`` methods; they never hold their own lock while calling in.
"""

from __future__ import annotations

import copy
import functools
import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from .buffers import OutputBuffer
from .exceptions import Forbidden, MaxTasksReached, NotEnoughCredits, NotFound, ValidationProblem
from .filters import FieldDef, compile_filter
from .formats import format_ranges, new_page_token, new_uuid, parse_timespan
from .validation import Fields, JobSpec, PageRequest, PoolSpec, TaskSpec, parse_task

_Item = TypeVar("_Item")

log = logging.getLogger(__name__)

# Task states (the real API's names).
SUBMITTED = "Submitted"
PARTIALLY_DISPATCHED = "PartiallyDispatched"
FULLY_DISPATCHED = "FullyDispatched"
PARTIALLY_EXECUTING = "PartiallyExecuting"
FULLY_EXECUTING = "FullyExecuting"
UPLOADING_RESULTS = "UploadingResults"
PENDING_CANCEL = "PendingCancel"
PENDING_DELETE = "PendingDelete"
SUCCESS = "Success"
FAILURE = "Failure"
CANCELLED = "Cancelled"
FINAL_STATES = frozenset({SUCCESS, FAILURE, CANCELLED})
RUNNING_STATES = frozenset(
    {PARTIALLY_DISPATCHED, FULLY_DISPATCHED, PARTIALLY_EXECUTING, FULLY_EXECUTING, UPLOADING_RESULTS}
)

# Instance phases (emulator-internal).
QUEUED = "queued"
DISPATCHED = "dispatched"
EXECUTING = "executing"
UPLOADING = "uploading"
DONE = "done"

# Job and pool states.
JOB_ACTIVE = "Active"
JOB_TERMINATING = "Terminating"
JOB_COMPLETED = "Completed"
JOB_DELETING = "Deleting"
POOL_CLOSING = "Closing"
POOL_CLOSED = "Closed"

PROFILES: dict[str, list[dict[str, str]]] = {
    name: [
        {"name": "DOCKER_REPO", "value": "library/ubuntu", "description": "Docker image (ignored by the emulator)"},
        {"name": "DOCKER_TAG", "value": "latest", "description": "Docker image tag (ignored by the emulator)"},
        {"name": "DOCKER_CMD", "value": "", "description": "Command run with 'sh -c' for each instance"},
    ]
    for name in ("docker-batch", "docker-network", "docker-batch-gpu", "docker-bash", "ubuntu")
}

ERROR_CODE_INSTANCE = "EMU0001"
ERROR_CODE_QUEUE = "EMU0002"
ERROR_CODE_DEPENDENCY = "EMU0003"

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
MAX_PAGE_TOKENS = 10_000
INSTANCE_BUFFER_BYTES = 256 * 1024


class Executor(Protocol):
    """What runs task instances: ``runner.ProcessRunner`` (run mode) or ``runner.Simulator``."""

    def enqueue(self, task: Task) -> None:
        """Start running the task's queued instances (called with the backend lock held)."""

    def cancel(self, task: Task) -> list[int]:
        """Stop the task's instances; return the ids that will never report back (lock held)."""

    def snapshot(self, task: Task, snap: Snapshot) -> None:
        """Upload the current files of the task's running instances (lock held; work in background)."""

    def update_resources(self, task: Task) -> None:
        """Re-sync resources into running instances (lock held; work in background)."""


class BucketChecker(Protocol):
    """The part of the storage the model needs at submit time."""

    def bucket_exists(self, name: str) -> bool:
        """Does the bucket exist?"""

    def ensure_bucket(self, name: str) -> None:
        """Create the bucket if missing."""

    def bucket_count(self) -> int:
        """How many buckets exist."""


class Clock(Protocol):
    """Timers used for queue timeouts, auto-delete and pool start-up (``runner.Scheduler``)."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> Any:
        """Run ``callback`` in the timer thread after ``delay`` seconds."""


@dataclass
class Instance:
    """One instance of a task: its phase, attempts, outcome, results and output."""

    instance_id: int
    phase: str = QUEUED
    state: str | None = None
    attempts: int = 0
    exit_code: int | None = None
    first_start: float | None = None
    exec_start: float | None = None
    end: float | None = None
    exec_seconds: float = 0.0
    results: list[str] = field(default_factory=list)
    error: dict[str, Any] | None = None
    stdout: OutputBuffer = field(default_factory=lambda: OutputBuffer(INSTANCE_BUFFER_BYTES))
    stderr: OutputBuffer = field(default_factory=lambda: OutputBuffer(INSTANCE_BUFFER_BYTES))

    def running_seconds(self, now: float) -> float:
        """Execution time so far, including the current attempt."""
        extra = now - self.exec_start if self.phase == EXECUTING and self.exec_start is not None else 0.0
        return self.exec_seconds + max(0.0, extra)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for persistence."""
        data = {k: v for k, v in self.__dict__.items() if k not in ("stdout", "stderr")}
        data["stdout"] = self.stdout.to_dict()
        data["stderr"] = self.stderr.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Instance:
        """Rebuild an instance saved with :meth:`to_dict`."""
        values = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k not in ("stdout", "stderr")}
        inst = cls(**values)
        inst.stdout = OutputBuffer.from_dict(data.get("stdout", {}), INSTANCE_BUFFER_BYTES)
        inst.stderr = OutputBuffer.from_dict(data.get("stderr", {}), INSTANCE_BUFFER_BYTES)
        return inst


@dataclass
class Snapshot:
    """An instant snapshot request and its progress."""

    id: str
    task_uuid: str
    trigger: float
    last_update: float
    whitelist: str | None = None
    blacklist: str | None = None
    bucket: str | None = None
    bucket_prefix: str | None = None
    status: str = "Triggered"
    size_to_upload: int = 0
    transferred: int = 0


@dataclass
class Task:
    """A submitted task with its runtime state."""

    uuid: str
    seq: int
    spec: TaskSpec
    shortname: str
    creation: float
    state: str = SUBMITTED
    previous_state: str | None = None
    state_time: float = 0.0
    previous_state_time: float | None = None
    last_modified: float = 0.0
    end_date: float | None = None
    instances: dict[int, Instance] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    stdout: OutputBuffer = field(default_factory=OutputBuffer)
    stderr: OutputBuffer = field(default_factory=OutputBuffer)
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    snapshot_interval: int = 0
    retries_used: int = 0
    deps_state: str | None = None
    dispatched: bool = False
    delete_requested: bool = False
    simulated: bool = False
    sim_start: float | None = None
    sim_duration: float = 0.0
    result_keys: set[str] = field(default_factory=set)
    constants: dict[str, str] = field(default_factory=dict)
    fail_reason: dict[str, Any] | None = None

    @property
    def is_final(self) -> bool:
        """Success, Failure or Cancelled."""
        return self.state in FINAL_STATES

    def constant(self, key: str) -> str | None:
        """The effective value of a constant (pool constants overridden by the task's)."""
        return self.constants.get(key)

    def unfinished(self) -> list[Instance]:
        """Instances not done yet."""
        return [i for i in self.instances.values() if i.phase != DONE]

    def running_count(self) -> int:
        """Instances currently executing (or uploading)."""
        return sum(1 for i in self.instances.values() if i.phase in (EXECUTING, UPLOADING))

    def ids_in(self, *states: str) -> list[int]:
        """Instance ids whose final state is one of ``states``."""
        return [i.instance_id for i in self.instances.values() if i.state in states]

    def progress(self, now: float) -> float:
        """0-100: share of instances done, or elapsed share of a simulated run."""
        if self.state == SUCCESS:
            return 100.0
        total = len(self.instances) or 1
        done = sum(1 for i in self.instances.values() if i.phase == DONE)
        value = 100.0 * done / total
        if self.simulated and self.sim_start is not None and self.sim_duration > 0 and not self.is_final:
            value = max(value, min(99.0, 100.0 * (now - self.sim_start) / self.sim_duration))
        return round(value, 2)

    def execution_seconds(self, now: float) -> float:
        """Total execution time over instances."""
        return sum(i.running_seconds(now) for i in self.instances.values())

    def wall_seconds(self, now: float) -> float:
        """Time from the first instance start to the end (or now)."""
        starts = [i.first_start for i in self.instances.values() if i.first_start is not None]
        if not starts:
            return 0.0
        return max(0.0, (self.end_date or now) - min(starts))

    def buffers(self) -> list[OutputBuffer]:
        """Every output buffer of the task and its instances."""
        found = [self.stdout, self.stderr]
        for inst in self.instances.values():
            found += [inst.stdout, inst.stderr]
        return found

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for persistence."""
        skip = ("spec", "instances", "stdout", "stderr", "snapshots", "result_keys")
        data = {k: v for k, v in self.__dict__.items() if k not in skip}
        data["spec"] = self.spec.to_dict()
        data["instances"] = [i.to_dict() for i in self.instances.values()]
        data["stdout"] = self.stdout.to_dict()
        data["stderr"] = self.stderr.to_dict()
        data["snapshots"] = [dict(s.__dict__) for s in self.snapshots.values()]
        data["result_keys"] = sorted(self.result_keys)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Task:
        """Rebuild a task saved with :meth:`to_dict`."""
        skip = ("spec", "instances", "stdout", "stderr", "snapshots", "result_keys")
        values = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k not in skip}
        task = cls(spec=TaskSpec.from_dict(data["spec"]), **values)
        for item in data.get("instances", []):
            inst = Instance.from_dict(item)
            task.instances[inst.instance_id] = inst
        task.stdout = OutputBuffer.from_dict(data.get("stdout", {}))
        task.stderr = OutputBuffer.from_dict(data.get("stderr", {}))
        for item in data.get("snapshots", []):
            snap = Snapshot(**item)
            task.snapshots[snap.id] = snap
        task.result_keys = set(data.get("result_keys", []))
        return task


@dataclass
class Job:
    """A job grouping tasks, optionally with dependencies between them."""

    uuid: str
    seq: int
    spec: JobSpec
    shortname: str
    creation: float
    state: str = JOB_ACTIVE
    previous_state: str | None = None
    state_time: float = 0.0
    previous_state_time: float | None = None
    last_modified: float = 0.0
    end_date: float | None = None
    task_uuids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for persistence."""
        data = dict(self.__dict__)
        data["spec"] = self.spec.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        """Rebuild a job saved with :meth:`to_dict`."""
        values = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "spec"}
        return cls(spec=JobSpec.from_dict(data["spec"]), **values)


@dataclass
class Pool:
    """A pool of slots that tasks with ``poolUuid`` run in."""

    uuid: str
    seq: int
    spec: PoolSpec
    shortname: str
    creation: float
    state: str = SUBMITTED
    previous_state: str | None = None
    state_time: float = 0.0
    previous_state_time: float | None = None
    last_modified: float = 0.0
    end_date: float | None = None
    stdout: OutputBuffer = field(default_factory=lambda: OutputBuffer(INSTANCE_BUFFER_BYTES))
    stderr: OutputBuffer = field(default_factory=lambda: OutputBuffer(INSTANCE_BUFFER_BYTES))

    @property
    def is_open(self) -> bool:
        """Can tasks still be submitted into it?"""
        return self.state not in (POOL_CLOSING, POOL_CLOSED, PENDING_DELETE, FAILURE)

    @property
    def is_running(self) -> bool:
        """Are its slots up?"""
        return self.state == FULLY_EXECUTING

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for persistence."""
        data = {k: v for k, v in self.__dict__.items() if k not in ("stdout", "stderr", "spec")}
        data["spec"] = self.spec.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Pool:
        """Rebuild a pool saved with :meth:`to_dict`."""
        values = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "spec"}
        return cls(spec=PoolSpec.from_dict(data["spec"]), **values)


@dataclass
class PageCursor:
    """Server-side state behind an opaque ``nextToken``."""

    kind: str
    after_seq: int


@dataclass
class Page:
    """One page of a paginated listing."""

    token: str | None
    next_token: str | None
    is_truncated: bool
    items: list[Any]


@dataclass
class BackendConfig:
    """Settings of the model."""

    mode: str = "run"
    cores: int = 2
    max_tasks: int | None = None
    sim_duration: float = 1.0
    sim_outcome: str = "success"
    email: str = "emulator@qarnot.local"


def _set_state(obj: Task | Job | Pool, new_state: str, now: float) -> bool:
    if obj.state == new_state:
        return False
    obj.previous_state = obj.state
    obj.previous_state_time = obj.state_time
    obj.state = new_state
    obj.state_time = now
    obj.last_modified = now
    return True


def _task_fields() -> dict[str, FieldDef[Task]]:
    def date(getter: Callable[[Task], float | None]) -> FieldDef[Task]:
        return FieldDef(getter, "date")

    return {
        "uuid": FieldDef(lambda t: t.uuid),
        "name": FieldDef(lambda t: t.spec.name),
        "shortname": FieldDef(lambda t: t.shortname),
        "profile": FieldDef(lambda t: t.spec.profile),
        "state": FieldDef(lambda t: t.state, "enum"),
        "previousstate": FieldDef(lambda t: t.previous_state, "enum"),
        "tags": FieldDef(lambda t: t.spec.tags, "list"),
        "labels": FieldDef(lambda t: t.spec.labels, "dict"),
        "pooluuid": FieldDef(lambda t: t.spec.pool_uuid),
        "jobuuid": FieldDef(lambda t: t.spec.job_uuid),
        "projectuuid": FieldDef(lambda t: t.spec.project_uuid),
        "creationdate": date(lambda t: t.creation),
        "lastmodified": date(lambda t: t.last_modified),
        "enddate": date(lambda t: t.end_date),
        "statetransitiontime": date(lambda t: t.state_time),
        "instancecount": FieldDef(lambda t: len(t.instances), "int"),
        "advancedranges": FieldDef(lambda t: t.spec.advanced_ranges),
        "resultbucket": FieldDef(lambda t: t.spec.result_bucket),
        "schedulingtype": FieldDef(lambda t: t.spec.scheduling_type or "Flex", "enum"),
        "dependencies.dependson": FieldDef(lambda t: t.spec.depends_on, "list"),
        "dependson": FieldDef(lambda t: t.spec.depends_on, "list"),
        "autodeleteoncompletion": FieldDef(lambda t: t.spec.auto_delete, "bool"),
    }


def _job_fields() -> dict[str, FieldDef[Job]]:
    return {
        "uuid": FieldDef(lambda j: j.uuid),
        "name": FieldDef(lambda j: j.spec.name),
        "shortname": FieldDef(lambda j: j.shortname),
        "state": FieldDef(lambda j: j.state, "enum"),
        "tags": FieldDef(lambda j: j.spec.tags, "list"),
        "pooluuid": FieldDef(lambda j: j.spec.pool_uuid),
        "projectuuid": FieldDef(lambda j: j.spec.project_uuid),
        "usedependencies": FieldDef(lambda j: j.spec.use_dependencies, "bool"),
        "creationdate": FieldDef(lambda j: j.creation, "date"),
        "lastmodified": FieldDef(lambda j: j.last_modified, "date"),
        "enddate": FieldDef(lambda j: j.end_date, "date"),
    }


def _pool_fields() -> dict[str, FieldDef[Pool]]:
    return {
        "uuid": FieldDef(lambda p: p.uuid),
        "name": FieldDef(lambda p: p.spec.name),
        "shortname": FieldDef(lambda p: p.shortname),
        "profile": FieldDef(lambda p: p.spec.profile),
        "state": FieldDef(lambda p: p.state, "enum"),
        "tags": FieldDef(lambda p: p.spec.tags, "list"),
        "labels": FieldDef(lambda p: p.spec.labels, "dict"),
        "projectuuid": FieldDef(lambda p: p.spec.project_uuid),
        "instancecount": FieldDef(lambda p: p.spec.instance_count, "int"),
        "creationdate": FieldDef(lambda p: p.creation, "date"),
        "lastmodified": FieldDef(lambda p: p.last_modified, "date"),
        "enddate": FieldDef(lambda p: p.end_date, "date"),
    }


TASK_FIELDS = _task_fields()
JOB_FIELDS = _job_fields()
POOL_FIELDS = _pool_fields()


class Backend:
    """All tasks, jobs and pools, and every operation on them. Thread-safe through :attr:`lock`."""

    def __init__(
        self,
        config: BackendConfig,
        storage: BucketChecker | None,
        clock: Clock,
        on_change: Callable[[str, str, bool], None] | None = None,
    ) -> None:
        self.config = config
        self.storage = storage
        self.clock = clock
        self.lock = threading.RLock()
        self.executor: Executor | None = None
        self.credits_exhausted = False
        self.shutting_down = False
        self.tasks: dict[str, Task] = {}
        self.jobs: dict[str, Job] = {}
        self.pools: dict[str, Pool] = {}
        self._shortnames: dict[str, dict[str, str]] = {"task": {}, "job": {}, "pool": {}}
        self._tombstones: OrderedDict[str, str] = OrderedDict()
        self._cursors: OrderedDict[str, PageCursor] = OrderedDict()
        # dependency uuid -> uuids of the tasks waiting on it (creation order), so that a task ending
        # wakes its dependents without scanning every task under the lock
        self._waiters: dict[str, list[str]] = {}
        # job or pool uuid -> how many of its tasks are not final, so Terminating/Closing ends in O(1)
        self._open_tasks: Counter[str] = Counter()
        self._seq = 0
        self._on_change = on_change

    # ------------------------------------------------------------------ helpers

    def _now(self) -> float:
        return round(time.time(), 6)  # microseconds, as rendered: dates survive a format/parse round trip

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _changed(self, kind: str, uuid: str, deleted: bool = False) -> None:
        if self._on_change is not None:
            self._on_change(kind, uuid, deleted)

    def _lookup(self, kind: str, table: Mapping[str, _Item], ident: str) -> _Item:
        """A task, job or pool by uuid or shortname; NotFound names what was asked for."""
        item = table.get(ident)
        if item is None:
            uuid = self._shortnames[kind].get(ident)
            item = table.get(uuid) if uuid else None
        if item is None:
            raise NotFound(f"{kind.capitalize()} '{ident}' not found.")
        return item

    def _task(self, ident: str) -> Task:
        return self._lookup("task", self.tasks, ident)

    def _job(self, ident: str) -> Job:
        return self._lookup("job", self.jobs, ident)

    def _pool(self, ident: str) -> Pool:
        return self._lookup("pool", self.pools, ident)

    def live_task_count(self) -> int:
        """Tasks counted against ``max_tasks``: every existing task not being deleted."""
        return sum(1 for t in self.tasks.values() if t.state != PENDING_DELETE)

    # ------------------------------------------------------------------ task submission

    def check_task(self, spec: TaskSpec) -> None:
        """Checks that need the model: credits (402), quota (403), references (400). Lock held by caller."""
        if self.credits_exhausted:
            raise NotEnoughCredits()
        if self.config.max_tasks is not None and self.live_task_count() >= self.config.max_tasks:
            raise MaxTasksReached()
        errors: dict[str, list[str]] = {}
        job: Job | None = None
        if spec.job_uuid is not None:
            job = self.jobs.get(spec.job_uuid)
            if job is None:
                errors["JobUuid"] = [f"Job '{spec.job_uuid}' not found."]
            elif job.state != JOB_ACTIVE:
                errors["JobUuid"] = [f"Job '{spec.job_uuid}' is {job.state}: it accepts no new task."]
        pool_uuid = spec.pool_uuid or (job.spec.pool_uuid if job is not None else None)
        if spec.pool_uuid is not None and job is not None and job.spec.pool_uuid not in (None, spec.pool_uuid):
            errors["PoolUuid"] = ["The task's pool differs from its job's pool."]
        if pool_uuid is not None:
            pool = self.pools.get(pool_uuid)
            if pool is None:
                errors["PoolUuid"] = [f"Pool '{pool_uuid}' not found."]
            elif not pool.is_open:
                errors["PoolUuid"] = [f"Pool '{pool_uuid}' is {pool.state}: it accepts no new task."]
            if spec.profile is not None:
                errors["Profile"] = ["A task in a pool must not have a profile."]
        elif spec.profile is None:
            errors["Profile"] = ["A profile or a poolUuid is required."]
        elif spec.profile not in PROFILES:
            errors["Profile"] = [f"Profile '{spec.profile}' does not exist."]
        if spec.shortname is not None and spec.shortname in self._shortnames["task"]:
            errors["Shortname"] = [f"Shortname '{spec.shortname}' is already used."]
        deps = list(spec.depends_on) + [d["taskUuid"] for d in spec.advanced_depends_on]
        if deps:
            if job is None or not job.spec.use_dependencies:
                errors["Dependencies"] = ["Dependencies need a job created with useDependencies=true."]
            for dep in deps:
                if dep not in self.tasks and dep not in self._tombstones:
                    errors.setdefault("Dependencies", []).append(f"Task '{dep}' not found.")
        if errors:
            raise ValidationProblem(errors)

    def check_buckets(self, spec: TaskSpec) -> None:
        """404 for a missing resource bucket; create the result bucket if needed. Call WITHOUT the lock."""
        if self.storage is None:
            return
        names = [b.bucket_name for b in spec.resource_buckets] + list(spec.legacy_resource_buckets)
        for name in names:
            if not self.storage.bucket_exists(name):
                raise NotFound(f"Bucket '{name}' not found.")
        if spec.result_bucket is not None:
            try:
                self.storage.ensure_bucket(spec.result_bucket)
            except Exception as exc:  # invalid bucket name, storage error
                raise ValidationProblem.single("ResultBucket", f"Cannot create bucket: {exc}") from exc

    def submit_task(self, spec: TaskSpec) -> Task:
        """Validate against the model, check storage, create and start a task."""
        with self.lock:
            self.check_task(spec)
        self.check_buckets(spec)
        with self.lock:
            self.check_task(spec)
            return self._create_task(spec)

    def _create_task(self, spec: TaskSpec) -> Task:
        now = self._now()
        uuid = new_uuid()
        task = Task(
            uuid=uuid,
            seq=self._next_seq(),
            spec=spec,
            shortname=spec.shortname or uuid,
            creation=now,
            state_time=now,
            last_modified=now,
            simulated=self.config.mode == "simulate",
        )
        if spec.job_uuid is not None and spec.pool_uuid is None:
            spec.pool_uuid = self.jobs[spec.job_uuid].spec.pool_uuid
        task.constants = self._effective_constants(spec)
        task.snapshot_interval = spec.snapshot_interval or 0
        task.instances = {i: Instance(i) for i in spec.instance_ids}
        if spec.max_time_queue_seconds:  # timers first: if one failed, no half-created task would remain
            self.clock.call_later(spec.max_time_queue_seconds, lambda: self._queue_timeout(uuid))
        self.tasks[uuid] = task
        self._shortnames["task"][task.shortname] = uuid
        self._count_open(task, 1)
        if spec.job_uuid is not None:
            self.jobs[spec.job_uuid].task_uuids.append(uuid)
        if spec.depends_on or spec.advanced_depends_on:
            task.deps_state = "waiting"
            self._watch_dependencies(task)
        self._changed("task", uuid)
        self._try_start(task)
        return task

    def _count_open(self, task: Task, delta: int) -> None:
        """Count a task in (1) or out of (-1) the unfinished tasks of its job and pool."""
        for owner in (task.spec.job_uuid, task.spec.pool_uuid):
            if owner is not None:
                self._open_tasks[owner] += delta
                if self._open_tasks[owner] <= 0:
                    del self._open_tasks[owner]

    def _watch_dependencies(self, task: Task) -> None:
        """Index ``task`` under each dependency that is not final yet (see :meth:`_wake_dependents`)."""
        deps = list(task.spec.depends_on) + [d["taskUuid"] for d in task.spec.advanced_depends_on]
        for dep_uuid in dict.fromkeys(deps):
            dep = self.tasks.get(dep_uuid)
            if dep is not None and not dep.is_final:
                self._waiters.setdefault(dep_uuid, []).append(task.uuid)

    def _wake_dependents(self, dep_uuid: str) -> None:
        """A task ended or vanished: give the tasks waiting on it a chance to start."""
        for uuid in self._waiters.pop(dep_uuid, []):
            other = self.tasks.get(uuid)
            if other is not None and other.deps_state == "waiting" and not other.dispatched:
                self._try_start(other)

    def _effective_constants(self, spec: TaskSpec) -> dict[str, str]:
        constants: dict[str, str] = {}
        if spec.pool_uuid is not None and spec.pool_uuid in self.pools:
            constants.update(dict(self.pools[spec.pool_uuid].spec.constants))
        constants.update(dict(spec.constants))
        return constants

    def _deps_outcome(self, task: Task) -> bool | None:
        """None while waiting; True if the dependency conditions hold; False if they cannot."""
        conditions: list[tuple[str, list[str] | None]] = [(d, None) for d in task.spec.depends_on]
        conditions += [(d["taskUuid"], d["taskFinalStateCondition"]) for d in task.spec.advanced_depends_on]
        fulfilled = True
        for dep_uuid, wanted in conditions:
            dep = self.tasks.get(dep_uuid)
            final_state = dep.state if dep is not None else self._tombstones.get(dep_uuid, CANCELLED)
            if final_state not in FINAL_STATES:
                return None
            if wanted is not None and final_state.lower() not in wanted:
                fulfilled = False
        return fulfilled

    def _try_start(self, task: Task) -> None:
        """Hand the task to the executor once its dependencies and pool allow it."""
        if task.dispatched or task.is_final or task.state in (PENDING_CANCEL, PENDING_DELETE):
            return
        if task.deps_state is not None:
            outcome = self._deps_outcome(task)
            if outcome is None:
                task.deps_state = "waiting"
                return
            if not outcome:
                task.deps_state = "dependencyConditionsNotFulfilled"
                task.fail_reason = {
                    "code": ERROR_CODE_DEPENDENCY,
                    "message": "The task was cancelled: its dependency conditions cannot be fulfilled.",
                    "debug": None,
                }
                self._cancel_all(task)
                return
            task.deps_state = "dependencyConditionsFulfilled"
        if task.spec.pool_uuid is not None:
            pool = self.pools.get(task.spec.pool_uuid)
            if pool is None or not pool.is_running:
                return
        if self.executor is None or self.shutting_down:
            return
        if not task.instances:
            self._finalize(task)
            return
        task.dispatched = True
        if task.simulated:
            task.sim_start = self._now()
        self.executor.enqueue(task)

    def _queue_timeout(self, uuid: str) -> None:
        with self.lock:
            task = self.tasks.get(uuid)
            if task is None or task.is_final or task.state in (PENDING_CANCEL, PENDING_DELETE):
                return
            if any(i.first_start is not None for i in task.instances.values()):
                return
            task.fail_reason = {
                "code": ERROR_CODE_QUEUE,
                "message": f"The task stayed queued longer than maxTimeQueueSeconds "
                f"({task.spec.max_time_queue_seconds} s).",
                "debug": None,
            }
            self._cancel_all(task, final=FAILURE)

    # ------------------------------------------------------------------ instance callbacks (executors)

    def _live(self, task_uuid: str) -> Task | None:
        task = self.tasks.get(task_uuid)
        if task is None or self.shutting_down:
            return None
        return task

    def instance_dispatched(self, task_uuid: str, instance_id: int) -> bool:
        """An instance got a slot and is being prepared. False: do not run it."""
        with self.lock:
            task = self._live(task_uuid)
            if task is None or task.state in (PENDING_CANCEL, PENDING_DELETE) or task.is_final:
                return False
            inst = task.instances[instance_id]
            if inst.phase == DONE:
                return False
            inst.phase = DISPATCHED
            self._refresh_state(task)
            return True

    def instance_executing(self, task_uuid: str, instance_id: int) -> bool:
        """An attempt of an instance starts executing. False: do not start it."""
        with self.lock:
            task = self._live(task_uuid)
            if task is None or task.state in (PENDING_CANCEL, PENDING_DELETE) or task.is_final:
                return False
            inst = task.instances[instance_id]
            now = self._now()
            inst.phase = EXECUTING
            inst.attempts += 1
            inst.exec_start = now
            if inst.first_start is None:
                inst.first_start = now
            self._refresh_state(task)
            return True

    def instance_output(self, task_uuid: str, instance_id: int, stream: str, chunk: bytes, whole: bytes) -> None:
        """Append process output: ``chunk`` to the instance buffer, ``whole`` (complete lines) to the task's."""
        with self.lock:
            task = self.tasks.get(task_uuid)
            if task is None:
                return
            inst = task.instances.get(instance_id)
            if inst is not None:
                (inst.stdout if stream == "stdout" else inst.stderr).write(chunk)
            (task.stdout if stream == "stdout" else task.stderr).write(whole)

    def instance_exited(self, task_uuid: str, instance_id: int, exit_code: int) -> str:
        """An attempt ended. Returns ``"retry"``, ``"upload"`` (then call :meth:`instance_finished`) or ``"stop"``."""
        with self.lock:
            task = self._live(task_uuid)
            if task is None:
                return "stop"
            inst = task.instances[instance_id]
            now = self._now()
            if inst.exec_start is not None:
                inst.exec_seconds += max(0.0, now - inst.exec_start)
            inst.exit_code = exit_code
            if task.state in (PENDING_CANCEL, PENDING_DELETE) or task.is_final:
                return "upload" if task.spec.upload_results_on_cancellation else "stop"
            if exit_code != 0 and self._may_retry(task, inst):
                task.retries_used += 1
                inst.phase = DISPATCHED
                return "retry"
            inst.phase = UPLOADING
            self._refresh_state(task)
            return "upload"

    def _may_retry(self, task: Task, inst: Instance) -> bool:
        """Retry settings: per-instance and task-wide limits, the most restrictive wins; none = no retry."""
        spec = task.spec
        per_values = [v for v in (spec.max_per_instance_retries, spec.max_retries_per_instance) if v is not None]
        per_instance: int | None = min(per_values) if per_values else None
        total = spec.max_total_retries
        pool = self.pools.get(spec.pool_uuid) if spec.pool_uuid is not None else None
        if pool is not None:
            if per_instance is None:
                per_instance = pool.spec.default_max_per_instance_retries
            if total is None:
                total = pool.spec.default_max_total_retries
        if per_instance is None and total is None:
            return False
        if per_instance is not None and inst.attempts - 1 >= per_instance:
            return False
        return total is None or task.retries_used < total

    def instance_finished(
        self,
        task_uuid: str,
        instance_id: int,
        *,
        results: Iterable[str] = (),
        result_keys: Iterable[str] = (),
        cancelled: bool = False,
        error: str | None = None,
    ) -> None:
        """An instance is done (after uploading its results, or cancelled before/while running)."""
        with self.lock:
            task = self._live(task_uuid)
            if task is None:
                return
            inst = task.instances[instance_id]
            if inst.phase == DONE:
                return
            now = self._now()
            inst.results.extend(results)
            task.result_keys.update(result_keys)
            inst.end = now
            inst.phase = DONE
            stopping = task.state in (PENDING_CANCEL, PENDING_DELETE) or task.is_final
            if error is not None and not stopping:
                inst.state = FAILURE
                inst.error = {
                    "code": ERROR_CODE_INSTANCE,
                    "message": f"Instance {instance_id} failed: {error}",
                    "debug": None,
                }
            elif cancelled or stopping:
                inst.state = CANCELLED
            elif inst.exit_code == 0:
                inst.state = SUCCESS
            else:
                inst.state = FAILURE
                inst.error = {
                    "code": ERROR_CODE_INSTANCE,
                    "message": f"Instance {instance_id} failed with exit code {inst.exit_code}.",
                    "debug": f"attempts: {inst.attempts}",
                }
            self._refresh_state(task)
            if not task.unfinished():
                self._finalize(task)
            else:
                self._changed("task", task.uuid)

    def sim_phase(self, task_uuid: str, phase: str, outcome: str = "success") -> None:
        """Move every unfinished instance of a simulated task to ``phase`` (``done`` ends them)."""
        with self.lock:
            task = self._live(task_uuid)
            if task is None or task.is_final or task.state in (PENDING_CANCEL, PENDING_DELETE):
                return
            now = self._now()
            for inst in task.unfinished():
                if phase == EXECUTING:
                    inst.attempts = max(1, inst.attempts)
                    inst.first_start = inst.exec_start = now
                elif phase == DONE:
                    start = inst.exec_start if inst.exec_start is not None else now
                    inst.exec_seconds = max(0.0, now - start)
                    inst.end = now
                    ok = outcome != "failure"
                    inst.exit_code = 0 if ok else 1
                    inst.state = SUCCESS if ok else FAILURE
                    line = f"[emulator] instance {inst.instance_id} simulated: {'success' if ok else 'failure'}\n"
                    inst.stdout.write(line.encode())
                    task.stdout.write(line.encode())
                    if not ok:
                        inst.error = {
                            "code": ERROR_CODE_INSTANCE,
                            "message": f"Instance {inst.instance_id} failed with exit code 1 (simulated).",
                            "debug": "simulate mode",
                        }
                inst.phase = phase
            if phase == DONE:
                self._finalize(task)
            else:
                self._refresh_state(task)

    # ------------------------------------------------------------------ state machine

    def _refresh_state(self, task: Task) -> None:
        """Derive the task state from its instances' phases and record the transition."""
        if task.is_final or task.state in (PENDING_CANCEL, PENDING_DELETE):
            return
        unfinished = task.unfinished()
        if not unfinished:
            return
        phases = [i.phase for i in unfinished]
        started = any(i.first_start is not None for i in task.instances.values())
        if all(p == UPLOADING for p in phases):
            new_state = UPLOADING_RESULTS
        elif any(p in (EXECUTING, UPLOADING) for p in phases):
            new_state = FULLY_EXECUTING if all(p in (EXECUTING, UPLOADING) for p in phases) else PARTIALLY_EXECUTING
        elif started:
            new_state = PARTIALLY_EXECUTING
        elif any(p == DISPATCHED for p in phases):
            new_state = FULLY_DISPATCHED if all(p == DISPATCHED for p in phases) else PARTIALLY_DISPATCHED
        else:
            new_state = SUBMITTED
        if _set_state(task, new_state, self._now()):
            self._changed("task", task.uuid)

    def _finalize(self, task: Task) -> None:
        """All instances are done: reach Success, Failure or Cancelled (or vanish if being deleted)."""
        if task.is_final:
            return
        now = self._now()
        if task.delete_requested:
            self._remove_task(task)
            return
        if task.state == PENDING_CANCEL or task.fail_reason is not None:
            final = CANCELLED
            if task.fail_reason is not None and task.fail_reason.get("code") == ERROR_CODE_QUEUE:
                final = FAILURE
        elif any(i.state == FAILURE for i in task.instances.values()):
            final = FAILURE
        elif any(i.state == CANCELLED for i in task.instances.values()):
            final = CANCELLED
        else:
            final = SUCCESS
        if final != CANCELLED and task.state not in (UPLOADING_RESULTS, PENDING_CANCEL):
            _set_state(task, UPLOADING_RESULTS, now)
        if task.fail_reason is not None:
            task.errors.append(task.fail_reason)
        if final == FAILURE:
            failed = sorted(i.instance_id for i in task.instances.values() if i.state == FAILURE)
            for instance_id in failed:
                inst = task.instances[instance_id]
                if inst.error is not None:
                    task.errors.append(dict(inst.error))
        _set_state(task, final, now)
        self._count_open(task, -1)
        task.end_date = now
        self._changed("task", task.uuid)
        self._after_final(task)

    def _after_final(self, task: Task) -> None:
        self._wake_dependents(task.uuid)
        if task.spec.job_uuid is not None and task.spec.job_uuid in self.jobs:
            self._check_job(self.jobs[task.spec.job_uuid])
        if task.spec.pool_uuid is not None and task.spec.pool_uuid in self.pools:
            self._check_pool(self.pools[task.spec.pool_uuid])
        if task.spec.auto_delete:
            try:
                ttl = parse_timespan(task.spec.completion_ttl)
            except ValueError:
                ttl = 0.0
            uuid = task.uuid
            self.clock.call_later(ttl, lambda: self._auto_delete(uuid))

    def _auto_delete(self, uuid: str) -> None:
        with self.lock:
            task = self.tasks.get(uuid)
            if task is not None and task.is_final:
                self._remove_task(task)

    def _cancel_all(self, task: Task, final: str = CANCELLED) -> None:
        """Stop every instance; the task ends Cancelled (or Failure for a queue timeout)."""
        if task.is_final:
            return
        if task.state not in (PENDING_CANCEL, PENDING_DELETE):
            _set_state(task, PENDING_CANCEL, self._now())
        if final == FAILURE and task.fail_reason is None:
            task.fail_reason = {"code": ERROR_CODE_QUEUE, "message": "The task failed.", "debug": None}
        gone: list[int]
        if task.dispatched and self.executor is not None:
            gone = self.executor.cancel(task)
        else:
            gone = [i.instance_id for i in task.unfinished()]
        now = self._now()
        for instance_id in gone:
            inst = task.instances[instance_id]
            if inst.phase != DONE:
                inst.phase = DONE
                inst.state = CANCELLED
                inst.end = now
        self._changed("task", task.uuid)
        if not task.unfinished():
            self._finalize(task)

    def _remove_task(self, task: Task) -> None:
        if self.tasks.pop(task.uuid, None) is not None and not task.is_final:
            self._count_open(task, -1)
        if self._shortnames["task"].get(task.shortname) == task.uuid:
            del self._shortnames["task"][task.shortname]
        self._tombstones[task.uuid] = task.state if task.is_final else CANCELLED
        while len(self._tombstones) > 100_000:
            self._tombstones.popitem(last=False)
        if task.spec.job_uuid is not None and task.spec.job_uuid in self.jobs:
            job = self.jobs[task.spec.job_uuid]
            if task.uuid in job.task_uuids:
                job.task_uuids.remove(task.uuid)
                self._changed("job", job.uuid)
        self._changed("task", task.uuid, True)
        self._wake_dependents(task.uuid)

    # ------------------------------------------------------------------ task operations (HTTP)

    def get_task(self, ident: str) -> Task:
        """A task by uuid or shortname (404 otherwise)."""
        with self.lock:
            return self._task(ident)

    def list_tasks(self, tags: list[str] | None = None) -> list[Task]:
        """Every task, optionally only those having any of ``tags``."""
        with self.lock:
            tasks = sorted(self.tasks.values(), key=lambda t: t.seq)
        if tags:
            wanted = set(tags)
            tasks = [t for t in tasks if wanted.intersection(t.spec.tags)]
        return tasks

    def abort_task(self, ident: str) -> None:
        """Abort: PendingCancel, kill instances, then Cancelled. 403 if already final."""
        with self.lock:
            task = self._task(ident)
            if task.is_final or task.state == PENDING_DELETE:
                raise Forbidden(f"Invalid operation on non running task (task is {task.state}).")
            if task.state == PENDING_CANCEL:
                return
            self._cancel_all(task)

    def delete_task(self, ident: str) -> None:
        """Delete: abort first if running (PendingDelete until the instances stop), then remove."""
        with self.lock:
            task = self._task(ident)
            if task.state == PENDING_DELETE:
                return
            if task.is_final:
                self._remove_task(task)
                return
            task.delete_requested = True
            _set_state(task, PENDING_DELETE, self._now())
            self._cancel_all(task)

    def update_task(self, ident: str, data: Any) -> None:
        """PUT: update the mutable fields present in the body (tags, labels, constants, name...)."""
        spec = parse_task(data, for_update=True)
        body = Fields(data, {})
        with self.lock:
            task = self._task(ident)
            if task.state in (PENDING_DELETE,):
                raise Forbidden("Invalid operation on a task being deleted.")
            self._apply_overrides(task.spec, spec, body)
            task.constants = self._effective_constants(task.spec)
            task.last_modified = self._now()
            self._changed("task", task.uuid)

    @staticmethod
    def _apply_overrides(target: TaskSpec, source: TaskSpec, body: Fields) -> None:
        mapping = {
            "name": "name",
            "tags": "tags",
            "labels": "labels",
            "constants": "constants",
            "constraints": "constraints",
            "resultsWhitelist": "results_whitelist",
            "resultsBlacklist": "results_blacklist",
            "snapshotWhitelist": "snapshot_whitelist",
            "snapshotBlacklist": "snapshot_blacklist",
            "autoDeleteOnCompletion": "auto_delete",
            "completionTimeToLive": "completion_ttl",
            "resultBucket": "result_bucket",
            "resultsBucketPrefix": "results_bucket_prefix",
            "uploadResultsOnCancellation": "upload_results_on_cancellation",
        }
        for key, attr in mapping.items():
            if body.has(key) and (key != "name" or source.name):
                if key == "constants":
                    merged = dict(target.constants)
                    merged.update(dict(source.constants))
                    target.constants = list(merged.items())
                else:
                    setattr(target, attr, getattr(source, attr))

    def sync_resources(self, ident: str) -> None:
        """PATCH: re-sync resource buckets into running instances (additive)."""
        with self.lock:
            task = self._task(ident)
            if task.dispatched and not task.is_final and self.executor is not None:
                self.executor.update_resources(task)
            task.last_modified = self._now()

    def derive_task(self, ident: str, kind: str, data: Any) -> Task:
        """retry / resume / recover / clone: a new task from this one, with overrides from the body."""
        overrides = parse_task(data, for_update=True) if isinstance(data, dict) else None
        body = Fields(data if isinstance(data, dict) else {}, {})
        with self.lock:
            source = self._task(ident)
            if kind != "clone" and not source.is_final:
                raise Forbidden(f"Invalid operation on non final task (task is {source.state}).")
            never_ran = [i.instance_id for i in source.instances.values() if i.state in (None, CANCELLED)]
            ids = {
                "retry": source.ids_in(FAILURE),
                "resume": never_ran,
                "recover": source.ids_in(FAILURE) + never_ran,
                "clone": list(source.instances),
            }[kind]
            spec = copy.deepcopy(source.spec)
        if overrides is not None:
            self._apply_overrides(spec, overrides, body)
        spec.shortname = overrides.shortname if overrides is not None else None
        if not ids:
            raise ValidationProblem.single("InstanceCount", f"There is no instance to {kind}.")
        ids = sorted(set(ids))
        spec.instance_ids = ids
        if ids == list(range(len(ids))) and source.spec.advanced_ranges is None:
            spec.instance_count, spec.advanced_ranges = len(ids), None
        else:
            spec.instance_count, spec.advanced_ranges = None, format_ranges(ids)
        return self.submit_task(spec)

    def read_output(self, ident: str, stream: str, instance_id: int | None, fresh: bool, reader: str) -> str:
        """stdout/stderr of a task or one instance; ``fresh`` consumes from the reader's cursor."""
        with self.lock:
            task = self._task(ident)
            if instance_id is None:
                buffer = task.stdout if stream == "stdout" else task.stderr
            else:
                inst = task.instances.get(instance_id)
                if inst is None:
                    raise NotFound(f"Instance {instance_id} of task '{ident}' not found.")
                buffer = inst.stdout if stream == "stdout" else inst.stderr
            return buffer.read_fresh(reader) if fresh else buffer.read_all()

    def snapshot(self, ident: str, config: dict[str, str | None], interval: int | None = None) -> Snapshot | None:
        """Instant snapshot (returns it) or periodic (``interval`` seconds; returns None).

        A periodic snapshot of a finished task only records the interval: the SDKs send it right after
        ``POST /tasks``, which the real API answers long before the task could end, so it must not fail.
        """
        with self.lock:
            task = self._task(ident)
            if interval is not None and task.is_final:
                task.snapshot_interval = interval
                self._changed("task", task.uuid)
                return None
            if task.is_final or task.state in (PENDING_CANCEL, PENDING_DELETE):
                raise Forbidden(f"Invalid operation on non running task (task is {task.state}).")
            now = self._now()
            if interval is not None:
                self._schedule_periodic(task.uuid, interval)  # first: a failure leaves the task unchanged
                task.snapshot_interval = interval
                self._changed("task", task.uuid)
                return None
            stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(now))
            snap_id = f"snap_{task.uuid}_{stamp}"
            counter = 1
            while snap_id in task.snapshots:
                counter += 1
                snap_id = f"snap_{task.uuid}_{stamp}_{counter}"
            snap = Snapshot(
                id=snap_id,
                task_uuid=task.uuid,
                trigger=now,
                last_update=now,
                whitelist=config.get("whitelist") or task.spec.snapshot_whitelist,
                blacklist=config.get("blacklist") or task.spec.snapshot_blacklist,
                bucket=config.get("bucket") or task.spec.snapshot_bucket or task.spec.result_bucket,
                bucket_prefix=config.get("bucketPrefix") or task.spec.snapshot_bucket_prefix,
            )
            task.snapshots[snap_id] = snap
            if self.executor is not None and task.dispatched and not task.simulated:
                self.executor.snapshot(task, snap)
            else:
                snap.status = "Success"
            self._changed("task", task.uuid)
            return snap

    def _schedule_periodic(self, uuid: str, interval: int) -> None:
        def tick() -> None:
            with self.lock:
                task = self.tasks.get(uuid)
                if task is None or task.is_final or task.snapshot_interval != interval or self.shutting_down:
                    return
            try:
                self.snapshot(uuid, {})
            except (Forbidden, NotFound):
                return
            self._schedule_periodic(uuid, interval)

        self.clock.call_later(float(interval), tick)

    def snapshot_result(self, snap: Snapshot, status: str, size: int, transferred: int, keys: Iterable[str]) -> None:
        """Executor callback: progress of an instant snapshot."""
        with self.lock:
            snap.status = status
            snap.size_to_upload = size
            snap.transferred = transferred
            snap.last_update = self._now()
            task = self.tasks.get(snap.task_uuid)
            if task is not None:
                task.result_keys.update(keys)
                self._changed("task", task.uuid)

    def get_snapshot(self, ident: str, snap_id: str) -> Snapshot:
        """A snapshot of a task (404 if unknown)."""
        with self.lock:
            task = self._task(ident)
            snap = task.snapshots.get(snap_id)
            if snap is None:
                raise NotFound(f"Snapshot '{snap_id}' not found.")
            return snap

    # ------------------------------------------------------------------ jobs

    def create_job(self, spec: JobSpec) -> Job:
        """POST /jobs."""
        with self.lock:
            if spec.pool_uuid is not None and spec.pool_uuid not in self.pools:
                raise ValidationProblem.single("PoolUuid", f"Pool '{spec.pool_uuid}' not found.")
            if spec.shortname is not None and spec.shortname in self._shortnames["job"]:
                raise ValidationProblem.single("Shortname", f"Shortname '{spec.shortname}' is already used.")
            now = self._now()
            uuid = new_uuid()
            job = Job(uuid, self._next_seq(), spec, spec.shortname or uuid, now, state_time=now, last_modified=now)
            if spec.max_wall_time:  # timer first: if it failed, no half-created job would remain
                seconds = parse_timespan(spec.max_wall_time)
                if seconds > 0:
                    self.clock.call_later(seconds, lambda: self._job_walltime(uuid))
            self.jobs[uuid] = job
            self._shortnames["job"][job.shortname] = uuid
            self._changed("job", uuid)
            return job

    def _job_walltime(self, uuid: str) -> None:
        with self.lock:
            job = self.jobs.get(uuid)
            if job is not None and job.state == JOB_ACTIVE:
                self._terminate(job)

    def get_job(self, ident: str) -> Job:
        """A job by uuid or shortname."""
        with self.lock:
            return self._job(ident)

    def list_jobs(self, tags: list[str] | None = None) -> list[Job]:
        """Every job, optionally filtered by any of ``tags``."""
        with self.lock:
            jobs = sorted(self.jobs.values(), key=lambda j: j.seq)
        if tags:
            wanted = set(tags)
            jobs = [j for j in jobs if wanted.intersection(j.spec.tags)]
        return jobs

    def job_tasks(self, ident: str) -> list[Task]:
        """The tasks of a job."""
        with self.lock:
            job = self._job(ident)
            return [self.tasks[u] for u in job.task_uuids if u in self.tasks]

    def terminate_job(self, ident: str) -> None:
        """Abort the job's remaining tasks; the job ends Completed."""
        with self.lock:
            job = self._job(ident)
            if job.state in (JOB_COMPLETED, JOB_DELETING):
                return
            self._terminate(job)

    def _terminate(self, job: Job) -> None:
        if _set_state(job, JOB_TERMINATING, self._now()):
            self._changed("job", job.uuid)
        for uuid in list(job.task_uuids):
            task = self.tasks.get(uuid)
            if task is not None and not task.is_final and task.state not in (PENDING_CANCEL, PENDING_DELETE):
                self._cancel_all(task)
        self._check_job(job)

    def _check_job(self, job: Job) -> None:
        if job.state != JOB_TERMINATING:
            return
        if not self._open_tasks[job.uuid]:
            now = self._now()
            _set_state(job, JOB_COMPLETED, now)
            job.end_date = now
            self._changed("job", job.uuid)

    def delete_job(self, ident: str, force: bool) -> None:
        """Delete a job and its tasks; 403 if tasks still run and ``force`` is false."""
        with self.lock:
            job = self._job(ident)
            tasks = [self.tasks[u] for u in job.task_uuids if u in self.tasks]
            if not force and any(not t.is_final for t in tasks):
                raise Forbidden("The job still has running tasks: delete it with force=true.")
            _set_state(job, JOB_DELETING, self._now())
            self.jobs.pop(job.uuid, None)  # first: removing its tasks one by one need not update it
            for task in tasks:
                if task.is_final:
                    self._remove_task(task)
                else:
                    task.delete_requested = True
                    _set_state(task, PENDING_DELETE, self._now())
                    self._cancel_all(task)
            if self._shortnames["job"].get(job.shortname) == job.uuid:
                del self._shortnames["job"][job.shortname]
            self._changed("job", job.uuid, True)

    # ------------------------------------------------------------------ pools

    def create_pool(self, spec: PoolSpec) -> Pool:
        """POST /pools: the pool starts (Submitted → FullyExecuting) almost at once."""
        if self.storage is not None:
            for bucket in spec.resource_buckets:
                if not self.storage.bucket_exists(bucket.bucket_name):
                    raise NotFound(f"Bucket '{bucket.bucket_name}' not found.")
        with self.lock:
            if self.credits_exhausted:
                raise NotEnoughCredits()
            if spec.profile not in PROFILES:
                raise ValidationProblem.single("Profile", f"Profile '{spec.profile}' does not exist.")
            if spec.shortname is not None and spec.shortname in self._shortnames["pool"]:
                raise ValidationProblem.single("Shortname", f"Shortname '{spec.shortname}' is already used.")
            now = self._now()
            uuid = new_uuid()
            pool = Pool(uuid, self._next_seq(), spec, spec.shortname or uuid, now, state_time=now, last_modified=now)
            self.pools[uuid] = pool
            self._shortnames["pool"][pool.shortname] = uuid
            self._changed("pool", uuid)
            self.clock.call_later(0.05, lambda: self._start_pool(uuid))
            return pool

    def _start_pool(self, uuid: str) -> None:
        with self.lock:
            pool = self.pools.get(uuid)
            if pool is None or pool.state != SUBMITTED:
                return
            now = self._now()
            _set_state(pool, FULLY_DISPATCHED, now)
            _set_state(pool, FULLY_EXECUTING, now)
            self._changed("pool", uuid)
            for task in sorted(self.tasks.values(), key=lambda t: t.seq):
                if task.spec.pool_uuid == uuid and not task.dispatched:
                    self._try_start(task)

    def get_pool(self, ident: str) -> Pool:
        """A pool by uuid or shortname."""
        with self.lock:
            return self._pool(ident)

    def list_pools(self, tags: list[str] | None = None) -> list[Pool]:
        """Every pool, optionally filtered by any of ``tags``."""
        with self.lock:
            pools = sorted(self.pools.values(), key=lambda p: p.seq)
        if tags:
            wanted = set(tags)
            pools = [p for p in pools if wanted.intersection(p.spec.tags)]
        return pools

    def pool_tasks(self, pool: Pool) -> list[Task]:
        """Tasks running in (or queued for) a pool. Lock held by caller."""
        return [t for t in self.tasks.values() if t.spec.pool_uuid == pool.uuid]

    def close_pool(self, ident: str) -> None:
        """Close: cancel the pool's unfinished tasks, then Closed."""
        with self.lock:
            pool = self._pool(ident)
            if pool.state in (POOL_CLOSING, POOL_CLOSED, PENDING_DELETE):
                return
            _set_state(pool, POOL_CLOSING, self._now())
            self._changed("pool", pool.uuid)
            for task in self.pool_tasks(pool):
                if not task.is_final and task.state not in (PENDING_CANCEL, PENDING_DELETE):
                    self._cancel_all(task)
            self._check_pool(pool)

    def _check_pool(self, pool: Pool) -> None:
        if pool.state != POOL_CLOSING:
            return
        if not self._open_tasks[pool.uuid]:
            now = self._now()
            _set_state(pool, POOL_CLOSED, now)
            pool.end_date = now
            self._changed("pool", pool.uuid)

    def delete_pool(self, ident: str) -> None:
        """Close (if needed) and remove a pool."""
        with self.lock:
            pool = self._pool(ident)
            for task in self.pool_tasks(pool):
                if not task.is_final and task.state not in (PENDING_CANCEL, PENDING_DELETE):
                    self._cancel_all(task)
            self.pools.pop(pool.uuid, None)
            if self._shortnames["pool"].get(pool.shortname) == pool.uuid:
                del self._shortnames["pool"][pool.shortname]
            self._changed("pool", pool.uuid, True)

    def update_pool(self, ident: str, data: Any) -> None:
        """PUT/PATCH /pools/{uuid}: accept tags/labels/constants changes."""
        with self.lock:
            pool = self._pool(ident)
            body = Fields(data if isinstance(data, dict) else {}, {})
            if body.has("tags"):
                pool.spec.tags = body.str_list("tags")
            if body.has("labels"):
                pool.spec.labels = body.labels("labels")
            if body.has("constants"):
                pool.spec.constants = body.key_values("constants")
            if body.errors:
                raise ValidationProblem(body.errors)
            pool.last_modified = self._now()
            self._changed("pool", pool.uuid)

    # ------------------------------------------------------------------ listing

    def _collection(self, kind: str) -> tuple[list[Any], dict[str, FieldDef[Any]]]:
        if kind == "task":
            return sorted(self.tasks.values(), key=lambda t: t.seq), TASK_FIELDS
        if kind == "job":
            return sorted(self.jobs.values(), key=lambda j: j.seq), JOB_FIELDS
        return sorted(self.pools.values(), key=lambda p: p.seq), POOL_FIELDS

    def paginate(self, kind: str, request: PageRequest) -> Page:
        """One page; ``nextToken`` is an opaque id of a server-side cursor (creation order)."""
        size = min(request.maximum_results or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        with self.lock:
            items, fields = self._collection(kind)
            predicate = compile_filter(request.filter, fields)
            after = 0
            if request.token is not None:
                cursor = self._cursors.get(request.token)
                if cursor is None or cursor.kind != kind:
                    raise ValidationProblem.single("Token", "The pagination token is unknown or expired.")
                after = cursor.after_seq
            page: list[Any] = []
            truncated = False
            for item in items:
                if item.seq <= after or not predicate(item):
                    continue
                if len(page) == size:
                    truncated = True
                    break
                page.append(item)
            next_token: str | None = None
            if truncated:
                next_token = new_page_token()
                self._cursors[next_token] = PageCursor(kind, page[-1].seq)
                while len(self._cursors) > MAX_PAGE_TOKENS:
                    self._cursors.popitem(last=False)
            return Page(request.token, next_token, truncated, page)

    def search(self, kind: str, request: PageRequest) -> list[Any]:
        """Every match (optionally at most ``maximumResults``), not paginated."""
        with self.lock:
            items, fields = self._collection(kind)
            predicate = compile_filter(request.filter, fields)
            matches = [item for item in items if predicate(item)]
        if request.maximum_results is not None:
            matches = matches[: request.maximum_results]
        return matches

    # ------------------------------------------------------------------ account

    def user_info(self) -> dict[str, Any]:
        """Counters for GET /info."""
        bucket_count = 0
        if self.storage is not None:
            try:
                bucket_count = self.storage.bucket_count()
            except Exception:  # storage down: report 0 rather than failing /info
                bucket_count = 0
        with self.lock:
            running = [t for t in self.tasks.values() if not t.is_final]
            running_instances = sum(t.running_count() for t in self.tasks.values())
            return {
                "task_count": self.live_task_count(),
                "running_task_count": len(running),
                "running_instance_count": running_instances,
                "pool_count": len(self.pools),
                "running_pool_count": sum(1 for p in self.pools.values() if p.is_running),
                "bucket_count": bucket_count,
            }

    # ------------------------------------------------------------------ persistence and lifecycle

    def snapshot_state(self, kind: str, uuid: str) -> dict[str, Any] | None:
        """The persistable form of one object (None if it no longer exists). Lock held by caller."""
        if kind == "task":
            task = self.tasks.get(uuid)
            return task.to_dict() if task is not None else None
        if kind == "job":
            job = self.jobs.get(uuid)
            return job.to_dict() if job is not None else None
        pool = self.pools.get(uuid)
        return pool.to_dict() if pool is not None else None

    def restore(self, tasks: list[dict[str, Any]], jobs: list[dict[str, Any]], pools: list[dict[str, Any]]) -> None:
        """Load saved objects; unfinished instances of unfinished tasks will run again on :meth:`resume_all`."""
        with self.lock:
            for data in pools:
                pool = Pool.from_dict(data)
                self.pools[pool.uuid] = pool
                self._shortnames["pool"][pool.shortname] = pool.uuid
                self._seq = max(self._seq, pool.seq)
            for data in jobs:
                job = Job.from_dict(data)
                self.jobs[job.uuid] = job
                self._shortnames["job"][job.shortname] = job.uuid
                self._seq = max(self._seq, job.seq)
            for data in tasks:
                task = Task.from_dict(data)
                self.tasks[task.uuid] = task
                self._shortnames["task"][task.shortname] = task.uuid
                self._seq = max(self._seq, task.seq)
                if any(buffer.rehashed for buffer in task.buffers()):
                    self._changed("task", task.uuid)  # rewrite it without the raw tokens
            for task in self.tasks.values():
                if not task.is_final:
                    self._count_open(task, 1)
                    if task.deps_state == "waiting":
                        self._watch_dependencies(task)

    def resume_all(self) -> None:
        """After a restart: finish pending cancels/deletes, re-dispatch tasks that were not final."""
        with self.lock:
            now = self._now()
            for pool in list(self.pools.values()):
                if pool.state == SUBMITTED:
                    self.clock.call_later(0.05, functools.partial(self._start_pool, pool.uuid))
                elif pool.state == POOL_CLOSING:
                    self._check_pool(pool)
            for task in sorted(self.tasks.values(), key=lambda t: t.seq):
                if task.is_final:
                    if task.spec.auto_delete:
                        self._after_final(task)
                    continue
                task.dispatched = False
                task.simulated = self.config.mode == "simulate"
                for inst in task.unfinished():
                    if inst.phase == EXECUTING and inst.exec_start is not None:
                        inst.exec_seconds += max(0.0, now - inst.exec_start)
                    inst.phase = QUEUED
                if task.state in (PENDING_CANCEL, PENDING_DELETE):
                    self._cancel_all(task)
                    continue
                self._try_start(task)
                self._changed("task", task.uuid)

    def reset(self) -> None:
        """Forget every task, job and pool (running instances are cancelled first)."""
        with self.lock:
            for task in list(self.tasks.values()):
                if task.dispatched and not task.is_final and self.executor is not None:
                    self.executor.cancel(task)
            for kind, objects in (("task", self.tasks), ("job", self.jobs), ("pool", self.pools)):
                for uuid in list(objects):
                    self._changed(kind, uuid, True)
            self.tasks.clear()
            self.jobs.clear()
            self.pools.clear()
            for names in self._shortnames.values():
                names.clear()
            self._tombstones.clear()
            self._cursors.clear()
            self._waiters.clear()
            self._open_tasks.clear()
