"""Listing many tasks: summaries by tag, filtered pagination with opaque tokens, search."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import Api, assert_problem


@pytest.fixture
def tagged(sim_api: Api) -> dict[str, list[str]]:
    """12 long-running simulated tasks: 5 tagged run-a, 4 run-b, 3 with both run-b and extra."""
    groups: dict[str, list[str]] = {"a": [], "b": [], "both": []}
    for n in range(5):
        groups["a"].append(sim_api.submit(name=f"a{n}", tags=["run-a"], labels={"group": "a"}))
    for n in range(4):
        groups["b"].append(sim_api.submit(name=f"b{n}", tags=["run-b"], labels={"group": "b"}))
    for n in range(3):
        groups["both"].append(sim_api.submit(name=f"c{n}", tags=["run-b", "extra"], labels={"group": "c"}))
    return groups


def _uuids(items: list[dict[str, Any]]) -> list[str]:
    return [item["uuid"] for item in items]


def test_summaries_and_list_by_tag(sim_api: Api, tagged: dict[str, list[str]]) -> None:
    summaries = sim_api.get("/tasks/summaries", params={"tag": "run-a"}).json()
    assert _uuids(summaries) == tagged["a"]
    assert "status" not in summaries[0] and "errors" not in summaries[0]
    assert {"uuid", "state", "progress", "endDate", "creationDate", "instanceCount"} <= set(summaries[0])
    # several tag parameters and comma lists: any of them
    both = sim_api.get("/tasks/summaries?tag=run-a&tag=nothing,extra").json()
    assert set(_uuids(both)) == set(tagged["a"] + tagged["both"])
    full = sim_api.get("/tasks", params={"tag": "extra"}).json()
    assert _uuids(full) == tagged["both"]
    assert "status" in full[0]
    assert len(sim_api.get("/tasks/summaries").json()) == 12


def test_paginate_follows_next_token(sim_api: Api, tagged: dict[str, list[str]]) -> None:
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        body = {"filter": None, "token": token, "maximumResults": 5}
        page = sim_api.post("/tasks/summaries/paginate", json=body).json()
        assert set(page) >= {"token", "nextToken", "isTruncated", "data"}
        assert page["token"] == token
        seen += _uuids(page["data"])
        pages += 1
        if not page["isTruncated"]:
            assert page["nextToken"] is None
            break
        token = page["nextToken"]
        assert isinstance(token, str) and len(token) == 24
    assert pages == 3
    assert seen == tagged["a"] + tagged["b"] + tagged["both"]
    # the default page size holds them all
    page = sim_api.post("/tasks/paginate", json={}).json()
    assert page["isTruncated"] is False and len(page["data"]) == 12
    assert "status" in page["data"][0]


def test_paginate_with_filters(sim_api: Api, tagged: dict[str, list[str]]) -> None:
    def paginate(filter_: dict[str, Any], size: int = 2) -> list[str]:
        found: list[str] = []
        token = None
        while True:
            page = sim_api.post("/tasks/paginate", json={"filter": filter_, "token": token, "maximumResults": size})
            assert page.status_code == 200, page.text
            data = page.json()
            found += _uuids(data["data"])
            if not data["isTruncated"]:
                return found
            token = data["nextToken"]

    assert paginate({"operator": "Equal", "field": "Tags", "value": "run-b"}) == tagged["b"] + tagged["both"]
    picked = [tagged["a"][1], tagged["b"][0], tagged["both"][2]]
    or_uuid = {"operator": "Or", "filters": [{"operator": "Equal", "field": "Uuid", "value": u} for u in picked]}
    assert paginate(or_uuid) == picked
    assert paginate({"operator": "In", "field": "Uuid", "value": picked}) == picked
    assert paginate({"operator": "In", "field": "uuid", "values": picked}) == picked
    pascal = {"Operator": "In", "Field": "Uuid", "Values": picked[:2]}
    assert paginate(pascal) == picked[:2]
    both_tags = {
        "operator": "And",
        "filters": [
            {"operator": "Equal", "field": "Tags", "value": "run-b"},
            {"operator": "Equal", "field": "Tags", "value": "extra"},
        ],
    }
    assert paginate(both_tags) == tagged["both"]
    not_in = {"operator": "NotIn", "field": "Tags", "values": ["run-b"]}
    assert paginate(not_in) == tagged["a"]
    assert paginate({"operator": "Like", "field": "Name", "value": "^c[0-1]$"}) == tagged["both"][:2]
    assert paginate({"operator": "Equal", "field": "Labels.group", "value": "b"}) == tagged["b"]
    # state names match case-insensitively
    running = ["submitted", "FULLYDISPATCHED", "FullyExecuting"]
    assert len(paginate({"operator": "In", "field": "State", "values": running}, size=50)) == 12
    assert paginate({"operator": "Equal", "field": "State", "value": "success"}) == []
    assert len(paginate({"operator": "NotEqual", "field": "State", "value": "Success"})) == 12
    first = sim_api.task(tagged["a"][0])["creationDate"]
    later = {"operator": "GreaterThan", "field": "CreationDate", "value": first}
    assert paginate(later) == tagged["a"][1:] + tagged["b"] + tagged["both"]
    assert paginate({"operator": "LessThanOrEqual", "field": "InstanceCount", "value": 1}, size=50) != []
    assert paginate({"Operator": "Equal", "Field": "PoolUuid", "Value": None}, size=50) != []


def test_search_returns_a_plain_array(sim_api: Api, tagged: dict[str, list[str]]) -> None:
    body = {"filter": {"operator": "Equal", "field": "Tags", "value": "run-a"}, "maximumResults": 3}
    found = sim_api.post("/tasks/search", json=body).json()
    assert isinstance(found, list) and _uuids(found) == tagged["a"][:3]
    pascal = {"Filter": {"Operator": "Equal", "Field": "Tags", "Value": "extra"}, "Select": {"Fields": ["Uuid"]}}
    selected = sim_api.post("/tasks/search", json=pascal).json()
    assert selected == [{"uuid": u} for u in tagged["both"]]
    assert len(sim_api.post("/tasks/search").json()) == 12
    assert_problem(sim_api.post("/tasks/search", json={"filter": {"operator": "Like", "field": "Name", "value": "("}}))


def test_paginate_caps_page_size(sim_api: Api) -> None:
    body = [{"name": f"t{n}", "profile": "docker-batch", "instanceCount": 1} for n in range(120)]
    assert all(item["statusCode"] == 200 for item in sim_api.post("/tasks", json=body).json())
    page = sim_api.post("/tasks/paginate", json={"maximumResults": 1000}).json()
    assert len(page["data"]) == 100 and page["isTruncated"] is True
    rest = sim_api.post("/tasks/paginate", json={"token": page["nextToken"], "maximumResults": 1000}).json()
    assert len(rest["data"]) == 20 and rest["isTruncated"] is False
    default = sim_api.post("/tasks/summaries/paginate", json={"filter": None, "token": None, "maximumResults": None})
    assert len(default.json()["data"]) == 50
