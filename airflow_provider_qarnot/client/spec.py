"""`TaskSpec`: every create-time field of a Qarnot task, validated before any call and rendered as the API's JSON."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import Any

from airflow_provider_qarnot.client.models import format_timespan, parse_timespan

#: A sanity bound on instances per task: far above any real render, far below a typo's 10**9.
MAX_INSTANCES = 100_000
SCHEDULING_TYPES = ("Flex", "OnDemand", "Reserved")
_RANGE_ITEM = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


@dataclass(frozen=True)
class ResourceBucket:
    """A bucket given to a task as resources, optionally filtered to a prefix and with that prefix stripped."""

    bucket_name: str
    prefix: str | None = None
    strip_prefix: str | None = None
    cache_ttl_sec: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The `advancedResourceBuckets` entry."""
        return {
            "bucketName": self.bucket_name,
            "filtering": {"prefixFiltering": {"prefix": self.prefix}} if self.prefix else {},
            "resourcesTransformation": {"stripPrefix": {"prefix": self.strip_prefix}} if self.strip_prefix else {},
            "cacheTTLSec": self.cache_ttl_sec,
        }

    @classmethod
    def coerce(cls, value: Any) -> ResourceBucket:
        """Accept a bucket name, a ResourceBucket, or a dict in snake_case or the API's camelCase."""
        if isinstance(value, ResourceBucket):
            return value
        if isinstance(value, str):
            return cls(bucket_name=value)
        if isinstance(value, Mapping):
            lowered = {str(k).lower().replace("_", ""): v for k, v in value.items()}
            name = lowered.get("bucketname") or lowered.get("bucket") or lowered.get("name")
            prefix = lowered.get("prefix")
            strip = lowered.get("stripprefix")
            filtering = lowered.get("filtering")
            if prefix is None and isinstance(filtering, Mapping):
                prefix = (filtering.get("prefixFiltering") or {}).get("prefix")
            transform = lowered.get("resourcestransformation")
            if strip is None and isinstance(transform, Mapping):
                strip = (transform.get("stripPrefix") or {}).get("prefix")
            if strip is True:
                strip = prefix
            ttl = lowered.get("cachettlsec")
            if not isinstance(name, str) or not name:
                raise ValueError(f"resources: each bucket needs a 'bucket_name', got {dict(value)!r}")
            return cls(
                bucket_name=name,
                prefix=prefix if isinstance(prefix, str) and prefix else None,
                strip_prefix=strip if isinstance(strip, str) and strip else None,
                cache_ttl_sec=ttl if isinstance(ttl, int) and not isinstance(ttl, bool) else None,
            )
        raise ValueError(f"resources: expected a bucket name or a mapping, got {type(value).__name__}")


def parse_ranges(ranges: str) -> list[int]:
    """Expand an advancedRanges string such as "1,3-5" into instance ids; ValueError when malformed."""
    if not isinstance(ranges, str) or not ranges.strip():
        raise ValueError("advanced_ranges must be a non-empty string such as '0-7' or '1,3-5'")
    ids: list[int] = []
    for item in ranges.split(","):
        match = _RANGE_ITEM.match(item)
        if not match:
            raise ValueError(f"advanced_ranges: {item.strip()!r} is not a number or a range like '3-8'")
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) is not None else low
        if high < low:
            raise ValueError(f"advanced_ranges: range {item.strip()!r} ends before it starts")
        if high - low + len(ids) >= MAX_INSTANCES:
            raise ValueError(f"advanced_ranges: more than {MAX_INSTANCES} instances")
        ids.extend(range(low, high + 1))
    return ids


def _check_str_map(name: str, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be a mapping of str to str, got {type(value).__name__}")
    out: dict[str, str] = {}
    for key, val in value.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"{name}: every key must be a non-empty str, got {key!r}")
        if not isinstance(val, str):
            raise ValueError(f"{name}[{key!r}] must be a str, got {type(val).__name__} {val!r} (convert it with str())")
        out[key] = val
    return out


def _check_optional_int(name: str, value: Any, minimum: int = 0) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_regex(name: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a regular expression string, got {type(value).__name__}")
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"{name} is not a valid regular expression: {exc}") from None


@dataclass(frozen=True)
class TaskSpec:
    """What a DAG author sets on a Qarnot task. `validate()` says what is wrong, naming the field."""

    name: str
    profile: str | None = None
    instance_count: int | None = None
    advanced_ranges: str | None = None
    pool_uuid: str | None = None
    job_uuid: str | None = None
    project_uuid: str | None = None
    shortname: str | None = None
    constants: Mapping[str, str] = field(default_factory=dict)
    constraints: Mapping[str, str] = field(default_factory=dict)
    tags: Sequence[str] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    resources: Sequence[ResourceBucket | str | Mapping[str, Any]] = ()
    result_bucket: str | None = None
    results_bucket_prefix: str | None = None
    results_cache_ttl_sec: int | None = None
    hardware_constraints: Sequence[Mapping[str, Any]] = ()
    scheduling_type: str | None = None
    targeted_reservation_name: str | None = None
    max_retries_per_instance: int | None = None
    max_total_retries: int | None = None
    results_whitelist: str | None = None
    results_blacklist: str | None = None
    snapshot_whitelist: str | None = None
    snapshot_blacklist: str | None = None
    depends_on: Sequence[str] = ()
    auto_delete: bool = False
    completion_ttl: timedelta | str | None = None
    max_time_queue_seconds: int | None = None
    secrets_access: Mapping[str, Any] | None = None
    upload_results_on_cancellation: bool | None = None
    wait_for_pool_resources_synchronization: bool | None = None
    default_resources_cache_ttl_sec: int | None = None
    export_credentials: bool = False

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names of every create-time field."""
        return tuple(f.name for f in fields(cls))

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field or combination; makes no call."""
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError("name must be a non-empty string")
        if len(self.name) > 255:
            raise ValueError("name must be at most 255 characters")
        has_count = self.instance_count is not None
        has_ranges = self.advanced_ranges is not None
        if has_count and has_ranges:
            raise ValueError("give either instance_count or advanced_ranges, not both")
        if not has_count and not has_ranges:
            raise ValueError("one of instance_count or advanced_ranges is required")
        if has_count:
            count = self.instance_count
            if isinstance(count, bool) or not isinstance(count, int):
                raise ValueError(f"instance_count must be an integer, got {type(count).__name__} {count!r}")
            if count < 1:
                raise ValueError(f"instance_count must be at least 1, got {count}")
            if count > MAX_INSTANCES:
                raise ValueError(f"instance_count must be at most {MAX_INSTANCES}, got {count}")
        else:
            parse_ranges(self.advanced_ranges)  # type: ignore[arg-type]
        for attr in ("profile", "pool_uuid", "job_uuid", "project_uuid", "shortname", "result_bucket"):
            value = getattr(self, attr)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"{attr} must be a non-empty string when given, got {value!r}")
        if self.profile is not None and self.pool_uuid is not None:
            raise ValueError("give either profile or pool_uuid, not both (a pool task takes the pool's profile)")
        if self.profile is None and self.pool_uuid is None and self.job_uuid is None:
            raise ValueError("profile is required (or pool_uuid, or the job_uuid of a job that runs in a pool)")
        if self.pool_uuid is not None and self.job_uuid is not None:
            raise ValueError("a task cannot name both pool_uuid and job_uuid: the job decides the pool")
        _check_str_map("constants", self.constants)
        _check_str_map("constraints", self.constraints)
        _check_str_map("labels", self.labels)
        if isinstance(self.tags, str) or not isinstance(self.tags, Sequence):
            raise ValueError(f"tags must be a list of strings, got {type(self.tags).__name__}")
        for tag in self.tags:
            if not isinstance(tag, str) or not tag.strip():
                raise ValueError(f"tags: every tag must be a non-empty string, got {tag!r}")
            if "," in tag:
                raise ValueError(f"tags: {tag!r} contains a comma, which the API reads as two tags")
        if isinstance(self.resources, str | bytes) or not isinstance(self.resources, Sequence):
            raise ValueError("resources must be a list of bucket names or bucket mappings")
        for res in self.resources:
            ResourceBucket.coerce(res)
        if isinstance(self.depends_on, str) or not isinstance(self.depends_on, Sequence):
            raise ValueError("depends_on must be a list of task uuids")
        for dep in self.depends_on:
            if not isinstance(dep, str) or not dep:
                raise ValueError(f"depends_on: every entry must be a task uuid string, got {dep!r}")
        if isinstance(self.hardware_constraints, str) or not isinstance(self.hardware_constraints, Sequence):
            raise ValueError("hardware_constraints must be a list of constraint mappings")
        for hc in self.hardware_constraints:
            if not isinstance(hc, Mapping) or not isinstance(hc.get("discriminator"), str):
                raise ValueError(f"hardware_constraints: each needs a 'discriminator', got {hc!r}")
        if self.scheduling_type is not None and self.scheduling_type not in SCHEDULING_TYPES:
            raise ValueError(f"scheduling_type must be one of {', '.join(SCHEDULING_TYPES)}")
        for attr in (
            "max_retries_per_instance",
            "max_total_retries",
            "max_time_queue_seconds",
            "results_cache_ttl_sec",
            "default_resources_cache_ttl_sec",
        ):
            _check_optional_int(attr, getattr(self, attr))
        for attr in ("auto_delete", "export_credentials"):
            if not isinstance(getattr(self, attr), bool):
                raise ValueError(f"{attr} must be True or False, got {getattr(self, attr)!r}")
        for attr in ("upload_results_on_cancellation", "wait_for_pool_resources_synchronization"):
            value = getattr(self, attr)
            if value is not None and not isinstance(value, bool):
                raise ValueError(f"{attr} must be True, False or None, got {value!r}")
        for attr in ("results_bucket_prefix", "targeted_reservation_name"):
            value = getattr(self, attr)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{attr} must be a string when given, got {type(value).__name__} {value!r}")
        for attr in ("results_whitelist", "results_blacklist", "snapshot_whitelist", "snapshot_blacklist"):
            _check_regex(attr, getattr(self, attr))
        ttl = self.completion_ttl
        if ttl is not None and not isinstance(ttl, timedelta) and parse_timespan(ttl) is None:
            raise ValueError(f"completion_ttl must be a timedelta or 'hh:mm:ss', got {self.completion_ttl!r}")
        if self.secrets_access is not None and not isinstance(self.secrets_access, Mapping):
            raise ValueError("secrets_access must be a mapping with 'bySecret' and/or 'byPrefix'")

    def instance_ids(self) -> list[int]:
        """The ids of the instances this task will run."""
        if self.advanced_ranges is not None:
            return parse_ranges(self.advanced_ranges)
        return list(range(self.instance_count or 0))

    def to_json(self, extra_tags: Sequence[str] = ()) -> dict[str, Any]:
        """The `POST /tasks` body, with the field names the API expects (quirks included)."""
        ttl = self.completion_ttl
        ttl_text = format_timespan(ttl) if isinstance(ttl, timedelta) else (ttl or "00:00:00")
        body: dict[str, Any] = {
            "name": self.name,
            "profile": self.profile,
            "poolUuid": self.pool_uuid,
            "jobUuid": self.job_uuid,
            "constants": [{"key": k, "value": v} for k, v in self.constants.items()],
            "constraints": [{"key": k, "value": v} for k, v in self.constraints.items()],
            "forcedConstants": [],
            "labels": dict(self.labels),
            "tags": list(dict.fromkeys([*self.tags, *extra_tags])),
            "dependencies": {"dependsOn": list(self.depends_on)},
            "advancedResourceBuckets": [ResourceBucket.coerce(r).to_json() for r in self.resources],
            "autoDeleteOnCompletion": bool(self.auto_delete),
            "completionTimeToLive": ttl_text,
            "hardwareConstraints": [dict(h) for h in self.hardware_constraints],
            "defaultResourcesCacheTTLSec": self.default_resources_cache_ttl_sec,
            "privileges": {"exportApiAndStorageCredentialsInEnvironment": bool(self.export_credentials)},
            "retrySettings": {
                "maxTotalRetries": self.max_total_retries,
                "maxPerInstanceRetries": self.max_retries_per_instance,
            },
            "forcedNetworkRules": [],
            "waitForPoolResourcesSynchronization": self.wait_for_pool_resources_synchronization,
            "uploadResultsOnCancellation": self.upload_results_on_cancellation,
        }
        if self.advanced_ranges is not None:
            body["advancedRanges"] = self.advanced_ranges
        else:
            body["instanceCount"] = self.instance_count
        optional = {
            "shortname": self.shortname,
            "projectUuid": self.project_uuid,
            "resultBucket": self.result_bucket,
            "resultsBucketPrefix": self.results_bucket_prefix,
            "ResultsCacheTTLSec": self.results_cache_ttl_sec,
            "schedulingType": self.scheduling_type,
            "targetedReservationName": self.targeted_reservation_name,
            "resultsWhitelist": self.results_whitelist,
            "resultsBlacklist": self.results_blacklist,
            "snapshotWhitelist": self.snapshot_whitelist,
            "snapshotBlacklist": self.snapshot_blacklist,
            "maxTimeQueueSeconds": self.max_time_queue_seconds,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        if self.max_retries_per_instance is not None:
            body["maxRetriesPerInstance"] = self.max_retries_per_instance
        if self.secrets_access:
            body["secretsAccessRights"] = dict(self.secrets_access)
        return body

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TaskSpec:
        """Rebuild the spec of an existing task from its JSON, tolerating missing fields (no validation)."""

        def pairs(key: str) -> dict[str, str]:
            items = data.get(key)
            out: dict[str, str] = {}
            if isinstance(items, list):
                for item in items:
                    if isinstance(item, Mapping) and isinstance(item.get("key"), str):
                        out[item["key"]] = str(item.get("value", ""))
            return out

        resources: list[ResourceBucket] = []
        for item in data.get("advancedResourceBuckets") or []:
            try:
                resources.append(ResourceBucket.coerce(item))
            except ValueError:
                continue
        if not resources:
            resources = [ResourceBucket(n) for n in data.get("resourceBuckets") or [] if isinstance(n, str)]

        def obj(key: str) -> Mapping[str, Any]:
            value = data.get(key)
            return value if isinstance(value, Mapping) else {}

        retry, deps, labels = obj("retrySettings"), obj("dependencies"), obj("labels")
        count = data.get("instanceCount")
        ranges = data.get("advancedRanges")
        use_ranges = isinstance(ranges, str) and bool(ranges)

        def opt_str(key: str) -> str | None:
            value = data.get(key)
            return value if isinstance(value, str) and value else None

        return cls(
            name=str(data.get("name") or ""),
            profile=opt_str("profile"),
            instance_count=None if use_ranges else (count if isinstance(count, int) else None),
            advanced_ranges=ranges if use_ranges else None,
            pool_uuid=opt_str("poolUuid"),
            job_uuid=opt_str("jobUuid"),
            project_uuid=opt_str("projectUuid"),
            shortname=opt_str("shortname"),
            constants=pairs("constants"),
            constraints=pairs("constraints"),
            tags=tuple(t for t in data.get("tags") or [] if isinstance(t, str)),
            labels={str(k): str(v) for k, v in labels.items()},
            resources=tuple(resources),
            result_bucket=opt_str("resultBucket"),
            results_bucket_prefix=opt_str("resultsBucketPrefix"),
            max_retries_per_instance=retry.get("maxPerInstanceRetries"),
            max_total_retries=retry.get("maxTotalRetries"),
            results_whitelist=opt_str("resultsWhitelist"),
            results_blacklist=opt_str("resultsBlacklist"),
            depends_on=tuple(d for d in deps.get("dependsOn") or [] if isinstance(d, str)),
            auto_delete=bool(data.get("autoDeleteOnCompletion")),
        )
