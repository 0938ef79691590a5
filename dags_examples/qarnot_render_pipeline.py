"""Render an animation on Qarnot: one instance per frame, then a contact sheet of every frame.

Runs unchanged on Qarnot and on the local emulator; only the `qarnot_default` connection differs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param, task

from airflow_provider_qarnot.hooks.qarnot import QarnotHook
from airflow_provider_qarnot.operators.qarnot import QarnotSubmitTaskOperator

RENDER_DIR = Path(__file__).resolve().parent / "render"
SCENE = json.loads((RENDER_DIR / "scene.json").read_text())
FRAMES = int(SCENE["frames"])
RESOURCE_BUCKET = os.environ.get("QARNOT_RENDER_RESOURCE_BUCKET", "airflow-render-input")
RESULT_BUCKET = os.environ.get("QARNOT_RENDER_RESULT_BUCKET", "airflow-render-output")
DEFAULT_OUTPUT = os.environ.get("QARNOT_RENDER_OUTPUT_DIR", str(Path.home() / "qarnot-render-output"))
RUN_PREFIX = "render/{{ run_id | replace(':', '-') | replace('+', '-') }}/"

with DAG(
    dag_id="qarnot_render_pipeline",
    schedule=None,
    catchup=False,
    tags=["qarnot", "example"],
    params={"output_dir": Param(DEFAULT_OUTPUT, type="string", description="Local directory for the frames")},
    doc_md=f"""
### Render an animation on Qarnot

1. **upload_scene** uploads `render/renderer.py`, `render/png.py` and `render/scene.json` to the
   `{RESOURCE_BUCKET}` bucket under a prefix unique to the run.
2. **render_frames** submits one Qarnot task (profile `docker-batch`, image `python:3.11-slim`) with
   {FRAMES} instances; instance *n* ray-traces frame *n*. It defers to the triggerer while Qarnot
   works, and downloads the frames into `params.output_dir/<run>/` when the task succeeds.
3. **assemble_contact_sheet** checks that every frame is there and is a valid PNG, and tiles them
   into `contact_sheet.png`.

On the emulator the same `DOCKER_CMD` runs on the host (the image is not used).
""",
) as dag:

    @task
    def upload_scene(**context: Any) -> str:
        """Upload the renderer and the scene as the task's resources, under this run's prefix."""
        prefix = context["task"].render_template(RUN_PREFIX, context)
        storage = QarnotHook().get_conn().storage
        storage.create_bucket(RESOURCE_BUCKET)
        storage.create_bucket(RESULT_BUCKET)
        files = [RENDER_DIR / name for name in ("renderer.py", "png.py", "scene.json")]
        for path in files:
            storage.upload_file(RESOURCE_BUCKET, path, prefix + "input/" + path.name)
        return prefix

    render_frames = QarnotSubmitTaskOperator(
        task_id="render_frames",
        name="render {{ dag.dag_id }} {{ run_id }}",
        profile="docker-batch",
        instance_count=FRAMES,
        constants={
            "DOCKER_REPO": "python",
            "DOCKER_TAG": "3.11-slim",
            "DOCKER_CMD": "python3 renderer.py --scene scene.json",
        },
        resource_buckets=[
            {"bucket_name": RESOURCE_BUCKET, "prefix": RUN_PREFIX + "input/", "strip_prefix": RUN_PREFIX + "input/"}
        ],
        result_bucket=RESULT_BUCKET,
        results_bucket_prefix=RUN_PREFIX + "output/",
        results_whitelist=r"^frames/.*\.png$",
        download_results_to="{{ params.output_dir }}/{{ run_id | replace(':', '-') | replace('+', '-') }}",
        deferrable=True,
        poll_interval=2,
        timeout=900,
        retries=2,
    )

    @task
    def assemble_contact_sheet(output_dir: str, **context: Any) -> dict[str, Any]:
        """Check every frame and tile them into one contact sheet image."""
        import sys

        sys.path.insert(0, str(RENDER_DIR))
        from png import read_png, write_png

        run_dir = Path(output_dir) / context["run_id"].replace(":", "-").replace("+", "-")
        frames_dir = run_dir / "frames"
        frames = []
        for n in range(FRAMES):
            path = frames_dir / f"frame_{n:04d}.png"
            if not path.is_file():
                raise FileNotFoundError(f"frame {n} is missing: {path}")
            frames.append(read_png(path))
        width, height = frames[0][0], frames[0][1]
        if any((w, h) != (width, height) for w, h, _ in frames):
            raise ValueError("frames do not all have the same size")
        columns = 4
        rows_count = (FRAMES + columns - 1) // columns
        sheet = [bytearray(width * columns * 3) for _ in range(height * rows_count)]
        for index, (_, _, pixels) in enumerate(frames):
            top, left = (index // columns) * height, (index % columns) * width * 3
            for y, row in enumerate(pixels):
                sheet[top + y][left : left + width * 3] = row
        sheet_path = run_dir / "contact_sheet.png"
        write_png(sheet_path, width * columns, height * rows_count, sheet)
        read_png(sheet_path)
        return {"frames": FRAMES, "frames_dir": str(frames_dir), "contact_sheet": str(sheet_path)}

    upload_scene() >> render_frames >> assemble_contact_sheet("{{ params.output_dir }}")
