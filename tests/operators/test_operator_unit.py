"""QarnotSubmitTaskOperator without running a DAG: argument handling, the spec it builds, event checks."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_provider_qarnot.hooks.qarnot import TaskInstanceIdentity
from airflow_provider_qarnot.links.qarnot import QarnotTaskLink
from airflow_provider_qarnot.operators.qarnot import QarnotSubmitTaskOperator, seconds


def context(map_index: int = -1, try_number: int = 2, max_tries: int = 3) -> dict[str, Any]:
    ti = SimpleNamespace(
        dag_id="d", task_id="t", run_id="r", map_index=map_index, try_number=try_number, max_tries=max_tries
    )
    return {"ti": ti}


def operator(**kwargs: Any) -> QarnotSubmitTaskOperator:
    kwargs.setdefault("profile", "docker-batch")
    kwargs.setdefault("instance_count", 2)
    return QarnotSubmitTaskOperator(task_id="t", **kwargs)


def test_templated_fields_and_renderers() -> None:
    op = operator()
    for name in ("name", "profile", "instance_count", "advanced_ranges", "constants", "constraints", "tags"):
        assert name in op.template_fields
    for name in ("labels", "resource_buckets", "result_bucket", "download_results_to", "qarnot_conn_id"):
        assert name in op.template_fields
    assert op.template_fields_renderers["constants"] == "json"
    assert op.template_fields_renderers["resource_buckets"] == "json"
    assert any(isinstance(link, QarnotTaskLink) for link in op.operator_extra_links)


def test_spec_carries_the_task_instance_identity() -> None:
    op = operator(tags=["mine"], labels={"team": "fx"}, resources=["in-bucket"], result_bucket="out")
    spec = op.build_spec(context())
    identity = TaskInstanceIdentity("d", "t", "r", -1)
    assert spec.name == "d.t"
    assert list(spec.tags) == ["mine", identity.tag]
    assert spec.labels == {"team": "fx", **identity.labels(2)}
    assert list(spec.resources) == ["in-bucket"]
    assert spec.result_bucket == "out"
    assert operator().build_spec(context(map_index=3)).name == "d.t[3]"
    assert operator(name="custom").build_spec(context()).name == "custom"


def test_resource_buckets_and_airflow_resources_do_not_clash() -> None:
    op = operator(resource_buckets=[{"bucket_name": "in", "prefix": "p/"}], resources={"cpus": 2})
    assert op.resources is not None
    assert op.resources.cpus.qty == 2
    assert list(op.build_spec(context()).resources) == [{"bucket_name": "in", "prefix": "p/"}]
    with pytest.raises(TypeError, match="resource_buckets"):
        operator(resource_buckets=["a"], resources=["b"])


def test_rendered_strings_are_decoded() -> None:
    op = operator(instance_count="4", constants='{"DOCKER_CMD": "echo hi"}', tags='["a", "b"]')
    spec = op.build_spec(context())
    assert spec.instance_count == 4
    assert dict(spec.constants) == {"DOCKER_CMD": "echo hi"}
    assert list(spec.tags)[:2] == ["a", "b"]


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"instance_count": 0}, "instance_count"),
        ({"instance_count": "many"}, "instance_count"),
        ({"constants": {"N": 3}}, "constants['N']"),
        ({"constants": "{broken"}, "constants"),
        ({"profile": None}, "profile"),
        ({"resources": [{"prefix": "x"}]}, "resources"),
        ({"results_whitelist": "("}, "results_whitelist"),
        ({"labels": ["not", "a", "map"]}, "labels"),
    ],
)
def test_bad_task_fields_name_the_argument(kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises(AirflowFailException, match=named.replace("[", r"\[").replace("]", r"\]")):
        operator(**kwargs).build_spec(context())


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"poll_interval": 0}, "poll_interval"),
        ({"poll_interval": 99999}, "poll_interval"),
        ({"poll_interval": "often"}, "poll_interval"),
        ({"timeout": -5}, "timeout"),
        ({"timeout": timedelta(0)}, "timeout"),
        ({"timeout": float("inf")}, "timeout must be a positive, finite"),
        ({"timeout": float("nan")}, "timeout must be a positive, finite"),
        ({"timeout": 1e15}, "timeout must be at most"),
        ({"poll_interval": float("inf")}, "poll_interval must be a positive, finite"),
        ({"log_tail_lines": -1}, "log_tail_lines"),
        ({"download_results_to": ""}, "download_results_to"),
    ],
)
def test_bad_waiting_arguments_name_the_argument(kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises(AirflowFailException, match=named):
        operator(**kwargs).check_arguments()


def test_waiting_arguments_accept_timedeltas() -> None:
    assert operator(poll_interval=timedelta(seconds=5), timeout=timedelta(minutes=2)).check_arguments() == (5.0, 120.0)
    assert seconds(None, "timeout") is None


@pytest.mark.parametrize("event", [None, {}, {"status": "weird", "task_uuid": "u"}, {"status": "success"}])
def test_malformed_events_are_rejected(event: Any) -> None:
    with pytest.raises(AirflowException, match="Unexpected event"):
        operator().execute_complete({}, event)


def test_rendered_booleans_are_read_as_booleans() -> None:
    """Without render_template_as_native_obj a template renders "False", and bool("False") is True."""
    op = operator(
        auto_delete="False",
        export_credentials="false",
        upload_results_on_cancellation="True",
        wait_for_pool_resources_synchronization="None",
    )
    body = op.build_spec(context()).to_json()
    assert body["autoDeleteOnCompletion"] is False
    assert body["privileges"]["exportApiAndStorageCredentialsInEnvironment"] is False
    assert body["uploadResultsOnCancellation"] is True
    assert body["waitForPoolResourcesSynchronization"] is None
    with pytest.raises(AirflowFailException, match="export_credentials must be true or false"):
        operator(export_credentials="maybe").build_spec(context())
    with pytest.raises(AirflowFailException, match="auto_delete"):
        operator(auto_delete=1).build_spec(context())


def test_rendered_auto_delete_is_checked_against_completion_ttl() -> None:
    with pytest.raises(AirflowFailException, match="completion_ttl"):
        operator(auto_delete="True").check_arguments()
    operator(auto_delete="False").check_arguments()


def test_rendered_integers_and_python_literals_are_decoded() -> None:
    op = operator(
        max_total_retries="3",
        max_retries_per_instance=" 2 ",
        max_time_queue_seconds="None",
        constants="{'DOCKER_CMD': 'echo hi'}",  # how Jinja writes {{ params.constants }}
        tags="['a', 'b']",
    )
    spec = op.build_spec(context())
    assert (spec.max_total_retries, spec.max_retries_per_instance, spec.max_time_queue_seconds) == (3, 2, None)
    assert dict(spec.constants) == {"DOCKER_CMD": "echo hi"}
    assert list(spec.tags)[:2] == ["a", "b"]
    with pytest.raises(AirflowFailException, match="max_total_retries"):
        operator(max_total_retries="three").build_spec(context())


def test_a_deployment_id_keeps_deployments_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    default = operator().build_spec(context())
    monkeypatch.setenv("AIRFLOW__QARNOT__DEPLOYMENT_ID", "staging")
    staging = operator().build_spec(context())
    tag = TaskInstanceIdentity("d", "t", "r", -1).tag
    assert tag in default.tags
    assert tag not in staging.tags
    assert TaskInstanceIdentity("d", "t", "r", -1, deployment="staging").tag in staging.tags
    assert staging.labels["airflow_deployment"] == "staging"


def test_deferrable_is_off_unless_asked() -> None:
    assert operator().deferrable is False  # [operators] default_deferrable is False in the test config
    assert operator(deferrable=True).deferrable is True


@pytest.mark.parametrize("text", ["+-5", "²", "3.5"])
def test_rendered_integers_that_are_not_integers_name_the_argument(text: str) -> None:
    with pytest.raises(AirflowFailException, match="max_total_retries"):
        operator(max_total_retries=text).build_spec(context())
