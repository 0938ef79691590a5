"""--state-dir holds task data: it is private to its owner and never contains the API token."""

from __future__ import annotations

import json
import sqlite3
import stat
import time
from pathlib import Path

from airflow_provider_qarnot.emulator import Emulator

from .conftest import Api

TOKEN = "tok-9d2e-never-on-disk"


def _files_holding(directory: Path, secret: str) -> list[str]:
    return [str(p) for p in directory.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_fresh_cursors_are_saved_without_the_token(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Emulator(token=TOKEN, state_dir=state) as first:
        api = Api(first)
        uuid = api.submit("echo one; sleep 0.5")
        deadline = time.monotonic() + 10
        text = ""
        while "one" not in text:
            assert time.monotonic() < deadline, "no output"
            text += api.post(f"/tasks/{uuid}/stdout").text
            time.sleep(0.05)
        api.wait(uuid)  # the final state saves the task, cursor included
        time.sleep(0.5)  # let the writer flush to state.db (and its WAL)
        assert _files_holding(state, TOKEN) == []
    assert _files_holding(state, TOKEN) == []
    assert _mode(state) == 0o700
    assert _mode(state / "state.db") == 0o600
    assert _mode(state / "s3") == 0o700

    with Emulator(token=TOKEN, state_dir=state) as second:
        api = Api(second)
        assert api.post(f"/tasks/{uuid}/stdout").text == ""  # the cursor survived the restart
        assert api.get(f"/tasks/{uuid}/stdout").text == "one\n"


def test_cursors_saved_by_older_emulators_are_kept_and_rewritten_without_the_token(tmp_path: Path) -> None:
    with Emulator(token=TOKEN, state_dir=tmp_path) as first:
        api = Api(first)
        uuid = api.submit("echo hello")
        api.wait(uuid)
    db = sqlite3.connect(tmp_path / "state.db")
    with db:  # what an older emulator wrote: the cursor keyed by the raw token
        (data,) = db.execute("SELECT data FROM objects WHERE kind = 'task' AND uuid = ?", (uuid,)).fetchone()
        row = json.loads(data)
        row["stdout"]["cursors"] = {TOKEN: len(b"hello\n")}
        db.execute("UPDATE objects SET data = ? WHERE kind = 'task' AND uuid = ?", (json.dumps(row), uuid))
    db.close()
    assert _files_holding(tmp_path, TOKEN)

    with Emulator(token=TOKEN, state_dir=tmp_path) as second:
        api = Api(second)
        assert api.post(f"/tasks/{uuid}/stdout").text == ""
    assert _files_holding(tmp_path, TOKEN) == []


def test_an_existing_world_readable_database_is_made_private(tmp_path: Path) -> None:
    with Emulator(token=TOKEN, state_dir=tmp_path):
        pass
    (tmp_path / "state.db").chmod(0o644)
    with Emulator(token=TOKEN, state_dir=tmp_path):
        assert _mode(tmp_path / "state.db") == 0o600
