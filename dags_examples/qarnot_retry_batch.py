"""A batch job whose instances can fail: Qarnot's per-instance retries, then Airflow's retries with reattach."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, task

from airflow_provider_qarnot.hooks.qarnot import QarnotHook
from airflow_provider_qarnot.operators.qarnot import QarnotSubmitTaskOperator

FAILURE_PERCENT = int(os.environ.get("QARNOT_RETRY_BATCH_FAILURE_PERCENT", "30"))
INSTANCES = 6

# Each instance fails FAILURE_PERCENT% of the time, like a node that is preempted or a flaky download.
FLAKY_CMD = (
    "n=$(od -An -N1 -tu1 /dev/urandom | tr -d ' '); "
    f'if [ $((n % 100)) -lt {FAILURE_PERCENT} ]; then echo "instance $INSTANCE_ID: transient failure"; exit 1; fi; '
    'echo "instance $INSTANCE_ID processed its batch"'
)

with DAG(
    dag_id="qarnot_retry_batch",
    schedule=None,
    catchup=False,
    tags=["qarnot", "example"],
    doc_md=f"""
### A batch job that survives failures

**process_batch** runs {INSTANCES} instances, each failing {FAILURE_PERCENT}% of the time.

* Qarnot retries a failed instance itself up to `max_retries_per_instance` times, inside the same
  Qarnot task (nothing is resubmitted).
* If the Qarnot task still ends in *Failure*, the operator raises `AirflowException` naming the failed
  instances and their errors, and Airflow's `retries` apply: the retry submits a new Qarnot task.
* If a worker dies while a Qarnot task is running, the retry *reattaches* to that task (found by the
  task instance's identity tag) instead of submitting a duplicate.
* Errors that a retry cannot fix (bad token, unknown profile, missing bucket, invalid arguments) raise
  `AirflowFailException`: the task fails at once, without retrying.

**report** runs whatever happened (`trigger_rule="all_done"`) and logs the outcome.
""",
) as dag:
    process_batch = QarnotSubmitTaskOperator(
        task_id="process_batch",
        name="retry-batch {{ run_id }}",
        profile="docker-batch",
        instance_count=INSTANCES,
        constants={"DOCKER_REPO": "library/debian", "DOCKER_TAG": "stable-slim", "DOCKER_CMD": FLAKY_CMD},
        max_retries_per_instance=3,
        retries=2,
        retry_delay=timedelta(seconds=5),
        deferrable=True,
        poll_interval=2,
        timeout=600,
    )

    @task(trigger_rule="all_done")
    def report(**context: Any) -> dict[str, Any]:
        """Log how the batch's Qarnot task ended."""
        uuid = context["ti"].xcom_pull(task_ids="process_batch", key="qarnot_task_uuid")
        if not uuid:
            print("process_batch submitted no Qarnot task")
            return {"task_uuid": None, "state": None}
        summary = QarnotHook().get_summary(uuid)
        print(f"Qarnot task {uuid} ended in state {summary.state}")
        return {"task_uuid": uuid, "state": summary.state}

    process_batch >> report()
