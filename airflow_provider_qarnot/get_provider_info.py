"""Provider metadata that Airflow's ProvidersManager discovers through the entry point."""

from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    """Describe the provider, its connection type and form, and every hook, operator, sensor, trigger and link."""
    return {
        "package-name": "airflow-provider-qarnot",
        "name": "Qarnot",
        "description": "Submit, watch and collect Qarnot cloud HPC tasks from Airflow.",
    }
