"""DAGs of the chaos suite (`python -m tools.chaos`), run on a real Airflow stack and the emulator in simulate mode.

Every Qarnot task here is simulated: `EMULATOR_DURATION_S` says how long it runs and `EMULATOR_OUTCOME`
how it ends, both templated from the DAG run's params, so a run's conf decides what Qarnot will do.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Param, task

from airflow_provider_qarnot.operators.qarnot import QarnotSubmitTaskOperator
from airflow_provider_qarnot.sensors.qarnot import QarnotTaskSensor

#: The simulated task's outcome and duration, from the DAG run's params (a run's conf overrides them).
SIMULATED = {"EMULATOR_OUTCOME": "{{ params.outcome }}", "EMULATOR_DURATION_S": "{{ params.duration }}"}
POLL = 1
RETRY_DELAY = timedelta(seconds=1)
OUTCOME = Param("success", enum=["success", "failure"], description="How every Qarnot task of the run ends")

with DAG(
    dag_id="chaos_pipeline",
    schedule=None,
    catchup=False,
    max_active_runs=64,
    tags=["qarnot", "chaos"],
    params={"outcome": OUTCOME, "duration": Param("3", type="string")},
    doc_md="""
Three tasks under API faults: **compute** waits for its Qarnot task in the triggerer; **submit** only
submits one; **watch** is a deferrable sensor on submit's task. All of them retry.
""",
) as pipeline:
    QarnotSubmitTaskOperator(
        task_id="compute",
        profile="docker-batch",
        instance_count=2,
        constants=SIMULATED,
        deferrable=True,
        poll_interval=POLL,
        timeout=600,
        retries=2,
        retry_delay=RETRY_DELAY,
    )
    submit = QarnotSubmitTaskOperator(
        task_id="submit",
        profile="docker-batch",
        instance_count=1,
        constants=SIMULATED,
        wait_for_completion=False,
        deferrable=False,
        retries=2,
        retry_delay=RETRY_DELAY,
    )
    watch = QarnotTaskSensor(
        task_id="watch",
        task_uuid="{{ ti.xcom_pull(task_ids='submit') }}",
        deferrable=True,
        poke_interval=POLL,
        timeout=600,
        retries=2,
        retry_delay=RETRY_DELAY,
    )
    submit >> watch

with DAG(
    dag_id="chaos_fanout",
    schedule=None,
    catchup=False,
    max_active_runs=8,
    max_active_tasks=256,
    tags=["qarnot", "chaos"],
    params={"count": Param(4, type="integer", minimum=1), "duration": Param("20", type="string")},
    doc_md="`count` deferred Qarnot tasks at once (a mapped operator), each running `duration` seconds.",
) as fanout:

    @task
    def instances(**context: Any) -> list[dict[str, str]]:
        """One constants mapping per mapped task."""
        params = context["params"]
        return [
            {"EMULATOR_OUTCOME": "success", "EMULATOR_DURATION_S": str(params["duration"]), "INDEX": str(i)}
            for i in range(int(params["count"]))
        ]

    QarnotSubmitTaskOperator.partial(
        task_id="wait",
        profile="docker-batch",
        instance_count=1,
        deferrable=True,
        poll_interval=2,
        timeout=900,
        retries=1,
        retry_delay=RETRY_DELAY,
    ).expand(constants=instances())

#: Runs long on the first try only: a cleared task's next try finishes quickly.
LONG_ON_FIRST_TRY = {"EMULATOR_OUTCOME": "success", "EMULATOR_DURATION_S": "{{ 300 if ti.try_number == 1 else 3 }}"}
LONG = {"EMULATOR_OUTCOME": "success", "EMULATOR_DURATION_S": "300"}

with DAG(
    dag_id="chaos_kill",
    schedule=None,
    catchup=False,
    tags=["qarnot", "chaos"],
    doc_md="""
User actions on running Qarnot tasks: **to_fail** is marked failed while deferred, **to_clear** is
cleared while deferred, **times_out** (deferred) and **times_out_here** (on the worker) pass their
8 s `timeout`. Each Qarnot task must be aborted.
""",
) as kill:
    QarnotSubmitTaskOperator(
        task_id="to_fail",
        profile="docker-batch",
        instance_count=1,
        constants=LONG,
        deferrable=True,
        poll_interval=POLL,
    )
    # One retry: when a trigger fires very soon after the deferral, Airflow 3.3's scheduler may apply the
    # deferring try's late "success" executor event to the resumed try and fail it; the retry then
    # reuses the Qarnot task that succeeded (the race is counted by the chaos suite, see tools/chaos.py).
    QarnotSubmitTaskOperator(
        task_id="to_clear",
        profile="docker-batch",
        instance_count=1,
        constants=LONG_ON_FIRST_TRY,
        deferrable=True,
        poll_interval=POLL,
        retries=1,
        retry_delay=RETRY_DELAY,
    )
    for task_id, deferrable in (("times_out", True), ("times_out_here", False)):
        QarnotSubmitTaskOperator(
            task_id=task_id,
            profile="docker-batch",
            instance_count=1,
            constants=LONG,
            deferrable=deferrable,
            poll_interval=POLL,
            timeout=8,
        )

with DAG(
    dag_id="chaos_worker_kill",
    schedule=None,
    catchup=False,
    tags=["qarnot", "chaos"],
    params={"duration": Param("25", type="string")},
    doc_md="**hold** waits on the worker; the chaos suite SIGKILLs its task process, and the retry must reattach.",
) as worker_kill:
    QarnotSubmitTaskOperator(
        task_id="hold",
        profile="docker-batch",
        instance_count=1,
        constants={"EMULATOR_OUTCOME": "success", "EMULATOR_DURATION_S": "{{ params.duration }}"},
        deferrable=False,
        wait_for_completion=True,
        poll_interval=POLL,
        retries=1,
        retry_delay=timedelta(seconds=2),
    )
