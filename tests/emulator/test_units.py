"""Small pieces without a server: wire formats, output buffers, the filter language, body parsing."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_qarnot.emulator.buffers import LineJoiner, OutputBuffer
from airflow_provider_qarnot.emulator.exceptions import ValidationProblem
from airflow_provider_qarnot.emulator.filters import FieldDef, compile_filter
from airflow_provider_qarnot.emulator.formats import (
    format_date,
    format_ranges,
    format_timespan,
    parse_date,
    parse_ranges,
    parse_timespan,
)
from airflow_provider_qarnot.emulator.validation import parse_task


def test_ranges() -> None:
    assert parse_ranges("1,3-5") == [1, 3, 4, 5]
    assert parse_ranges(" 0 - 2 , 2,7") == [0, 1, 2, 7]
    for bad in ("", "3-1", "a", "1,,2", "-1", "1-", "0-99999"):
        with pytest.raises(ValueError, match=r"range|instances"):
            parse_ranges(bad)
    assert format_ranges([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert format_ranges([]) == ""


@settings(max_examples=50, deadline=None)
@given(st.sets(st.integers(0, 300), min_size=1))
def test_ranges_round_trip(ids: set[int]) -> None:
    assert parse_ranges(format_ranges(ids)) == sorted(ids)


def test_timespans_and_dates() -> None:
    assert format_timespan(0) == "00:00:00"
    assert format_timespan(3661) == "01:01:01"
    assert format_timespan(97010.5) == "1.02:56:50.5000000"
    assert parse_timespan("1.03:16:50.5000000") == 98210.5
    assert parse_timespan("00:00:30") == 30
    for bad in ("30", "aa:bb:cc", "00:61:00"):
        with pytest.raises(ValueError, match="invalid TimeSpan"):
            parse_timespan(bad)
    assert format_date(None) == "0001-01-01T00:00:00Z"
    stamp = 1714644012.25
    assert format_date(stamp) == "2024-05-02T10:00:12.250000Z"
    assert parse_date(format_date(stamp)) == stamp
    assert parse_date("2024-05-02T10:00:12Z") == 1714644012


def test_output_buffer_keeps_the_tail_and_cursors() -> None:
    buffer = OutputBuffer(capacity=10)
    buffer.write(b"0123456789")
    assert buffer.read_fresh("a") == "0123456789"
    buffer.write(b"abcdef")
    assert buffer.read_all() == "6789abcdef"
    assert buffer.read_fresh("a") == "abcdef"
    assert buffer.read_fresh("b") == "6789abcdef"  # a new reader gets what is retained
    assert buffer.read_fresh("a") == ""
    restored = OutputBuffer.from_dict(buffer.to_dict(), capacity=10)
    assert restored.read_all() == buffer.read_all() and restored.read_fresh("a") == ""


def test_line_joiner() -> None:
    joiner = LineJoiner()
    assert joiner.feed(b"par") == b""
    assert joiner.feed(b"tial\nnext") == b"partial\n"
    assert joiner.flush() == b"next"


@dataclass
class Item:
    uuid: str
    tags: list[str] = field(default_factory=list)
    state: str = "Success"
    count: int = 1
    labels: dict[str, str] = field(default_factory=dict)


FIELDS: dict[str, FieldDef[Item]] = {
    "uuid": FieldDef(lambda i: i.uuid),
    "tags": FieldDef(lambda i: i.tags, "list"),
    "state": FieldDef(lambda i: i.state, "enum"),
    "instancecount": FieldDef(lambda i: i.count, "int"),
    "labels": FieldDef(lambda i: i.labels, "dict"),
}
ITEMS = [
    Item("a", ["x"], "Success", 1, {"k": "1"}),
    Item("b", ["x", "y"], "Failure", 2),
    Item("c", [], "FullyExecuting", 3, {"k": "2"}),
]


def _match(filter_: object) -> list[str]:
    predicate = compile_filter(filter_, FIELDS)
    return [i.uuid for i in ITEMS if predicate(i)]


def test_filter_operators() -> None:
    assert _match(None) == ["a", "b", "c"]
    assert _match({"operator": "Equal", "field": "Tags", "value": "y"}) == ["b"]
    assert _match({"Operator": "equal", "Field": "STATE", "Value": "success"}) == ["a"]
    assert _match({"operator": "In", "field": "Uuid", "value": ["a", "c"]}) == ["a", "c"]
    assert _match({"operator": "In", "field": "Uuid", "values": ["b"]}) == ["b"]
    assert _match({"operator": "In", "field": "Uuid", "value": "b"}) == ["b"]
    assert _match({"operator": "NotIn", "field": "Tags", "values": ["y"]}) == ["a", "c"]
    assert _match({"operator": "GreaterThanOrEqual", "field": "InstanceCount", "value": 2}) == ["b", "c"]
    assert _match({"operator": "LessThan", "field": "InstanceCount", "value": "2"}) == ["a"]
    assert _match({"operator": "Like", "field": "State", "value": "^full"}) == ["c"]
    assert _match({"operator": "Equal", "field": "Labels.k", "value": "2"}) == ["c"]
    assert _match({"operator": "NotEqual", "field": "Uuid", "value": "a"}) == ["b", "c"]
    nested = {
        "operator": "Or",
        "filters": [
            {"operator": "And", "filters": [{"operator": "Equal", "field": "Tags", "value": "x"}]},
            {"operator": "Equal", "field": "Uuid", "value": "c"},
        ],
    }
    assert _match(nested) == ["a", "b", "c"]
    for bad in (
        {"operator": "Nope", "field": "Uuid", "value": 1},
        {"field": "Uuid"},
        {"operator": "Equal", "field": "Unknown", "value": 1},
        {"operator": "And"},
        {"operator": "Like", "field": "Uuid", "value": "("},
        {"operator": "Equal", "field": "InstanceCount", "value": "many"},
        "string",
    ):
        with pytest.raises(ValidationProblem):
            compile_filter(bad, FIELDS)


_EQUAL_LEAVES = st.fixed_dictionaries(
    {
        "operator": st.sampled_from(["Equal", "equal", "EQUAL"]),
        "field": st.sampled_from(["Uuid", "uuid", "Tags", "State", "InstanceCount", "Labels.k"]),
        "value": st.one_of(st.none(), st.sampled_from(["a", "b", "c", "x", "y", "success", "FAILURE", "1", "2"])),
    }
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_EQUAL_LEAVES, min_size=2, max_size=6))
def test_or_of_equals_matches_like_its_leaves(leaves: list[dict[str, object]]) -> None:
    """The set-lookup form of an Or of Equal leaves selects exactly what the leaves select one by one."""
    try:
        one_by_one = [compile_filter(leaf, FIELDS) for leaf in leaves]
    except ValidationProblem:
        with pytest.raises(ValidationProblem):
            compile_filter({"operator": "Or", "filters": leaves}, FIELDS)
        return
    expected = [i.uuid for i in ITEMS if any(p(i) for p in one_by_one)]
    assert _match({"operator": "Or", "filters": leaves}) == expected


def test_parse_task_normalises() -> None:
    spec = parse_task(
        {
            "NAME": "n",
            "profile": "docker-batch",
            "advancedRanges": "2-3",
            "constants": [{"key": "A", "value": 1}, {"key": "B", "value": None}],
            "advancedResourceBuckets": [
                {"bucketName": "b", "filtering": {"prefixFiltering": {"prefix": "p/"}}, "resourcesTransformation": {}}
            ],
            "resourceBuckets": ["legacy"],
        }
    )
    assert spec.name == "n" and spec.instance_ids == [2, 3] and spec.instance_count is None
    assert spec.constants == [("A", "1"), ("B", "")]
    assert spec.resource_buckets[0].prefix == "p/" and spec.resource_buckets[0].strip_prefix is None
    assert spec.legacy_resource_buckets == ["legacy"]
    with pytest.raises(ValidationProblem) as caught:
        parse_task({"profile": "docker-batch", "instanceCount": 1, "advancedRanges": "0"})
    assert set(caught.value.errors) == {"Name", "InstanceCount"}
