"""Bounded circular buffers for task stdout/stderr, with consuming "fresh" cursors.

Like the real service, a buffer keeps only its last ``capacity`` bytes: a big output loses its
beginning, and a reader of the fresh endpoint gets only what is still retained.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

DEFAULT_CAPACITY = 1024 * 1024
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")


def reader_id(token: str) -> str:
    """The key of a reader's fresh cursor: a sha256 of its token, so saved state never holds the token."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class OutputBuffer:
    """Append-only byte stream of which only the last ``capacity`` bytes are retained.

    Offsets are absolute (bytes written since creation), so a cursor survives truncation.
    """

    __slots__ = ("_data", "_start", "capacity", "cursors", "rehashed")

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._data = bytearray()
        self._start = 0
        self.cursors: dict[str, int] = {}
        self.rehashed = False  # loaded with cursors keyed by raw tokens (older emulators): save it again

    @property
    def end(self) -> int:
        """Absolute offset just past the last byte written."""
        return self._start + len(self._data)

    def write(self, chunk: bytes) -> None:
        """Append bytes, dropping the oldest ones beyond capacity."""
        if not chunk:
            return
        self._data += chunk
        overflow = len(self._data) - self.capacity
        if overflow > 0:
            del self._data[:overflow]
            self._start += overflow

    def read_all(self) -> str:
        """Everything still retained, decoded as UTF-8 (invalid bytes replaced)."""
        return self._data.decode("utf-8", errors="replace")

    def read_fresh(self, token: str) -> str:
        """What was written since the previous call with this ``token``, then move its cursor to the end."""
        reader = reader_id(token)
        cursor = max(self.cursors.get(reader, 0), self._start)
        chunk = bytes(self._data[cursor - self._start :])
        self.cursors[reader] = self.end
        return chunk.decode("utf-8", errors="replace")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able snapshot for persistence."""
        return {
            "start": self._start,
            "data": base64.b64encode(bytes(self._data)).decode("ascii"),
            "cursors": dict(self.cursors),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], capacity: int = DEFAULT_CAPACITY) -> OutputBuffer:
        """Rebuild a buffer saved by :meth:`to_dict`."""
        buffer = cls(capacity)
        buffer._start = int(data.get("start", 0))
        buffer._data = bytearray(base64.b64decode(data.get("data", "")))
        cursors = {str(k): int(v) for k, v in dict(data.get("cursors", {})).items()}
        buffer.rehashed = not all(_DIGEST_RE.fullmatch(k) for k in cursors)
        buffer.cursors = {(k if _DIGEST_RE.fullmatch(k) else reader_id(k)): v for k, v in cursors.items()}
        return buffer


class LineJoiner:
    """Holds an instance's partial last line so the task-wide buffer receives whole lines only.

    Several instances write into one task stream at once; joining on newlines keeps their lines intact.
    """

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        """Return the complete lines now available (possibly empty)."""
        data = self._pending + chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            self._pending = data
            if len(self._pending) > 64 * 1024:  # a very long line: pass it on anyway
                self._pending = b""
                return data
            return b""
        self._pending = data[cut + 1 :]
        return data[: cut + 1]

    def flush(self) -> bytes:
        """Return whatever partial line is left."""
        data, self._pending = self._pending, b""
        return data
