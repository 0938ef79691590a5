"""End to end: what the README's first command does, on a real Airflow stack and the emulator, checked."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tools import render_demo

sys.path.insert(0, str(Path(render_demo.ROOT / "dags_examples" / "render")))
from png import read_png


@pytest.mark.timeout(900)
def test_render_pipeline_runs_through_the_triggerer(tmp_path: Path) -> None:
    root = tmp_path / "stack"
    output = tmp_path / "output"
    result = render_demo.run(root, output, timeout=600)

    assert result["state"] == "success", result.get("progress")
    assert result["ok"]
    render = result["progress"]["render_frames"]
    assert "deferred" in render.states_seen, render.states_seen
    assert render.states_seen[-1] == "success"

    trigger_logs = list((root / "airflow" / "logs").rglob("task_id=render_frames/*.log.trigger.*.log"))
    assert trigger_logs, "the deferred task left a triggerer log section"
    trigger_text = "\n".join(p.read_text() for p in trigger_logs)
    assert "Trigger fired event" in trigger_text
    assert "'status': 'success'" in trigger_text

    summary = result["summary"]
    frames = sorted(Path(summary["frames_dir"]).glob("frame_*.png"))
    assert len(frames) == summary["frames"] >= 8
    sizes = {read_png(f)[:2] for f in frames}
    assert len(sizes) == 1
    width, height = sizes.pop()
    sheet_w, sheet_h, _ = read_png(summary["contact_sheet"])
    assert sheet_w == width * 4
    assert sheet_h == height * ((len(frames) + 3) // 4)
    assert Path(summary["contact_sheet"]).is_relative_to(output)

    assert result["leftovers"] == [], "every process was stopped"
    assert result["needed_sigkill"] == []
