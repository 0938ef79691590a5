"""pytest fixtures for tests against the emulator (registered through the ``pytest11`` entry point).

``qarnot_emulator``: a started emulator (run mode, 2 cores) for one test.
``qarnot_emulator_factory``: ``factory(**kwargs)`` → a started :class:`Emulator`; all stopped at teardown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .server import Emulator


@pytest.fixture
def qarnot_emulator() -> Iterator[Emulator]:
    """A started emulator in run mode with 2 cores; stopped after the test."""
    from .server import Emulator

    with Emulator(token="emulator-token", cores=2, mode="run") as emu:
        yield emu


@pytest.fixture
def qarnot_emulator_factory() -> Iterator[Callable[..., Emulator]]:
    """Build started emulators from ``Emulator(**kwargs)``; every one is stopped after the test."""
    from .server import Emulator

    started: list[Emulator] = []

    def factory(**kwargs: Any) -> Emulator:
        emu = Emulator(**kwargs).start()
        started.append(emu)
        return emu

    yield factory
    for emu in reversed(started):
        emu.stop()
