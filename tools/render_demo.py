"""The README's first command: the render pipeline on a real local Airflow stack and the Qarnot emulator.

Starts the emulator and Airflow (api-server, scheduler, dag-processor, triggerer on sqlite, in .run/),
triggers `qarnot_render_pipeline`, shows progress, prints where the frames and the contact sheet are,
and stops every process it started, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

from tools.airflow_stack import LocalStack, TaskProgress

ROOT = Path(__file__).resolve().parent.parent
DAG_ID = "qarnot_render_pipeline"


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _show(run_state: str, progress: dict[str, TaskProgress], elapsed: float, last: list[str]) -> None:
    line = "  ".join(f"{key}={entry.state or 'none'}" for key, entry in sorted(progress.items()))
    text = f"[{elapsed:6.1f}s] run={run_state}  {line}"
    if text.split("] ", 1)[1] != (last[0] if last else ""):
        print(text, flush=True)
        last[:] = [text.split("] ", 1)[1]]


def run(root: Path, output_dir: Path, timeout: float) -> dict[str, Any]:
    """Run the pipeline once; returns what happened (used by the end-to-end test too)."""
    token = "demo-" + secrets.token_hex(16)
    stack = LocalStack(root, ROOT / "dags_examples", token)
    stack.reset()
    result: dict[str, Any] = {"ok": False}
    started = time.monotonic()
    try:
        print("== starting the Qarnot emulator", flush=True)
        stack.start_emulator("--cores", "2")
        print(f"   API {stack.emulator_url}, storage {stack.storage_url}", flush=True)
        print("== creating the Airflow database (sqlite, in .run/)", flush=True)
        stack.migrate()
        print("== starting api-server, scheduler, dag-processor and triggerer", flush=True)
        stack.start_airflow()
        stack.wait_until_healthy()
        stack.wait_for_dag(DAG_ID)
        print(f"== Airflow is up at {stack.api_url}; triggering {DAG_ID}", flush=True)
        run_id = stack.trigger(DAG_ID, {"output_dir": str(output_dir)})
        last: list[str] = []
        state, progress = stack.wait_for_run(
            DAG_ID, run_id, timeout=timeout, on_progress=lambda s, p, e: _show(s, p, e, last)
        )
        result.update({"run_id": run_id, "state": state, "progress": progress})
        if state != "success":
            for name in ("scheduler", "triggerer"):
                print(f"--- last lines of {name} log:\n{stack.service(name).tail(20)}")
            return result
        summary = stack.xcom(DAG_ID, run_id, "assemble_contact_sheet")
        summary = json.loads(summary) if isinstance(summary, str) else summary
        result.update({"ok": True, "summary": summary, "task_uuid": stack.xcom(DAG_ID, run_id, "render_frames")})
        result["triggerer_log"] = stack.service("triggerer").tail(400)
        print(f"== done in {time.monotonic() - started:.0f}s: {summary['frames']} frames rendered on the emulator")
        print(f"   frames:        {summary['frames_dir']}")
        print(f"   contact sheet: {summary['contact_sheet']}")
        return result
    finally:
        print("== stopping every process", flush=True)
        killed = stack.stop()
        result["needed_sigkill"] = killed
        result["leftovers"] = stack.leftovers()
        result["emulator_log"] = (
            (root / "logs" / "emulator.log").read_text(errors="replace")[-5000:]
            if (root / "logs" / "emulator.log").exists()
            else ""
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT / ".run", help="where the stack keeps its state")
    parser.add_argument("--output", type=Path, default=ROOT / "render-output", help="where frames are written")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the DAG run")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        result = run(args.root.resolve(), args.output.resolve(), args.timeout)
    except KeyboardInterrupt:
        print("interrupted; every process was stopped", file=sys.stderr)
        return 130
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
