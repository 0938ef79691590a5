"""Persistence for ``--state-dir``: tasks, jobs and pools as JSON rows in ``state.db`` (sqlite).

State lives in memory; every change marks the object dirty and a writer thread saves dirty objects
within ~0.2 s (one transaction per batch), and once more at shutdown. Reads never touch sqlite.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

KINDS = ("task", "job", "pool")
FLUSH_INTERVAL = 0.2


def _private_file(path: Path) -> None:
    """Create ``path`` readable by its owner only (task constants and output live in it), or make it so."""
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    os.chmod(path, 0o600)


class StateStore:
    """Write-behind sqlite store of the model's objects."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = directory / "state.db"
        _private_file(self.path)
        for suffix in ("-wal", "-shm"):  # sqlite gives them the database's mode; fix any older ones
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                os.chmod(side, 0o600)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA secure_delete=ON")  # replaced rows leave no old bytes in the file
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS objects (kind TEXT NOT NULL, uuid TEXT NOT NULL, data TEXT NOT NULL,"
            " PRIMARY KEY (kind, uuid))"
        )
        self._db_lock = threading.Lock()
        self._dirty: dict[tuple[str, str], bool] = {}
        self._dirty_lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._model_lock: AbstractContextManager[Any] | None = None
        self._snapshot: Callable[[str, str], dict[str, Any] | None] | None = None

    def load(self) -> dict[str, list[dict[str, Any]]]:
        """Every saved object, by kind, in insertion order."""
        result: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
        with self._db_lock:
            rows = self._db.execute("SELECT kind, data FROM objects ORDER BY rowid").fetchall()
        for kind, data in rows:
            if kind in result:
                try:
                    result[kind].append(json.loads(data))
                except ValueError:
                    log.warning("skipping a corrupt %s row in %s", kind, self.path)
        return result

    def mark(self, kind: str, uuid: str, deleted: bool = False) -> None:
        """Note that an object changed (``deleted``: it is gone). Cheap; called with the model lock held."""
        with self._dirty_lock:
            self._dirty[(kind, uuid)] = deleted

    def start(
        self, model_lock: AbstractContextManager[Any], snapshot: Callable[[str, str], dict[str, Any] | None]
    ) -> None:
        """Start the writer; ``snapshot(kind, uuid)`` gives an object's saved form (under ``model_lock``)."""
        self._model_lock = model_lock
        self._snapshot = snapshot
        self._thread = threading.Thread(target=self._loop, name="qarnot-emulator-store", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stopped.wait(FLUSH_INTERVAL):
            try:
                self.flush()
            except Exception:
                log.exception("saving the emulator state failed")

    def flush(self) -> None:
        """Save every dirty object now."""
        if self._model_lock is None or self._snapshot is None:
            return
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, {}
        if not dirty:
            return
        states: dict[tuple[str, str], dict[str, Any] | None] = {}
        with self._model_lock:
            for (kind, uuid), deleted in dirty.items():
                states[(kind, uuid)] = None if deleted else self._snapshot(kind, uuid)
        upserts = [(kind, uuid, json.dumps(data)) for (kind, uuid), data in states.items() if data is not None]
        deletes = [(kind, uuid) for (kind, uuid), data in states.items() if data is None]
        with self._db_lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany("INSERT OR REPLACE INTO objects (kind, uuid, data) VALUES (?, ?, ?)", upserts)
                self._db.executemany("DELETE FROM objects WHERE kind = ? AND uuid = ?", deletes)
                self._db.execute("COMMIT")
            except Exception:
                self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        """Final save, then close the database."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()
        with self._db_lock:
            self._db.close()
