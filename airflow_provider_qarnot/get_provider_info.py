"""Provider metadata that Airflow's ProvidersManager discovers through the `apache_airflow_provider` entry point.

The connection form (extra fields, relabelled and hidden standard fields) is declared here, as Airflow
3.2+ reads it without importing the hook.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_qarnot import __version__

INTEGRATION = "Qarnot"


def get_provider_info() -> dict[str, Any]:
    """Describe the provider, its connection type and form, and every hook, operator, sensor, trigger and link."""
    return {
        "package-name": "airflow-provider-qarnot",
        "name": "Qarnot",
        "description": "Submit, watch and collect Qarnot cloud HPC tasks from Airflow.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": INTEGRATION,
                "external-doc-url": "https://qarnot.com/documentation",
                "tags": ["service"],
            }
        ],
        "connection-types": [
            {
                "connection-type": "qarnot",
                "hook-class-name": "airflow_provider_qarnot.hooks.qarnot.QarnotHook",
                "hook-name": "Qarnot",
                "conn-fields": {
                    "storage_url": {
                        "label": "Storage URL",
                        "description": "The S3 endpoint of the buckets; empty: the one the API advertises.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "verify": {
                        "label": "TLS verification",
                        "description": "true, false, or the path of a CA bundle file.",
                        "schema": {"type": ["string", "null"], "default": "true"},
                    },
                    "timeout": {
                        "label": "Request timeout",
                        "description": "Seconds per HTTP request, or 'connect,read' (e.g. 10,60).",
                        "schema": {"type": ["string", "null"]},
                    },
                    "allow_insecure_http": {
                        "label": "Allow plain http",
                        "description": "Accept an http:// API URL on a non-loopback host (the token then travels "
                        "unencrypted). Off by default; loopback hosts such as the emulator never need it.",
                        "schema": {"type": ["boolean", "null"], "default": False},
                    },
                    "console_url": {
                        "label": "Console URL",
                        "description": "Where the task links point (default https://console.qarnot.com).",
                        "schema": {"type": ["string", "null"], "default": "https://console.qarnot.com"},
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["login", "schema", "port"],
                    "relabeling": {"host": "API URL", "password": "API token"},
                    "placeholders": {"host": "https://api.qarnot.com"},
                },
            }
        ],
        "hooks": [{"integration-name": INTEGRATION, "python-modules": ["airflow_provider_qarnot.hooks.qarnot"]}],
        "operators": [
            {"integration-name": INTEGRATION, "python-modules": ["airflow_provider_qarnot.operators.qarnot"]}
        ],
        "sensors": [{"integration-name": INTEGRATION, "python-modules": ["airflow_provider_qarnot.sensors.qarnot"]}],
        "triggers": [{"integration-name": INTEGRATION, "python-modules": ["airflow_provider_qarnot.triggers.qarnot"]}],
        "extra-links": ["airflow_provider_qarnot.links.qarnot.QarnotTaskLink"],
        "config": {
            "qarnot": {
                "description": "Defaults of the Qarnot provider.",
                "options": {
                    "shared_polling": {
                        "description": "Whether deferred Qarnot tasks are polled through one shared, batched "
                        "poller per connection in the triggerer (one request per 100 tasks per interval) "
                        "instead of one request per task per interval.",
                        "version_added": "0.1.0",
                        "type": "boolean",
                        "example": "False",
                        "default": "True",
                    },
                    "min_event_delay": {
                        "description": "Seconds a Qarnot trigger waits after it starts before it fires, even when "
                        "the task is already over. Airflow 3.3 can fail a task whose trigger fires within seconds "
                        "of its deferral (a late executor event, apache/airflow#72716); 0 turns the hold off.",
                        "version_added": "0.1.0",
                        "type": "float",
                        "example": "0",
                        "default": "5.0",
                    },
                    "deployment_id": {
                        "description": "A name for this Airflow deployment, part of the identity each Qarnot task "
                        "is tagged with. Set it (e.g. 'prod', 'staging') when several Airflow deployments share a "
                        "Qarnot account and may run the same DAG ids and run ids: a retry then never reattaches "
                        "to, or aborts, the other deployment's tasks.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "prod",
                        "default": "",
                    },
                },
            }
        },
    }
