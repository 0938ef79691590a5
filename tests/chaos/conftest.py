"""The chaos suite's short run (`tools.chaos`): one Airflow stack and one emulator for every stack scenario."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import chaos


@pytest.fixture(scope="module")
def chaos_report(tmp_path_factory: pytest.TempPathFactory) -> chaos.Report:
    """Every stack scenario at `chaos.SHORT` sizes, on one stack that is stopped before the tests look.

    The bad-input table is left out here: `test_bad_inputs.py` runs it case by case.
    """
    root: Path = tmp_path_factory.mktemp("chaos") / "stack"
    return chaos.run(chaos.SHORT, root, bad_inputs=False, echo=print)
