"""HTTP handlers: parse the request, call the model, render the JSON exactly as the real API shapes it.

Every response body is built here (``render_*``), so the wire format lives in one place. Quirks kept on
purpose: ``ResultsCacheTTLSec`` with a capital R, ``0001-01-01T00:00:00Z`` for "no date", TimeSpan strings
for durations, ``status.executionTimeByCpuModel`` always a list.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from .exceptions import EmulatorError, NotFound, ValidationProblem
from .faults import FaultInjector, parse_fault_config
from .formats import NO_DATE, format_date, format_ranges, format_timespan
from .models import (
    CANCELLED,
    DONE,
    EXECUTING,
    FAILURE,
    FINAL_STATES,
    PROFILES,
    SUCCESS,
    UPLOADING,
    Backend,
    Job,
    Pool,
    Snapshot,
    Task,
)
from .validation import (
    DEFAULT_ELASTIC,
    Fields,
    parse_job,
    parse_json_body,
    parse_page_request,
    parse_pool,
    parse_task,
)

CPU_MODEL = "Emulated CPU"
HARDWARE_CONSTRAINTS: list[dict[str, Any]] = [
    {"discriminator": "MinimumCoreHardwareConstraint", "coreCount": 4},
    {"discriminator": "MinimumCoreHardwareConstraint", "coreCount": 16},
    {"discriminator": "MaximumCoreHardwareConstraint", "coreCount": 32},
    {"discriminator": "MinimumRamHardwareConstraint", "minimumMemoryMB": 16384},
    {"discriminator": "MinimumRamCoreRatioHardwareConstraint", "minimumMemoryGBCoreRatio": 4},
    {"discriminator": "CpuModelHardwareConstraint", "cpuModel": "AMD Ryzen 7 3700X"},
    {"discriminator": "CpuModelHardwareConstraint", "cpuModel": "Intel Xeon E5-2680"},
    {"discriminator": "GpuHardwareConstraint"},
    {"discriminator": "NoGpuHardwareConstraint"},
    {"discriminator": "SSDHardwareConstraint"},
    {"discriminator": "NoSSDHardwareConstraint"},
]


class RequestStats:
    """Counts requests per ``"METHOD /route-template"``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def record(self, key: str) -> None:
        """Count one request."""
        with self._lock:
            self.counts[key] += 1

    def snapshot(self) -> dict[str, int]:
        """A copy of the counters."""
        with self._lock:
            return dict(self.counts)

    def reset(self) -> None:
        """Zero the counters."""
        with self._lock:
            self.counts.clear()


@dataclass
class ServiceContext:
    """What the handlers share: the model, identity, storage address, faults and counters."""

    backend: Backend
    token: str
    email: str
    storage_url: str
    faults: FaultInjector = field(default_factory=FaultInjector)
    stats: RequestStats = field(default_factory=RequestStats)
    api_url: str = ""
    reset_hook: Any = None

    def stats_dict(self) -> dict[str, Any]:
        """The admin stats document."""
        counts = self.stats.snapshot()
        with self.backend.lock:
            by_state = Counter(t.state for t in self.backend.tasks.values())
        return {
            "requests": counts,
            "requests_total": sum(counts.values()),
            "faults_injected": self.faults.total_injected(),
            "faults": dict(self.faults.injected),
            "tasks": {"total": sum(by_state.values()), "by_state": dict(by_state)},
        }


# ---------------------------------------------------------------------------------------------- rendering


def _opt_date(value: float | None) -> str:
    return format_date(value) if value is not None else NO_DATE


def _pairs(pairs: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in pairs]


def _dependencies(task: Task, backend: Backend) -> dict[str, Any] | None:
    spec = task.spec
    if not spec.depends_on and not spec.advanced_depends_on:
        return None
    advanced = []
    for dep in spec.advanced_depends_on:
        other = backend.tasks.get(dep["taskUuid"])
        final = other.state if other is not None else backend._tombstones.get(dep["taskUuid"])
        wanted = dep["taskFinalStateCondition"]
        if final not in FINAL_STATES:
            state = "waiting"
        elif wanted is None or (final is not None and final.lower() in wanted):
            state = "dependencyConditionsFulfilled"
        else:
            state = "dependencyConditionsNotFulfilled"
        advanced.append(
            {
                "taskUuid": dep["taskUuid"],
                "taskFinalStateCondition": wanted,
                "state": state,
                "actualFinalState": final.lower() if final in FINAL_STATES and final is not None else None,
            }
        )
    return {"dependsOn": list(spec.depends_on), "advancedDependsOn": advanced, "state": task.deps_state}


def _status(task: Task, now: float) -> dict[str, Any]:
    instances = task.instances.values()
    exec_seconds = task.execution_seconds(now)
    wall = task.wall_seconds(now)
    done = [i for i in instances if i.phase == DONE]
    running = [i for i in instances if i.phase in (EXECUTING, UPLOADING)]
    stamp = format_date(now)
    per_running: list[dict[str, Any]] = [
        {
            "phase": "execution" if i.phase == EXECUTING else "upload",
            "instanceId": i.instance_id,
            "maxFrequencyGHz": 0.0,
            "currentFrequencyGHz": 0.0,
            "cpuUsage": 0.0,
            "maxMemoryMB": 0,
            "currentMemoryMB": 0,
            "memoryUsage": 0.0,
            "networkInKbps": 0,
            "networkOutKbps": 0,
            "progress": 0.0,
            "executionTimeSec": round(i.running_seconds(now), 3),
            "executionTimeGHz": 0.0,
            "cpuModel": CPU_MODEL,
            "coreCount": 1,
            "clockRatio": 1.0,
            "executionAttemptCount": i.attempts,
            "activeForwards": [],
            "vpnConnections": [],
        }
        for i in running
    ]
    by_cpu = [{"model": CPU_MODEL, "time": round(exec_seconds, 3), "core": 1}] if exec_seconds > 0 else []
    by_cpu_ghz = [{"model": CPU_MODEL, "timeGhz": 0.0, "clockRatio": 1.0, "core": 1}] if exec_seconds > 0 else []
    return {
        "timestamp": stamp,
        "lastUpdateTimestamp": format_date(task.last_modified),
        "downloadProgress": 100.0 if task.dispatched else 0.0,
        "executionProgress": task.progress(now),
        "uploadProgress": 100.0 if task.is_final else 0.0,
        "instanceCount": len(task.instances),
        "downloadTime": "00:00:00",
        "downloadTimeSec": 0,
        "environmentTime": "00:00:00",
        "environmentTimeSec": 0,
        "executionTime": format_timespan(exec_seconds),
        "executionTimeSec": round(exec_seconds, 3),
        "executionTimeByCpuModel": by_cpu,
        "executionTimeGhzByCpuModel": by_cpu_ghz,
        "uploadTime": "00:00:00",
        "uploadTimeSec": 0,
        "wallTime": format_timespan(wall),
        "wallTimeSec": round(wall, 3),
        "succeededRange": format_ranges({i.instance_id for i in done if i.state == SUCCESS}),
        "executedRange": format_ranges({i.instance_id for i in done if i.state in (SUCCESS, FAILURE)}),
        "failedRange": format_ranges({i.instance_id for i in done if i.state == FAILURE}),
        "startedOnceRange": format_ranges({i.instance_id for i in instances if i.first_start is not None}),
        "runningInstancesInfo": {
            "perRunningInstanceInfo": per_running,
            "snapshotResults": [],
            "timestamp": stamp,
            "averageFrequencyGHz": 0.0,
            "maxFrequencyGHz": 0.0,
            "minFrequencyGHz": 0.0,
            "averageMaxFrequencyGHz": 0.0,
            "averageCpuUsage": 0.0,
            "clusterPowerIndicator": 1.0,
            "averageMemoryUsage": 0.0,
            "averageNetworkInKbps": 0.0,
            "averageNetworkOutKbps": 0.0,
            "totalNetworkInKbps": 0.0,
            "totalNetworkOutKbps": 0.0,
            "runningCoreCountByCpuModel": (
                [{"model": CPU_MODEL, "core": len(running), "runningCoreCount": len(running)}] if running else []
            ),
        },
    }


def _completed_instances(task: Task) -> list[dict[str, Any]]:
    out = []
    for inst in sorted(task.instances.values(), key=lambda i: i.instance_id):
        if inst.phase != DONE or (inst.state == CANCELLED and inst.attempts == 0):
            continue
        wall = (inst.end or 0.0) - inst.first_start if inst.first_start is not None else 0.0
        out.append(
            {
                "instanceId": inst.instance_id,
                "state": inst.state,
                "wallTimeSec": round(max(0.0, wall), 3),
                "execTimeSec": round(inst.exec_seconds, 3),
                "execTimeSecGHz": 0.0,
                "peakMemoryMB": 0,
                "averageGHz": 0.0,
                "results": list(inst.results),
                "executionAttemptCount": inst.attempts,
                "error": inst.error,
                "cpuModel": CPU_MODEL,
                "coreCount": 1,
                "clockRatio": 1.0,
            }
        )
    return out


def render_task_summary(task: Task, now: float) -> dict[str, Any]:
    """A task summary, as ``/tasks/summaries`` lists them (no status, errors or buckets)."""
    spec = task.spec
    running = task.running_count()
    return {
        "uuid": task.uuid,
        "name": spec.name,
        "shortname": task.shortname,
        "profile": spec.profile,
        "poolUuid": spec.pool_uuid,
        "jobUuid": spec.job_uuid,
        "projectUuid": spec.project_uuid,
        "progress": task.progress(now),
        "runningInstanceCount": running,
        "runningCoreCount": running,
        "executionTime": format_timespan(task.execution_seconds(now)),
        "wallTime": format_timespan(task.wall_seconds(now)),
        "state": task.state,
        "previousState": task.previous_state,
        "instanceCount": len(task.instances),
        "maxRetriesPerInstance": (
            spec.max_per_instance_retries
            if spec.max_per_instance_retries is not None
            else (spec.max_retries_per_instance or 0)
        ),
        "advancedRanges": spec.advanced_ranges,
        "stateTransitionTime": format_date(task.state_time),
        "previousStateTransitionTime": _opt_date(task.previous_state_time),
        "lastModified": format_date(task.last_modified),
        "creationDate": format_date(task.creation),
        "endDate": _opt_date(task.end_date),
        "waitForPoolResourcesSynchronization": spec.wait_for_pool_resources_sync,
    }


def render_task(task: Task, now: float, backend: Backend) -> dict[str, Any]:
    """A full task, as ``GET /tasks/{uuid}`` returns it."""
    spec = task.spec
    data = render_task_summary(task, now)
    buckets = [b.to_json() for b in spec.resource_buckets]
    buckets += [
        {"bucketName": n, "filtering": {}, "resourcesTransformation": {}, "cacheTTLSec": None}
        for n in spec.legacy_resource_buckets
    ]
    data.update(
        {
            "maxTimeQueueSeconds": spec.max_time_queue_seconds,
            "uploadResultsOnCancellation": spec.upload_results_on_cancellation,
            "resourceBuckets": [b["bucketName"] for b in buckets],
            "advancedResourceBuckets": buckets,
            "resultBucket": spec.result_bucket,
            "ResultsCacheTTLSec": spec.results_cache_ttl_sec,
            "resultsBucketPrefix": spec.results_bucket_prefix,
            "errors": list(task.errors),
            "completedInstances": _completed_instances(task),
            "status": _status(task, now),
            "snapshotInterval": task.snapshot_interval,
            "resultsCount": len(task.result_keys),
            "constants": _pairs(spec.constants),
            "constraints": _pairs(spec.constraints),
            "forcedConstants": spec.forced_constants,
            "labels": dict(spec.labels),
            "tags": list(spec.tags),
            "secretsAccessRights": spec.secrets_access_rights or {"bySecret": [], "byPrefix": []},
            "dependencies": _dependencies(task, backend),
            "autoDeleteOnCompletion": spec.auto_delete,
            "completionTimeToLive": spec.completion_ttl,
            "privileges": spec.privileges,
            "retrySettings": {
                "maxTotalRetries": spec.max_total_retries,
                "maxPerInstanceRetries": spec.max_per_instance_retries,
            },
            "schedulingType": spec.scheduling_type or "Flex",
            "hardwareConstraints": spec.hardware_constraints,
            "defaultResourcesCacheTTLSec": spec.default_resources_cache_ttl_sec,
            "targetedReservedMachineKey": spec.targeted_reserved_machine_key,
            "targetedReservationName": spec.targeted_reservation_name,
            "forcedNetworkRules": spec.forced_network_rules,
            "snapshotWhitelist": spec.snapshot_whitelist,
            "snapshotBlacklist": spec.snapshot_blacklist,
            "snapshotBucket": spec.snapshot_bucket,
            "snapshotBucketPrefix": spec.snapshot_bucket_prefix,
            "resultsWhitelist": spec.results_whitelist,
            "resultsBlacklist": spec.results_blacklist,
            "priority": spec.priority or 0,
        }
    )
    return data


def render_job(job: Job) -> dict[str, Any]:
    """A job."""
    spec = job.spec
    return {
        "uuid": job.uuid,
        "name": spec.name,
        "shortname": job.shortname,
        "poolUuid": spec.pool_uuid,
        "projectUuid": spec.project_uuid,
        "state": job.state,
        "previousState": job.previous_state,
        "stateTransitionTime": format_date(job.state_time),
        "previousStateTransitionTime": _opt_date(job.previous_state_time),
        "creationDate": format_date(job.creation),
        "endDate": _opt_date(job.end_date),
        "lastModified": format_date(job.last_modified),
        "useDependencies": spec.use_dependencies,
        "maxWallTime": spec.max_wall_time or "00:00:00",
        "autoDeleteOnCompletion": spec.auto_delete,
        "completionTimeToLive": spec.completion_ttl,
        "tags": list(spec.tags),
    }


def render_pool_summary(pool: Pool, backend: Backend) -> dict[str, Any]:
    """A pool summary."""
    tasks = backend.pool_tasks(pool)
    running = sum(t.running_count() for t in tasks)
    return {
        "uuid": pool.uuid,
        "name": pool.spec.name,
        "shortname": pool.shortname,
        "profile": pool.spec.profile,
        "projectUuid": pool.spec.project_uuid,
        "state": pool.state,
        "previousState": pool.previous_state,
        "instanceCount": pool.spec.instance_count,
        "runningInstanceCount": running,
        "runningCoreCount": running,
        "executionTime": "00:00:00",
        "stateTransitionTime": format_date(pool.state_time),
        "previousStateTransitionTime": _opt_date(pool.previous_state_time),
        "lastModified": format_date(pool.last_modified),
        "creationDate": format_date(pool.creation),
        "endDate": _opt_date(pool.end_date),
    }


def render_pool(pool: Pool, backend: Backend, now: float) -> dict[str, Any]:
    """A full pool."""
    spec = pool.spec
    tasks = backend.pool_tasks(pool)
    queued_or_running = sum(len(t.unfinished()) for t in tasks if not t.is_final)
    slots = spec.slots()
    data = render_pool_summary(pool, backend)
    data.update(
        {
            "constants": _pairs(spec.constants),
            "constraints": _pairs(spec.constraints),
            "forcedConstants": spec.forced_constants,
            "tags": list(spec.tags),
            "labels": dict(spec.labels),
            "errors": [],
            "resourceBuckets": [b.bucket_name for b in spec.resource_buckets],
            "advancedResourceBuckets": [b.to_json() for b in spec.resource_buckets],
            "status": None,
            "preparationTask": spec.preparation_task,
            "elasticProperty": spec.elastic or dict(DEFAULT_ELASTIC),
            "taskDefaultWaitForPoolResourcesSynchronization": spec.task_wait_for_sync,
            "poolUsage": round(min(1.0, queued_or_running / slots), 4) if slots else 0.0,
            "totalSlotCapacity": slots,
            "queuedOrRunningTaskInstancesCount": queued_or_running,
            "autoDeleteOnCompletion": spec.auto_delete,
            "completionTimeToLive": spec.completion_ttl,
            "hardwareConstraints": spec.hardware_constraints,
            "defaultResourcesCacheTTLSec": spec.default_resources_cache_ttl_sec,
            "privileges": spec.privileges,
            "defaultRetrySettings": {
                "maxTotalRetries": spec.default_max_total_retries,
                "maxPerInstanceRetries": spec.default_max_per_instance_retries,
            },
            "schedulingType": spec.scheduling_type or "Flex",
            "forcedNetworkRules": spec.forced_network_rules,
            "maxTimeQueueSeconds": spec.max_time_queue_seconds,
            "secretsAccessRights": {"bySecret": [], "byPrefix": []},
            "timestamp": format_date(now),
        }
    )
    return data


def render_snapshot(snap: Snapshot) -> dict[str, Any]:
    """A snapshot status."""
    return {
        "id": snap.id,
        "taskUuid": snap.task_uuid,
        "triggerDate": format_date(snap.trigger),
        "lastUpdateDate": format_date(snap.last_update),
        "snapshotConfig": {
            "whitelist": snap.whitelist,
            "blacklist": snap.blacklist,
            "bucket": snap.bucket,
            "bucketPrefix": snap.bucket_prefix,
        },
        "status": snap.status,
        "sizeToUpload": snap.size_to_upload,
        "transferredSize": snap.transferred,
    }


def render_user_info(ctx: ServiceContext) -> dict[str, Any]:
    """GET /info."""
    counts = ctx.backend.user_info()
    config = ctx.backend.config
    max_tasks = config.max_tasks if config.max_tasks is not None else 1_000_000
    max_instances = 10_000
    running_instances = counts["running_instance_count"]
    quota = {
        "maxCores": config.cores,
        "runningCoresCount": running_instances,
        "maxInstances": max_instances,
        "runningInstancesCount": running_instances,
    }
    return {
        "email": ctx.email,
        "maxBucket": 1000,
        "bucketCount": counts["bucket_count"],
        "quotaBytesBucket": 100 * 1024**3,
        "usedQuotaBytesBucket": 0,
        "taskCount": counts["task_count"],
        "maxTask": max_tasks,
        "runningTaskCount": counts["running_task_count"],
        "maxRunningTask": max_tasks,
        "maxInstances": max_instances,
        "maxPool": 1000,
        "poolCount": counts["pool_count"],
        "maxRunningPool": 1000,
        "runningPoolCount": counts["running_pool_count"],
        "runningInstanceCount": running_instances,
        "runningCoreCount": running_instances,
        "maxFlexInstances": max_instances,
        "maxFlexCores": config.cores,
        "runningFlexInstanceCount": running_instances,
        "runningFlexCoreCount": running_instances,
        "maxOnDemandInstances": 0,
        "maxOnDemandCores": 0,
        "runningOnDemandInstanceCount": 0,
        "runningOnDemandCoreCount": 0,
        "computingQuotas": {
            "user": {
                "flex": quota,
                "onDemand": {"maxCores": 0, "runningCoresCount": 0, "maxInstances": 0, "runningInstancesCount": 0},
                "reserved": [],
            },
            "organization": None,
        },
        "projects": [],
    }


# ---------------------------------------------------------------------------------------------- helpers


def ctx_of(request: Request) -> ServiceContext:
    """The shared context stored on the app."""
    ctx: ServiceContext = request.app.state.ctx
    return ctx


def json_response(data: Any, status: int = 200) -> Response:
    """A compact JSON response; never ``NaN``/``Infinity`` (invalid JSON): such a value is a 500 instead."""
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    return Response(body, status_code=status, media_type="application/json")


def empty_ok() -> Response:
    """200 with an empty body (what the real API gives for actions)."""
    return Response(b"", status_code=200)


def error_response(exc: EmulatorError) -> Response:
    """Render an emulator error."""
    body = json.dumps(exc.body(), separators=(",", ":"), allow_nan=False).encode("utf-8")
    return Response(body, status_code=exc.status, media_type=exc.content_type, headers=exc.headers())


async def body_json(request: Request, *, allow_empty: bool = False) -> Any:
    """The parsed JSON body (400 when invalid)."""
    return parse_json_body(await request.body(), allow_empty=allow_empty)


def query_values(request: Request, name: str) -> list[str]:
    """All values of a (case-insensitive) query parameter, comma lists split: ``?tag=a&tag=b,c``."""
    values: list[str] = []
    for key, value in request.query_params.multi_items():
        if key.lower() == name:
            values.extend(v.strip() for v in value.split(",") if v.strip())
    return values


def query_value(request: Request, name: str) -> str | None:
    """One (case-insensitive) query parameter."""
    for key, value in request.query_params.multi_items():
        if key.lower() == name:
            return value
    return None


def _path(request: Request, name: str) -> str:
    value: str = request.path_params[name]
    return value


def _now() -> float:
    return time.time()


# ---------------------------------------------------------------------------------------------- settings


async def get_settings(request: Request) -> Response:
    """GET /settings → where the storage is."""
    return json_response({"storage": ctx_of(request).storage_url})


async def get_info(request: Request) -> Response:
    """GET /info → user info (its email is the S3 access key)."""
    ctx = ctx_of(request)
    return json_response(await run_in_threadpool(render_user_info, ctx))


async def get_versions(request: Request) -> Response:
    """GET /versions."""
    return json_response([{"version": "v1", "endOfLife": None}])


async def list_profiles(request: Request) -> Response:
    """GET /profiles → profile names."""
    return json_response(list(PROFILES))


async def get_profile(request: Request) -> Response:
    """GET /profiles/{name}."""
    name = _path(request, "name")
    if name not in PROFILES:
        raise NotFound(f"Profile '{name}' not found.")
    return json_response({"name": name, "constants": PROFILES[name]})


async def hardware_constraints(request: Request) -> Response:
    """GET /hardware-constraints?limit&offset."""
    try:
        limit = int(query_value(request, "limit") or 50)
        offset = int(query_value(request, "offset") or 0)
    except ValueError as exc:
        raise ValidationProblem.single("Limit", "limit and offset must be integers.") from exc
    if limit < 1 or offset < 0:
        raise ValidationProblem.single("Limit", "limit must be positive and offset not negative.")
    data = HARDWARE_CONSTRAINTS[offset : offset + limit]
    return json_response({"data": data, "offset": offset, "limit": limit, "total": len(HARDWARE_CONSTRAINTS)})


async def cpu_model_search(request: Request) -> Response:
    """GET /hardware-constraints/cpu-model-constraints/search?cpuModel=."""
    text = (query_value(request, "cpumodel") or "").lower()
    found = [c for c in HARDWARE_CONSTRAINTS if c.get("cpuModel") and text in str(c["cpuModel"]).lower()]
    return json_response(found)


async def computing_quotas(request: Request) -> Response:
    """GET /quotas/computing-quotas/user|organization."""
    info = await run_in_threadpool(render_user_info, ctx_of(request))
    if request.path_params.get("scope") == "organization":
        raise NotFound("The user belongs to no organization.")
    return json_response(info["computingQuotas"]["user"])


# ---------------------------------------------------------------------------------------------- tasks


def _submit_one(ctx: ServiceContext, data: Any) -> Task:
    return ctx.backend.submit_task(parse_task(data))


def _submit_many(ctx: ServiceContext, items: list[Any]) -> list[dict[str, Any]]:
    results = []
    for item in items:
        try:
            task = _submit_one(ctx, item)
            results.append({"statusCode": 200, "uuid": task.uuid, "message": "OK"})
        except EmulatorError as exc:
            results.append({"statusCode": exc.status, "uuid": None, "message": exc.message})
    return results


async def create_tasks(request: Request) -> Response:
    """POST /tasks: one task → ``{"uuid"}``; an array → per-item ``{"statusCode","uuid","message"}``."""
    ctx = ctx_of(request)
    data = await body_json(request)
    if isinstance(data, list):
        return json_response(await run_in_threadpool(_submit_many, ctx, data))
    task = await run_in_threadpool(_submit_one, ctx, data)
    return json_response({"uuid": task.uuid})


async def list_tasks(request: Request) -> Response:
    """GET /tasks[?tag=] → full tasks."""
    ctx = ctx_of(request)
    tasks = ctx.backend.list_tasks(query_values(request, "tag"))
    now = _now()
    with ctx.backend.lock:
        return json_response([render_task(t, now, ctx.backend) for t in tasks])


async def task_summaries(request: Request) -> Response:
    """GET /tasks/summaries[?tag=a&tag=b,c] (any of the tags)."""
    ctx = ctx_of(request)
    tasks = ctx.backend.list_tasks(query_values(request, "tag"))
    now = _now()
    with ctx.backend.lock:
        return json_response([render_task_summary(t, now) for t in tasks])


async def get_task(request: Request) -> Response:
    """GET /tasks/{uuid or shortname}."""
    ctx = ctx_of(request)
    with ctx.backend.lock:
        task = ctx.backend.get_task(_path(request, "uuid"))
        data = render_task(task, _now(), ctx.backend)
    return json_response(data)


async def update_task(request: Request) -> Response:
    """PUT /tasks/{uuid}: update mutable fields."""
    ctx = ctx_of(request)
    data = await body_json(request)
    ctx.backend.update_task(_path(request, "uuid"), data)
    return empty_ok()


async def patch_task(request: Request) -> Response:
    """PATCH /tasks/{uuid}: re-sync resources into the running instances."""
    ctx_of(request).backend.sync_resources(_path(request, "uuid"))
    return empty_ok()


async def delete_task(request: Request) -> Response:
    """DELETE /tasks/{uuid}: aborts first if running."""
    ctx_of(request).backend.delete_task(_path(request, "uuid"))
    return empty_ok()


async def abort_task(request: Request) -> Response:
    """POST /tasks/{uuid}/abort (403 on a finished task)."""
    ctx_of(request).backend.abort_task(_path(request, "uuid"))
    return empty_ok()


async def derive_task(request: Request) -> Response:
    """POST /tasks/{uuid}/retry|resume|recover|clone → ``{"uuid"}`` of the new task."""
    ctx = ctx_of(request)
    data = await body_json(request, allow_empty=True)
    kind = request.url.path.rstrip("/").rsplit("/", 1)[-1].lower()
    task = await run_in_threadpool(ctx.backend.derive_task, _path(request, "uuid"), kind, data)
    return json_response({"uuid": task.uuid})


def _output_endpoint(stream: str, fresh: bool) -> Any:
    async def endpoint(request: Request) -> Response:
        ctx = ctx_of(request)
        instance: int | None = None
        raw = request.path_params.get("instance")
        if raw is not None:
            try:
                instance = int(raw)
            except ValueError as exc:
                raise NotFound(f"Instance '{raw}' not found.") from exc
        reader = request.headers.get("authorization", "")
        text = ctx.backend.read_output(_path(request, "uuid"), stream, instance, fresh, reader)
        return PlainTextResponse(text)

    endpoint.__doc__ = f"{'POST' if fresh else 'GET'} /tasks/{{uuid}}/{stream}[/{{instance}}]"
    return endpoint


get_stdout = _output_endpoint("stdout", False)
fresh_stdout = _output_endpoint("stdout", True)
get_stderr = _output_endpoint("stderr", False)
fresh_stderr = _output_endpoint("stderr", True)


def _snapshot_config(data: Any, *, periodic: bool) -> tuple[dict[str, str | None], int | None]:
    """The snapshot configuration, and (``periodic``) its required positive ``interval`` in seconds."""
    if data is None:
        return {}, None
    if not isinstance(data, dict):
        raise ValidationProblem.single("$", "The snapshot configuration must be an object.")
    errors: dict[str, list[str]] = {}
    body = Fields(data, errors)
    config = {key: body.text(key) for key in ("whitelist", "blacklist", "bucket", "bucketPrefix")}
    interval = body.integer("interval", minimum=1) if periodic else None
    if periodic and interval is None and not errors:
        body.error("interval", "The interval field is required (a positive number of seconds).")
    if errors:
        raise ValidationProblem(errors)
    return config, interval


async def instant_snapshot(request: Request) -> Response:
    """POST /tasks/{uuid}/snapshot → ``{"id"}``."""
    ctx = ctx_of(request)
    config, _interval = _snapshot_config(await body_json(request, allow_empty=True), periodic=False)
    snap = ctx.backend.snapshot(_path(request, "uuid"), config)
    return json_response({"id": snap.id if snap is not None else None})


async def periodic_snapshot(request: Request) -> Response:
    """POST /tasks/{uuid}/snapshot/periodic ``{"interval": seconds, ...}``."""
    ctx = ctx_of(request)
    config, interval = _snapshot_config(await body_json(request), periodic=True)
    ctx.backend.snapshot(_path(request, "uuid"), config, interval)
    return empty_ok()


async def get_snapshot(request: Request) -> Response:
    """GET /tasks/{uuid}/snapshot/{id}."""
    ctx = ctx_of(request)
    with ctx.backend.lock:
        snap = ctx.backend.get_snapshot(_path(request, "uuid"), _path(request, "snapshot"))
        return json_response(render_snapshot(snap))


def _carbon_facts(request: Request) -> Response:
    """Carbon facts in the API's snake_case shape, all zeros: nothing is metered here."""
    return json_response(
        {
            "total_consumed_energy_Wh": 0.0,
            "total_energy_it_Wh": 0.0,
            "total_reused_energy_Wh": 0.0,
            "qarnot_carbon_footprint": 0.0,
            "equivalent_datacenter_name": query_value(request, "comparisondatacenter") or "emulator",
            "equivalent_DC_carbon_footprint": 0.0,
            "saved_carbon_footprint_compute": 0.0,
            "saved_carbon_footprint_heat": 0.0,
            "saved_carbon_footprint_compute_heat": 0.0,
            "saved_carbon_footprint_percent": 0.0,
            "PUE": 1.0,
            "ERE": 1.0,
            "ERF": 0.0,
            "WUE": 0.0,
        }
    )


async def task_carbon_facts(request: Request) -> Response:
    """GET /carbon/v1/tasks/{uuid}/carbon-facts."""
    ctx_of(request).backend.get_task(_path(request, "uuid"))
    return _carbon_facts(request)


async def pool_carbon_facts(request: Request) -> Response:
    """GET /carbon/v1/pools/{uuid}/carbon-facts."""
    ctx = ctx_of(request)
    with ctx.backend.lock:
        ctx.backend.get_pool(_path(request, "uuid"))
    return _carbon_facts(request)


async def task_credits(request: Request) -> Response:
    """GET /credits/v1/tasks/{uuid}/credits (always 0)."""
    ctx_of(request).backend.get_task(_path(request, "uuid"))
    return json_response({"credits": 0.0})


async def pool_credits(request: Request) -> Response:
    """GET /credits/v1/pools/{uuid}/credits (always 0)."""
    ctx = ctx_of(request)
    with ctx.backend.lock:
        ctx.backend.get_pool(_path(request, "uuid"))
    return json_response({"credits": 0.0})


#: The balance `GET /credits/v1/accounts/credits` reports while credits are not exhausted (euros; notional).
ACCOUNT_CREDITS = 1000.0


async def account_credits(request: Request) -> Response:
    """GET /credits/v1/accounts/credits: a notional balance, 0 once `--credits-exhausted` is on."""
    ctx = ctx_of(request)
    return json_response({"credits": 0.0 if ctx.backend.credits_exhausted else ACCOUNT_CREDITS})


# ---------------------------------------------------------------------------------------------- paging


def _page_endpoint(kind: str, summary: bool) -> Any:
    async def endpoint(request: Request) -> Response:
        ctx = ctx_of(request)
        page = ctx.backend.paginate(kind, parse_page_request(await body_json(request, allow_empty=True)))
        now = _now()
        with ctx.backend.lock:
            data = [_render(kind, item, summary, now, ctx.backend) for item in page.items]
        return json_response(
            {"token": page.token, "nextToken": page.next_token, "isTruncated": page.is_truncated, "data": data}
        )

    endpoint.__doc__ = f"POST /{kind}s{'/summaries' if summary else ''}/paginate"
    return endpoint


def _search_endpoint(kind: str) -> Any:
    async def endpoint(request: Request) -> Response:
        ctx = ctx_of(request)
        page_request = parse_page_request(await body_json(request, allow_empty=True))
        items = ctx.backend.search(kind, page_request)
        now = _now()
        with ctx.backend.lock:
            data = [_render(kind, item, False, now, ctx.backend) for item in items]
        if page_request.select:
            wanted = {s.lower() for s in page_request.select}
            data = [{k: v for k, v in item.items() if k.lower() in wanted} for item in data]
        return json_response(data)

    endpoint.__doc__ = f"POST /{kind}s/search"
    return endpoint


def _render(kind: str, item: Any, summary: bool, now: float, backend: Backend) -> dict[str, Any]:
    if kind == "task":
        return render_task_summary(item, now) if summary else render_task(item, now, backend)
    if kind == "job":
        return render_job(item)
    return render_pool_summary(item, backend) if summary else render_pool(item, backend, now)


paginate_tasks = _page_endpoint("task", False)
paginate_task_summaries = _page_endpoint("task", True)
search_tasks = _search_endpoint("task")
paginate_jobs = _page_endpoint("job", False)
search_jobs = _search_endpoint("job")
paginate_pools = _page_endpoint("pool", False)
paginate_pool_summaries = _page_endpoint("pool", True)
search_pools = _search_endpoint("pool")


# ---------------------------------------------------------------------------------------------- jobs


async def create_job(request: Request) -> Response:
    """POST /jobs → ``{"uuid"}``."""
    ctx = ctx_of(request)
    job = ctx.backend.create_job(parse_job(await body_json(request)))
    return json_response({"uuid": job.uuid})


async def list_jobs(request: Request) -> Response:
    """GET /jobs[?tag=]."""
    ctx = ctx_of(request)
    jobs = ctx.backend.list_jobs(query_values(request, "tag"))
    with ctx.backend.lock:
        return json_response([render_job(j) for j in jobs])


async def get_job(request: Request) -> Response:
    """GET /jobs/{uuid}."""
    ctx = ctx_of(request)
    with ctx.backend.lock:
        return json_response(render_job(ctx.backend.get_job(_path(request, "uuid"))))


async def job_tasks(request: Request) -> Response:
    """GET /jobs/{uuid}/tasks → task summaries."""
    ctx = ctx_of(request)
    now = _now()
    with ctx.backend.lock:
        tasks = ctx.backend.job_tasks(_path(request, "uuid"))
        return json_response([render_task_summary(t, now) for t in tasks])


async def terminate_job(request: Request) -> Response:
    """POST /jobs/{uuid}/terminate."""
    ctx_of(request).backend.terminate_job(_path(request, "uuid"))
    return empty_ok()


async def delete_job(request: Request) -> Response:
    """DELETE /jobs/{uuid}?force=True|False."""
    force = (query_value(request, "force") or "false").strip().lower() in ("true", "1", "yes")
    ctx_of(request).backend.delete_job(_path(request, "uuid"), force)
    return empty_ok()


# ---------------------------------------------------------------------------------------------- pools


async def create_pool(request: Request) -> Response:
    """POST /pools → ``{"uuid"}``."""
    ctx = ctx_of(request)
    spec = parse_pool(await body_json(request))
    pool = await run_in_threadpool(ctx.backend.create_pool, spec)
    return json_response({"uuid": pool.uuid})


async def list_pools(request: Request) -> Response:
    """GET /pools[?tag=]."""
    ctx = ctx_of(request)
    pools = ctx.backend.list_pools(query_values(request, "tag"))
    now = _now()
    with ctx.backend.lock:
        return json_response([render_pool(p, ctx.backend, now) for p in pools])


async def pool_summaries(request: Request) -> Response:
    """GET /pools/summaries[?tag=]."""
    ctx = ctx_of(request)
    pools = ctx.backend.list_pools(query_values(request, "tag"))
    with ctx.backend.lock:
        return json_response([render_pool_summary(p, ctx.backend) for p in pools])


async def get_pool(request: Request) -> Response:
    """GET /pools/{uuid}."""
    ctx = ctx_of(request)
    with ctx.backend.lock:
        pool = ctx.backend.get_pool(_path(request, "uuid"))
        return json_response(render_pool(pool, ctx.backend, _now()))


async def update_pool(request: Request) -> Response:
    """PUT/PATCH /pools/{uuid}."""
    ctx = ctx_of(request)
    data = await body_json(request, allow_empty=True)
    ctx.backend.update_pool(_path(request, "uuid"), data)
    return empty_ok()


async def close_pool(request: Request) -> Response:
    """POST /pools/{uuid}/close."""
    ctx_of(request).backend.close_pool(_path(request, "uuid"))
    return empty_ok()


async def delete_pool(request: Request) -> Response:
    """DELETE /pools/{uuid}."""
    ctx_of(request).backend.delete_pool(_path(request, "uuid"))
    return empty_ok()


async def pool_output(request: Request) -> Response:
    """GET|POST /pools/{uuid}/stdout|stderr[/{instance}]: the pool itself prints nothing here."""
    ctx = ctx_of(request)
    with ctx.backend.lock:
        pool = ctx.backend.get_pool(_path(request, "uuid"))
        raw = request.path_params.get("instance")
        if raw is not None:
            try:
                instance = int(raw)
            except ValueError as exc:
                raise NotFound(f"Instance '{raw}' not found.") from exc
            if not 0 <= instance < max(1, pool.spec.slots()):
                raise NotFound(f"Instance {instance} of pool '{pool.uuid}' not found.")
        stream = pool.stdout if "/stdout" in request.url.path else pool.stderr
        fresh = request.method == "POST"
        text = stream.read_fresh(request.headers.get("authorization", "")) if fresh else stream.read_all()
    return PlainTextResponse(text)


# ---------------------------------------------------------------------------------------------- admin


def fault_document(ctx: ServiceContext) -> dict[str, Any]:
    """The admin view of the fault configuration."""
    return {
        "seed": ctx.faults.seed,
        "rules": [r.to_dict() for r in ctx.faults.rules],
        "credits_exhausted": ctx.backend.credits_exhausted,
    }


async def admin_get_faults(request: Request) -> Response:
    """GET /_emulator/faults."""
    return json_response(fault_document(ctx_of(request)))


async def admin_put_faults(request: Request) -> Response:
    """PUT /_emulator/faults ``{"seed", "rules": [...], "credits_exhausted"}`` (replaces the rules)."""
    ctx = ctx_of(request)
    rules, seed, credits = parse_fault_config(await body_json(request))
    ctx.faults.set_rules(rules, seed)
    if credits is not None:
        ctx.backend.credits_exhausted = credits
    return json_response(fault_document(ctx))


async def admin_delete_faults(request: Request) -> Response:
    """DELETE /_emulator/faults: no more rules (credits flag unchanged)."""
    ctx = ctx_of(request)
    ctx.faults.clear()
    return json_response(fault_document(ctx))


async def admin_stats(request: Request) -> Response:
    """GET /_emulator/stats."""
    return json_response(ctx_of(request).stats_dict())


async def admin_reset(request: Request) -> Response:
    """POST /_emulator/reset ``{"storage": false}``: forget tasks, jobs, pools, faults and counters."""
    ctx = ctx_of(request)
    data = await body_json(request, allow_empty=True)
    storage = bool(isinstance(data, dict) and data.get("storage"))
    await run_in_threadpool(_reset, ctx, storage)
    return json_response({"reset": True, "storage": storage})


def _reset(ctx: ServiceContext, storage: bool) -> None:
    ctx.backend.reset()
    ctx.backend.credits_exhausted = False
    ctx.faults.clear()
    ctx.faults.reset_counts()
    ctx.stats.reset()
    if storage and ctx.reset_hook is not None:
        ctx.reset_hook()
