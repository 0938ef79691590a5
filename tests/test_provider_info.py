"""Provider discovery: the entry point, the runtime schema, and what ProvidersManager makes of it."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from airflow_provider_qarnot.get_provider_info import get_provider_info


def test_provider_info_matches_the_runtime_schema() -> None:
    import airflow
    import jsonschema

    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    info = get_provider_info()
    jsonschema.validate(info, schema)
    assert info["package-name"] == "airflow-provider-qarnot"


def test_every_declared_class_and_module_imports() -> None:
    info = get_provider_info()
    for kind in ("hooks", "operators", "sensors", "triggers"):
        for entry in info[kind]:
            for module in entry["python-modules"]:
                importlib.import_module(module)
    paths = [info["connection-types"][0]["hook-class-name"], *info["extra-links"]]
    for path in paths:
        module, _, name = path.rpartition(".")
        assert hasattr(importlib.import_module(module), name), path


def test_connection_form_metadata() -> None:
    conn = get_provider_info()["connection-types"][0]
    assert conn["connection-type"] == "qarnot"
    assert conn["hook-name"] == "Qarnot"
    assert set(conn["conn-fields"]) == {"storage_url", "verify", "timeout", "console_url", "allow_insecure_http"}
    behaviour = conn["ui-field-behaviour"]
    assert set(behaviour["hidden-fields"]) == {"login", "schema", "port"}
    assert behaviour["relabeling"] == {"host": "API URL", "password": "API token"}
    assert behaviour["placeholders"]["host"] == "https://api.qarnot.com"


@pytest.fixture(scope="module")
def providers_manager():
    from airflow.providers_manager import ProvidersManager

    return ProvidersManager()


def test_providers_manager_discovers_the_provider(providers_manager) -> None:
    provider = providers_manager.providers["airflow-provider-qarnot"]
    assert provider.data["name"] == "Qarnot"
    from airflow_provider_qarnot import __version__

    assert provider.version == __version__


def test_providers_manager_knows_the_connection_type(providers_manager) -> None:
    behaviour = providers_manager.field_behaviours["qarnot"]
    assert "login" in behaviour["hidden_fields"]
    assert behaviour["relabeling"]["host"] == "API URL"
    widgets = providers_manager.connection_form_widgets
    assert {"extra__qarnot__storage_url", "extra__qarnot__verify", "extra__qarnot__timeout"} <= set(widgets)
    assert "airflow_provider_qarnot.links.qarnot.QarnotTaskLink" in providers_manager.extra_links_class_names
    triggers = {t.trigger_class_name: t.package_name for t in providers_manager.trigger}
    assert triggers["airflow_provider_qarnot.triggers.qarnot"] == "airflow-provider-qarnot"
    assert providers_manager.provider_configs  # the [qarnot] config section is registered
    assert "qarnot" in dict(providers_manager.provider_configs)["airflow-provider-qarnot"]


def test_runtime_hook_lookup() -> None:
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    hook = ProvidersManagerTaskRuntime().hooks["qarnot"]
    assert hook is not None
    assert hook.hook_class_name == "airflow_provider_qarnot.hooks.qarnot.QarnotHook"
    assert hook.connection_id_attribute_name == "qarnot_conn_id"
    assert hook.hook_name == "Qarnot"


def test_the_airflow_cli_lists_the_provider_and_its_connection_type(tmp_path: Path) -> None:
    """What an operator checks after installing: `airflow providers list` and `airflow providers hooks`."""
    import os
    import subprocess
    import sys

    airflow = Path(sys.executable).with_name("airflow")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}  # a user's shell, not the tests'
    env.update({"AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"})
    listed = subprocess.run(
        [str(airflow), "providers", "list", "--output", "json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert listed.returncode == 0, listed.stderr[-2000:]
    packages = {p["package_name"]: p for p in json.loads(listed.stdout)}
    assert packages["airflow-provider-qarnot"]["description"]
    hooks = subprocess.run(
        [str(airflow), "providers", "hooks", "--output", "json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert hooks.returncode == 0, hooks.stderr[-2000:]
    by_type = {h["connection_type"]: h for h in json.loads(hooks.stdout)}
    assert by_type["qarnot"]["class"] == "airflow_provider_qarnot.hooks.qarnot.QarnotHook"
