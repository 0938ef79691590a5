"""Bad input (`tools.chaos.BAD_INPUTS`): each gives a clear error naming the problem, before any API call
where validation suffices, and without retry where a retry cannot help. In-process, against an emulator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tools import chaos


@pytest.fixture(scope="module")
def sandbox() -> Iterator[chaos.BadInputSandbox]:
    with chaos.BadInputSandbox(chaos.make_token()) as box:
        yield box


@pytest.mark.parametrize("case", chaos.BAD_INPUTS, ids=lambda case: case.name)
def test_bad_input_is_reported_clearly(sandbox: chaos.BadInputSandbox, case: chaos.BadInput) -> None:
    result = sandbox.check(case)
    assert result.clear, f"{'; '.join(result.problems)} [{result.kind}: {result.error}]"


def test_the_table_covers_the_issue() -> None:
    """At least 25 cases, over arguments, connections, the network and templates."""
    names = " ".join(case.name for case in chaos.BAD_INPUTS)
    assert len(chaos.BAD_INPUTS) >= 25
    for topic in ("name", "instance_count", "range", "profile", "constant", "bucket", "connection", "extra"):
        assert topic in names, topic
    for topic in ("unreachable", "token", "certificate", "poll_interval", "timeout", "template"):
        assert topic in names, topic


def test_printed_objects_never_show_the_token(sandbox: chaos.BadInputSandbox) -> None:
    """repr() of the hook, its settings, the client connection and a trigger, and test_connection()'s answer."""
    assert sandbox.repr_leaks() == []
