"""Fixtures for client tests: a client connected to a real emulator over loopback HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_qarnot.client import QConnection, RetryPolicy

FAST_RETRY = RetryPolicy(max_attempts=6, base_delay=0.02, max_delay=0.3, max_elapsed=30.0)


def connect(emu: Any, **kwargs: Any) -> QConnection:
    """A client for `emu` with quick retries, so fault tests stay fast."""
    kwargs.setdefault("retry", FAST_RETRY)
    return QConnection(emu.api_url, emu.token, **kwargs)


@pytest.fixture
def conn(qarnot_emulator: Any) -> Iterator[QConnection]:
    with connect(qarnot_emulator) as connection:
        yield connection
