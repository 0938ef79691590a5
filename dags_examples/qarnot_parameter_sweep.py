"""A parameter sweep on Qarnot: one task per parameter set, submitted without waiting, watched by a sensor."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, task

from airflow_provider_qarnot.hooks.qarnot import QarnotHook
from airflow_provider_qarnot.operators.qarnot import QarnotSubmitTaskOperator
from airflow_provider_qarnot.sensors.qarnot import QarnotTaskSensor

SWEEP_DIR = Path(__file__).resolve().parent / "sweep"
BUCKET = os.environ.get("QARNOT_SWEEP_BUCKET", "airflow-sweep")
PARAMETER_SETS = [{"SAMPLES": str(samples), "SEED": str(seed)} for seed, samples in enumerate((2_000, 20_000, 50_000))]
INSTANCES = 4
RUN_PREFIX = "results/{{ run_id | replace(':', '-') | replace('+', '-') }}/"

with DAG(
    dag_id="qarnot_parameter_sweep",
    schedule=None,
    catchup=False,
    tags=["qarnot", "example"],
    doc_md=f"""
### Monte Carlo parameter sweep

* **upload_code** puts `sweep/montecarlo.py` in the `{BUCKET}` bucket.
* **submit_sweep** is mapped over {len(PARAMETER_SETS)} parameter sets (dynamic task mapping); each
  mapped instance submits one Qarnot task of {INSTANCES} instances and returns at once
  (`wait_for_completion=False`), so no worker slot is held while Qarnot computes.
* **wait_sweep** is a deferrable `QarnotTaskSensor`, mapped over the submitted task uuids: all of them
  wait in the triggerer, sharing one poller.
* **collect** downloads every task's results and combines the estimates of pi.
""",
) as dag:

    @task
    def upload_code() -> str:
        """Upload the sweep's program once per run."""
        storage = QarnotHook().get_conn().storage
        storage.create_bucket(BUCKET)
        storage.upload_file(BUCKET, SWEEP_DIR / "montecarlo.py", "code/montecarlo.py")
        return "code/"

    submit_sweep = QarnotSubmitTaskOperator.partial(
        task_id="submit_sweep",
        profile="docker-batch",
        instance_count=INSTANCES,
        resource_buckets=[{"bucket_name": BUCKET, "prefix": "code/", "strip_prefix": "code/"}],
        result_bucket=BUCKET,
        wait_for_completion=False,
        retries=1,
    ).expand_kwargs(
        [
            {
                "name": f"sweep seed={p['SEED']} samples={p['SAMPLES']}",
                "constants": {
                    "DOCKER_REPO": "python",
                    "DOCKER_TAG": "3.11-slim",
                    "DOCKER_CMD": "python3 montecarlo.py",
                    **p,
                },
                "results_bucket_prefix": RUN_PREFIX + p["SEED"] + "/",
            }
            for p in PARAMETER_SETS
        ]
    )

    wait_sweep = QarnotTaskSensor.partial(task_id="wait_sweep", deferrable=True, poke_interval=2, timeout=900).expand(
        task_uuid=submit_sweep.output
    )

    @task
    def collect(task_uuids: list[str]) -> dict[str, Any]:
        """Download each task's estimates and combine them into one value of pi."""
        hook = QarnotHook()
        inside = samples = 0
        with tempfile.TemporaryDirectory() as tmp:
            for uuid in task_uuids:
                for path in hook.download_results(hook.get_task(uuid), Path(tmp) / uuid):
                    data = json.loads(path.read_text())
                    inside += data["inside"]
                    samples += data["samples"]
        if samples != INSTANCES * sum(int(p["SAMPLES"]) for p in PARAMETER_SETS):
            raise ValueError(f"expected every instance's samples, got {samples}")
        return {"pi": 4 * inside / samples, "samples": samples, "tasks": len(task_uuids)}

    upload_code() >> submit_sweep
    wait_sweep >> collect(submit_sweep.output)
