"""A local emulator of the Qarnot REST API and its S3 storage, for development and tests.

It really runs each task instance's ``DOCKER_CMD`` on this host (``mode="run"``) or only plays the
task timeline (``mode="simulate"``). Never expose it beyond loopback. See ``docs/emulator.md``.

    from airflow_provider_qarnot.emulator import Emulator, FaultRule
    with Emulator(token="tok", cores=2) as emu:
        ...  # emu.api_url, emu.storage_url, emu.set_faults([...]), emu.stats(), emu.tasks()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .faults import FaultRule

if TYPE_CHECKING:
    from .server import Emulator

__all__ = ["Emulator", "FaultRule"]


def __getattr__(name: str) -> Any:
    # Emulator pulls in uvicorn, boto3 and moto: import it only when asked for.
    if name == "Emulator":
        from .server import Emulator

        return Emulator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
