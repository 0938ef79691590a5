"""Request-body parsing: JSON with case-insensitive keys into typed specs, or a 400 ProblemDetails.

The real API (ASP.NET) binds property names case-insensitively, so ``Name``, ``name`` and ``NAME``
are the same key at every nesting level. Anything of the wrong type is a validation error, never a 500.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from .exceptions import ValidationProblem
from .formats import MAX_INSTANCES, parse_ranges, parse_timespan

#: Deepest nesting accepted in a request body (ASP.NET's default ``MaxDepth``).
MAX_JSON_DEPTH = 64
#: Integer fields are .NET ``int``: anything outside this range is a validation error, not an overflow later.
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
_SURROGATE_RE = re.compile("[\ud800-\udfff]")

SCHEDULING_TYPES = {"flex": "Flex", "ondemand": "OnDemand", "reserved": "Reserved"}
SHORTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
FINAL_CONDITIONS = {"success": "success", "failure": "failure", "cancelled": "cancelled"}
#: The ``privileges`` object, with the API's default.
DEFAULT_PRIVILEGES: dict[str, Any] = {"exportApiAndStorageCredentialsInEnvironment": False}
#: A pool's ``elasticProperty``, with the API's defaults (what a non-elastic pool shows).
DEFAULT_ELASTIC: dict[str, Any] = {
    "isElastic": False,
    "minTotalSlots": 0,
    "maxTotalSlots": 0,
    "minIdleSlots": 0,
    "resizePeriod": 90,
    "rampResizeFactor": 0.1,
    "minIdleTimeSeconds": 90,
}


def parse_json_body(raw: bytes, *, allow_empty: bool = False) -> Any:
    """Decode a request body into a value the emulator can store and render back, or raise a 400.

    Refused: an empty required body, invalid UTF-8 or JSON, NaN/Infinity and numbers out of float range
    (``1e400``), lone UTF-16 surrogates (``"\\ud800"``: they cannot be encoded back to UTF-8), and nesting
    deeper than :data:`MAX_JSON_DEPTH`.
    """
    if not raw.strip():
        if allow_empty:
            return None
        raise ValidationProblem.single("$", "A non-empty request body is required.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationProblem.single("$", f"The request body is not valid UTF-8: {exc.reason}.") from exc

    def reject_constant(name: str) -> Any:
        raise ValueError(f"invalid JSON literal {name}")

    try:
        value = json.loads(text, parse_constant=reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise ValidationProblem.single("$", f"The JSON value could not be parsed: {exc}.") from exc
    problem = _unrepresentable(value)
    if problem is not None:
        raise ValidationProblem.single("$", problem)
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text} is out of range")
    return value


def _unrepresentable(value: Any) -> str | None:
    """Why a decoded JSON value would break storage or rendering (too deep, lone surrogate), or None."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _SURROGATE_RE.search(item):
                return "The JSON value contains an unpaired UTF-16 surrogate."
        elif isinstance(item, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                return f"The JSON value is nested deeper than {MAX_JSON_DEPTH} levels."
            if isinstance(item, dict):
                stack.extend((key, depth) for key in item)
                stack.extend((child, depth + 1) for child in item.values())
            else:
                stack.extend((child, depth + 1) for child in item)
    return None


def camel_keys(value: Any) -> Any:
    """Copy a JSON value with every object key's first letter lower-cased (for echoed passthrough data)."""
    if isinstance(value, dict):
        return {(k[:1].lower() + k[1:] if isinstance(k, str) else k): camel_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [camel_keys(v) for v in value]
    return value


class Fields:
    """Case-insensitive, type-checking reader over one JSON object; collects errors under a path."""

    def __init__(self, data: Any, errors: dict[str, list[str]], path: str = "") -> None:
        self.errors = errors
        self.path = path
        self.ok = isinstance(data, dict)
        self._map: dict[str, tuple[str, Any]] = {}
        if isinstance(data, dict):
            for key, value in data.items():
                self._map[str(key).lower()] = (str(key), value)
        elif data is not None:
            self.error("", "The value must be a JSON object.")

    def _name(self, key: str) -> str:
        name = key[:1].upper() + key[1:]
        return f"{self.path}.{name}" if self.path else name

    def error(self, key: str, message: str) -> None:
        """Record a validation message for ``key`` (empty key = this object)."""
        name = self._name(key) if key else (self.path or "$")
        self.errors.setdefault(name, []).append(message)

    def has(self, key: str) -> bool:
        """Is the key present (with any value, null included)?"""
        return key.lower() in self._map

    def raw(self, key: str) -> Any:
        """The raw value, or None when absent."""
        entry = self._map.get(key.lower())
        return None if entry is None else entry[1]

    def text(self, key: str, *, required: bool = False, allow_empty: bool = True) -> str | None:
        """A string (or null)."""
        value = self.raw(key)
        if value is None:
            if required:
                self.error(key, f"The {key} field is required.")
            return None
        if not isinstance(value, str):
            self.error(key, f"The {key} field must be a string.")
            return None
        if required and not allow_empty and not value.strip():
            self.error(key, f"The {key} field is required.")
            return None
        return value

    def integer(self, key: str, *, minimum: int | None = None, maximum: int | None = None) -> int | None:
        """A 32-bit integer (or null); floats with no fraction are accepted, booleans are not."""
        value = self.raw(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.error(key, f"The {key} field must be an integer.")
            return None
        if isinstance(value, float):
            if not math.isfinite(value) or not value.is_integer():
                self.error(key, f"The {key} field must be an integer.")
                return None
            value = int(value)
        if not INT32_MIN <= value <= INT32_MAX:
            self.error(key, f"The {key} field must be a 32-bit integer ({INT32_MIN} to {INT32_MAX}).")
            return None
        if minimum is not None and value < minimum:
            self.error(key, f"The {key} field must be at least {minimum}.")
            return None
        if maximum is not None and value > maximum:
            self.error(key, f"The {key} field must be at most {maximum}.")
            return None
        return value

    def number(self, key: str, *, minimum: float | None = None) -> float | None:
        """A finite number (or null); booleans are not numbers."""
        value = self.raw(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.error(key, f"The {key} field must be a number.")
            return None
        if minimum is not None and value < minimum:
            self.error(key, f"The {key} field must be at least {minimum}.")
            return None
        return float(value)

    def boolean(self, key: str) -> bool | None:
        """A boolean (or null)."""
        value = self.raw(key)
        if value is None:
            return None
        if not isinstance(value, bool):
            self.error(key, f"The {key} field must be a boolean.")
            return None
        return value

    def obj(self, key: str) -> Fields | None:
        """A nested object reader (None when absent/null)."""
        value = self.raw(key)
        if value is None:
            return None
        nested = Fields(value, self.errors, self._name(key))
        return nested if nested.ok else None

    def array(self, key: str) -> list[Any] | None:
        """A JSON array (or null)."""
        value = self.raw(key)
        if value is None:
            return None
        if not isinstance(value, list):
            self.error(key, f"The {key} field must be an array.")
            return None
        return value

    def str_list(self, key: str) -> list[str]:
        """An array of strings; null/absent gives an empty list."""
        items = self.array(key)
        if items is None:
            return []
        out: list[str] = []
        for item in items:
            if not isinstance(item, str):
                self.error(key, f"The {key} field must be an array of strings.")
                return []
            out.append(item)
        return out

    def obj_list(self, key: str) -> list[Any]:
        """An array of objects kept as plain JSON with camelCase keys; null/absent gives []."""
        items = self.array(key)
        if items is None:
            return []
        if not all(isinstance(item, dict) for item in items):
            self.error(key, f"The {key} field must be an array of objects.")
            return []
        return [camel_keys(item) for item in items]

    def passthrough_obj(self, key: str) -> dict[str, Any] | None:
        """An object kept as plain JSON with camelCase keys."""
        value = self.raw(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.error(key, f"The {key} field must be an object.")
            return None
        result: dict[str, Any] = camel_keys(value)
        return result

    def regex(self, key: str) -> str | None:
        """A string that must compile as a regular expression."""
        value = self.text(key)
        if value is not None:
            try:
                re.compile(value)
            except (re.error, RecursionError, OverflowError) as exc:
                self.error(key, f"The {key} field is not a valid regular expression: {exc}.")
                return None
        return value

    def timespan(self, key: str) -> str | None:
        """A .NET TimeSpan string."""
        value = self.text(key)
        if value is not None:
            try:
                parse_timespan(value)
            except (ValueError, OverflowError):
                self.error(key, f"The {key} field must be a TimeSpan like 'd.hh:mm:ss' (at most TimeSpan.MaxValue).")
                return None
        return value

    def key_values(self, key: str) -> list[tuple[str, str]]:
        """``[{"key": k, "value": v}]`` pairs (task constants/constraints); scalars become strings."""
        items = self.array(key)
        pairs: list[tuple[str, str]] = []
        for index, item in enumerate(items or []):
            entry = Fields(item, self.errors, f"{self._name(key)}[{index}]")
            if not entry.ok:
                return []
            name = entry.raw("key")
            value = entry.raw("value")
            if not isinstance(name, str) or not name:
                entry.error("key", "The key field is required and must be a string.")
                return []
            if value is None:
                value = ""
            elif isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, (int, float)):
                value = str(value)
            elif not isinstance(value, str):
                entry.error("value", "The value field must be a string.")
                return []
            pairs.append((name, value))
        return pairs

    def labels(self, key: str) -> dict[str, str]:
        """A string-to-string map."""
        value = self.raw(key)
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(v, (str, int, float)) for v in value.values()):
            self.error(key, f"The {key} field must be an object of strings.")
            return {}
        return {str(k): (v if isinstance(v, str) else json.dumps(v)) for k, v in value.items()}


@dataclass
class ResourceBucketSpec:
    """One ``advancedResourceBuckets`` entry (legacy ``resourceBuckets`` names become plain entries)."""

    bucket_name: str
    prefix: str | None = None
    strip_prefix: str | None = None
    cache_ttl_sec: int | None = None

    def to_json(self) -> dict[str, Any]:
        """Render as the API echoes it."""
        return {
            "bucketName": self.bucket_name,
            "filtering": {"prefixFiltering": {"prefix": self.prefix}} if self.prefix is not None else {},
            "resourcesTransformation": (
                {"stripPrefix": {"prefix": self.strip_prefix}} if self.strip_prefix is not None else {}
            ),
            "cacheTTLSec": self.cache_ttl_sec,
        }


@dataclass
class TaskSpec:
    """Everything a client may say about a task when submitting it (validated, normalised)."""

    name: str
    profile: str | None = None
    pool_uuid: str | None = None
    job_uuid: str | None = None
    project_uuid: str | None = None
    shortname: str | None = None
    instance_count: int | None = None
    advanced_ranges: str | None = None
    instance_ids: list[int] = field(default_factory=list)
    constants: list[tuple[str, str]] = field(default_factory=list)
    constraints: list[tuple[str, str]] = field(default_factory=list)
    forced_constants: list[Any] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    depends_on: list[str] = field(default_factory=list)
    advanced_depends_on: list[dict[str, Any]] = field(default_factory=list)
    resource_buckets: list[ResourceBucketSpec] = field(default_factory=list)
    legacy_resource_buckets: list[str] = field(default_factory=list)
    result_bucket: str | None = None
    results_cache_ttl_sec: int | None = None
    results_bucket_prefix: str | None = None
    snapshot_whitelist: str | None = None
    snapshot_blacklist: str | None = None
    snapshot_bucket: str | None = None
    snapshot_bucket_prefix: str | None = None
    results_whitelist: str | None = None
    results_blacklist: str | None = None
    auto_delete: bool = False
    completion_ttl: str = "00:00:00"
    hardware_constraints: list[Any] = field(default_factory=list)
    default_resources_cache_ttl_sec: int | None = None
    privileges: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_PRIVILEGES))
    max_total_retries: int | None = None
    max_per_instance_retries: int | None = None
    max_retries_per_instance: int | None = None
    scheduling_type: str | None = None
    targeted_reserved_machine_key: str | None = None
    targeted_reservation_name: str | None = None
    forced_network_rules: list[Any] = field(default_factory=list)
    secrets_access_rights: dict[str, Any] | None = None
    max_time_queue_seconds: int | None = None
    wait_for_pool_resources_sync: bool | None = None
    upload_results_on_cancellation: bool | None = None
    priority: int | None = None
    snapshot_interval: int | None = None

    def constant(self, key: str) -> str | None:
        """The value of a task constant, or None."""
        for name, value in self.constants:
            if name == key:
                return value
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for persistence."""
        data = dict(self.__dict__)
        data["resource_buckets"] = [dict(b.__dict__) for b in self.resource_buckets]
        data["constants"] = [list(p) for p in self.constants]
        data["constraints"] = [list(p) for p in self.constraints]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskSpec:
        """Rebuild a spec saved with :meth:`to_dict`."""
        values = dict(data)
        values["resource_buckets"] = [ResourceBucketSpec(**b) for b in values.get("resource_buckets", [])]
        values["constants"] = [(str(k), str(v)) for k, v in values.get("constants", [])]
        values["constraints"] = [(str(k), str(v)) for k, v in values.get("constraints", [])]
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})


def _resource_buckets(body: Fields) -> list[ResourceBucketSpec]:
    out: list[ResourceBucketSpec] = []
    for index, item in enumerate(body.array("advancedResourceBuckets") or []):
        entry = Fields(item, body.errors, f"AdvancedResourceBuckets[{index}]")
        if not entry.ok:
            continue
        name = entry.text("bucketName", required=True, allow_empty=False)
        prefix: str | None = None
        strip: str | None = None
        filtering = entry.obj("filtering")
        if filtering is not None:
            prefix_filter = filtering.obj("prefixFiltering")
            if prefix_filter is not None:
                prefix = prefix_filter.text("prefix")
        transformation = entry.obj("resourcesTransformation")
        if transformation is not None:
            strip_obj = transformation.obj("stripPrefix")
            if strip_obj is not None:
                strip = strip_obj.text("prefix")
        ttl = entry.integer("cacheTTLSec", minimum=0)
        if name is not None:
            out.append(ResourceBucketSpec(name, prefix, strip, ttl))
    return out


def _privileges(body: Fields) -> dict[str, Any] | None:
    """``privileges`` read case-insensitively into its canonical camelCase form (None when absent)."""
    entry = body.obj("privileges")
    if entry is None:
        return None
    export = entry.boolean("exportApiAndStorageCredentialsInEnvironment")
    return {"exportApiAndStorageCredentialsInEnvironment": bool(export)}


def _elastic(body: Fields) -> dict[str, Any] | None:
    """``elasticProperty`` read case-insensitively, missing members taking the API's defaults."""
    entry = body.obj("elasticProperty")
    if entry is None:
        return None
    elastic = dict(DEFAULT_ELASTIC)
    for name, default in DEFAULT_ELASTIC.items():
        value: Any
        if isinstance(default, bool):
            value = entry.boolean(name)
        elif isinstance(default, int):
            value = entry.integer(name, minimum=0)
        else:
            value = entry.number(name, minimum=0)
        if value is not None:
            elastic[name] = value
    return elastic


def _secrets_access(body: Fields) -> dict[str, Any] | None:
    """``secretsAccessRights`` (``{"bySecret": [{"key"}], "byPrefix": [{"prefix"}]}``) read case-insensitively."""
    entry = body.obj("secretsAccessRights")
    if entry is None:
        return None
    rights: dict[str, Any] = {}
    for name, member in (("bySecret", "key"), ("byPrefix", "prefix")):
        rights[name] = []
        for index, item in enumerate(entry.array(name) or []):
            grant = Fields(item, body.errors, f"{entry._name(name)}[{index}]")
            value = grant.text(member, required=True, allow_empty=False) if grant.ok else None
            if value is not None:
                rights[name].append({member: value})
    return rights


def _dependencies(body: Fields, spec: TaskSpec) -> None:
    deps = body.obj("dependencies")
    if deps is None:
        return
    spec.depends_on = deps.str_list("dependsOn")
    for index, item in enumerate(deps.array("advancedDependsOn") or []):
        entry = Fields(item, body.errors, f"Dependencies.AdvancedDependsOn[{index}]")
        if not entry.ok:
            continue
        task_uuid = entry.text("taskUuid", required=True, allow_empty=False)
        conditions_raw = entry.raw("taskFinalStateCondition")
        conditions: list[str] | None = None
        if conditions_raw is not None:
            if not isinstance(conditions_raw, list) or not all(
                isinstance(c, str) and c.lower() in FINAL_CONDITIONS for c in conditions_raw
            ):
                entry.error("taskFinalStateCondition", "Conditions must be 'success', 'failure' or 'cancelled'.")
                continue
            conditions = [FINAL_CONDITIONS[c.lower()] for c in conditions_raw]
        if task_uuid is not None:
            spec.advanced_depends_on.append({"taskUuid": task_uuid, "taskFinalStateCondition": conditions})


def _instances(body: Fields, spec: TaskSpec) -> None:
    count = body.integer("instanceCount")
    ranges = body.text("advancedRanges")
    has_count = count is not None and count != 0
    has_ranges = ranges is not None and ranges.strip() != ""
    if count is not None and count < 0:
        body.error("instanceCount", "The instanceCount field must be at least 1.")
    elif has_count and has_ranges:
        body.error("instanceCount", "instanceCount and advancedRanges are mutually exclusive.")
    elif not has_count and not has_ranges:
        if body.has("instanceCount") and count == 0:
            body.error("instanceCount", "The instanceCount field must be at least 1.")
        elif "InstanceCount" not in body.errors and "AdvancedRanges" not in body.errors:
            body.error("instanceCount", "Either instanceCount or advancedRanges is required.")
    elif has_count and count is not None:
        if count > MAX_INSTANCES:
            body.error("instanceCount", f"The instanceCount field must be at most {MAX_INSTANCES}.")
        else:
            spec.instance_count = count
            spec.instance_ids = list(range(count))
    elif ranges is not None:
        try:
            spec.instance_ids = parse_ranges(ranges)
            spec.advanced_ranges = ranges.strip()
        except ValueError as exc:
            body.error("advancedRanges", f"The advancedRanges field is invalid: {exc}.")


def parse_task(data: Any, *, for_update: bool = False) -> TaskSpec:
    """Validate a task body (POST /tasks item, or PUT with ``for_update``) into a :class:`TaskSpec`."""
    errors: dict[str, list[str]] = {}
    if not isinstance(data, dict):
        raise ValidationProblem.single("$", "The task must be a JSON object.")
    body = Fields(data, errors)
    name = body.text("name", required=not for_update, allow_empty=False)
    spec = TaskSpec(name=name or "")
    spec.profile = body.text("profile") or None
    spec.pool_uuid = body.text("poolUuid") or None
    spec.job_uuid = body.text("jobUuid") or None
    spec.project_uuid = body.text("projectUuid") or None
    spec.shortname = body.text("shortname") or None
    if spec.shortname is not None and not SHORTNAME_RE.match(spec.shortname):
        body.error("shortname", "The shortname must be DNS compliant (letters, digits and '-').")
    if not for_update:
        if spec.profile is not None and spec.pool_uuid is not None:
            body.error("profile", "A task in a pool must not have a profile (profile and poolUuid both set).")
        _instances(body, spec)
    spec.constants = body.key_values("constants")
    spec.constraints = body.key_values("constraints")
    spec.forced_constants = body.obj_list("forcedConstants")
    spec.labels = body.labels("labels")
    spec.tags = body.str_list("tags")
    _dependencies(body, spec)
    spec.resource_buckets = _resource_buckets(body)
    spec.legacy_resource_buckets = body.str_list("resourceBuckets")
    spec.result_bucket = body.text("resultBucket") or None
    spec.results_cache_ttl_sec = body.integer("ResultsCacheTTLSec", minimum=0)
    spec.results_bucket_prefix = body.text("resultsBucketPrefix") or None
    spec.snapshot_whitelist = body.regex("snapshotWhitelist")
    spec.snapshot_blacklist = body.regex("snapshotBlacklist")
    spec.snapshot_bucket = body.text("snapshotBucket") or None
    spec.snapshot_bucket_prefix = body.text("snapshotBucketPrefix") or None
    spec.results_whitelist = body.regex("resultsWhitelist")
    spec.results_blacklist = body.regex("resultsBlacklist")
    spec.auto_delete = bool(body.boolean("autoDeleteOnCompletion"))
    spec.completion_ttl = body.timespan("completionTimeToLive") or "00:00:00"
    spec.hardware_constraints = body.obj_list("hardwareConstraints")
    spec.default_resources_cache_ttl_sec = body.integer("defaultResourcesCacheTTLSec", minimum=0)
    privileges = _privileges(body)
    if privileges is not None:
        spec.privileges = privileges
    retry = body.obj("retrySettings")
    if retry is not None:
        spec.max_total_retries = retry.integer("maxTotalRetries", minimum=0, maximum=1000)
        spec.max_per_instance_retries = retry.integer("maxPerInstanceRetries", minimum=0, maximum=1000)
    spec.max_retries_per_instance = body.integer("maxRetriesPerInstance", minimum=0, maximum=1000)
    scheduling = body.text("schedulingType")
    if scheduling is not None:
        if scheduling.lower() not in SCHEDULING_TYPES:
            body.error("schedulingType", "The schedulingType must be Flex, OnDemand or Reserved.")
        else:
            spec.scheduling_type = SCHEDULING_TYPES[scheduling.lower()]
    spec.targeted_reserved_machine_key = body.text("targetedReservedMachineKey")
    spec.targeted_reservation_name = body.text("targetedReservationName")
    spec.forced_network_rules = body.obj_list("forcedNetworkRules")
    spec.secrets_access_rights = _secrets_access(body)
    spec.max_time_queue_seconds = body.integer("maxTimeQueueSeconds", minimum=0)
    spec.wait_for_pool_resources_sync = body.boolean("waitForPoolResourcesSynchronization")
    spec.upload_results_on_cancellation = body.boolean("uploadResultsOnCancellation")
    spec.priority = body.integer("priority")
    spec.snapshot_interval = body.integer("snapshotInterval", minimum=0)
    if errors:
        raise ValidationProblem(errors)
    return spec


@dataclass
class JobSpec:
    """A job as submitted."""

    name: str
    shortname: str | None = None
    pool_uuid: str | None = None
    project_uuid: str | None = None
    tags: list[str] = field(default_factory=list)
    use_dependencies: bool = False
    max_wall_time: str | None = None
    auto_delete: bool = False
    completion_ttl: str = "00:00:00"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for persistence."""
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        """Rebuild a spec saved with :meth:`to_dict`."""
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def parse_job(data: Any) -> JobSpec:
    """Validate a POST /jobs body."""
    errors: dict[str, list[str]] = {}
    if not isinstance(data, dict):
        raise ValidationProblem.single("$", "The job must be a JSON object.")
    body = Fields(data, errors)
    spec = JobSpec(name=body.text("name", required=True, allow_empty=False) or "")
    spec.shortname = body.text("shortname") or None
    if spec.shortname is not None and not SHORTNAME_RE.match(spec.shortname):
        body.error("shortname", "The shortname must be DNS compliant (letters, digits and '-').")
    spec.pool_uuid = body.text("poolUuid") or None
    spec.project_uuid = body.text("projectUuid") or None
    spec.tags = body.str_list("tags")
    spec.use_dependencies = bool(body.boolean("useDependencies"))
    spec.max_wall_time = body.timespan("maxWallTime")
    spec.auto_delete = bool(body.boolean("autoDeleteOnCompletion"))
    spec.completion_ttl = body.timespan("completionTimeToLive") or "00:00:00"
    if errors:
        raise ValidationProblem(errors)
    return spec


@dataclass
class PoolSpec:
    """A pool as submitted."""

    name: str
    profile: str
    instance_count: int = 1
    shortname: str | None = None
    project_uuid: str | None = None
    constants: list[tuple[str, str]] = field(default_factory=list)
    constraints: list[tuple[str, str]] = field(default_factory=list)
    forced_constants: list[Any] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    resource_buckets: list[ResourceBucketSpec] = field(default_factory=list)
    elastic: dict[str, Any] | None = None
    preparation_task: dict[str, Any] | None = None
    task_wait_for_sync: bool = False
    auto_delete: bool = False
    completion_ttl: str = "00:00:00"
    hardware_constraints: list[Any] = field(default_factory=list)
    default_resources_cache_ttl_sec: int | None = None
    privileges: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_PRIVILEGES))
    default_max_total_retries: int | None = None
    default_max_per_instance_retries: int | None = None
    scheduling_type: str | None = None
    forced_network_rules: list[Any] = field(default_factory=list)
    max_time_queue_seconds: int | None = None

    def slots(self) -> int:
        """How many task instances may run in the pool at once."""
        if self.elastic and self.elastic.get("isElastic"):
            value = self.elastic.get("maxTotalSlots")
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return max(1, self.instance_count)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for persistence."""
        data = dict(self.__dict__)
        data["resource_buckets"] = [dict(b.__dict__) for b in self.resource_buckets]
        data["constants"] = [list(p) for p in self.constants]
        data["constraints"] = [list(p) for p in self.constraints]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PoolSpec:
        """Rebuild a spec saved with :meth:`to_dict`."""
        values = dict(data)
        values["resource_buckets"] = [ResourceBucketSpec(**b) for b in values.get("resource_buckets", [])]
        values["constants"] = [(str(k), str(v)) for k, v in values.get("constants", [])]
        values["constraints"] = [(str(k), str(v)) for k, v in values.get("constraints", [])]
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})


def parse_pool(data: Any) -> PoolSpec:
    """Validate a POST /pools body."""
    errors: dict[str, list[str]] = {}
    if not isinstance(data, dict):
        raise ValidationProblem.single("$", "The pool must be a JSON object.")
    body = Fields(data, errors)
    name = body.text("name", required=True, allow_empty=False) or ""
    profile = body.text("profile", required=True, allow_empty=False) or ""
    spec = PoolSpec(name=name, profile=profile)
    elastic = _elastic(body)
    count = body.integer("instanceCount", minimum=0, maximum=MAX_INSTANCES)
    is_elastic = bool(elastic and elastic.get("isElastic"))
    if count is None or count == 0:
        if not is_elastic:
            body.error("instanceCount", "The instanceCount field must be at least 1.")
        count = 0
    spec.instance_count = count
    spec.elastic = elastic
    spec.shortname = body.text("shortname") or None
    spec.project_uuid = body.text("projectUuid") or None
    spec.constants = body.key_values("constants")
    spec.constraints = body.key_values("constraints")
    spec.forced_constants = body.obj_list("forcedConstants")
    spec.tags = body.str_list("tags")
    spec.labels = body.labels("labels")
    spec.resource_buckets = _resource_buckets(body)
    spec.preparation_task = body.passthrough_obj("preparationTask")
    spec.task_wait_for_sync = bool(body.boolean("taskDefaultWaitForPoolResourcesSynchronization"))
    spec.auto_delete = bool(body.boolean("autoDeleteOnCompletion"))
    spec.completion_ttl = body.timespan("completionTimeToLive") or "00:00:00"
    spec.hardware_constraints = body.obj_list("hardwareConstraints")
    spec.default_resources_cache_ttl_sec = body.integer("defaultResourcesCacheTTLSec", minimum=0)
    privileges = _privileges(body)
    if privileges is not None:
        spec.privileges = privileges
    retry = body.obj("defaultRetrySettings")
    if retry is not None:
        spec.default_max_total_retries = retry.integer("maxTotalRetries", minimum=0, maximum=1000)
        spec.default_max_per_instance_retries = retry.integer("maxPerInstanceRetries", minimum=0, maximum=1000)
    scheduling = body.text("schedulingType")
    if scheduling is not None:
        if scheduling.lower() not in SCHEDULING_TYPES:
            body.error("schedulingType", "The schedulingType must be Flex, OnDemand or Reserved.")
        else:
            spec.scheduling_type = SCHEDULING_TYPES[scheduling.lower()]
    spec.forced_network_rules = body.obj_list("forcedNetworkRules")
    spec.max_time_queue_seconds = body.integer("maxTimeQueueSeconds", minimum=0)
    if errors:
        raise ValidationProblem(errors)
    return spec


@dataclass
class PageRequest:
    """A ``/paginate`` or ``/search`` body."""

    filter: Any = None
    token: str | None = None
    maximum_results: int | None = None
    select: list[str] | None = None


def parse_page_request(data: Any) -> PageRequest:
    """Validate ``{"filter", "token", "maximumResults", "select"}`` (null or empty body = defaults)."""
    if data is None:
        return PageRequest()
    errors: dict[str, list[str]] = {}
    if not isinstance(data, dict):
        raise ValidationProblem.single("$", "The request must be a JSON object.")
    body = Fields(data, errors)
    request = PageRequest()
    request.filter = body.raw("filter")
    if request.filter is not None and not isinstance(request.filter, dict):
        body.error("filter", "The filter must be an object.")
    request.token = body.text("token") or None
    request.maximum_results = body.integer("maximumResults", minimum=1)
    select = body.raw("select")
    if isinstance(select, dict):
        select = Fields(select, errors, "Select").raw("fields")
    if select is not None:
        if not isinstance(select, list) or not all(isinstance(s, str) for s in select):
            body.error("select", "The select field must be a list of field names.")
        else:
            request.select = list(select)
    if errors:
        raise ValidationProblem(errors)
    return request
