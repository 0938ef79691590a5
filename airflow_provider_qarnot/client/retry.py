"""The client's one retry policy: which failures are transient and how long to wait between attempts."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Final

#: HTTP statuses that mean "try again later": the request was not, or may not have been, acted on.
TRANSIENT_STATUSES: Final[frozenset[int]] = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded by a number of attempts and by a total time.

    `Retry-After` from the server wins over the computed delay when it fits in the total time; a longer one
    is cut to `max_delay`.
    """

    max_attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_elapsed: float = 120.0
    jitter: bool = True
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_elapsed < 0:
            raise ValueError("retry delays must not be negative")

    @classmethod
    def none(cls) -> RetryPolicy:
        """A policy that makes exactly one attempt."""
        return cls(max_attempts=1)

    def to_dict(self) -> dict[str, Any]:
        """The policy as JSON-serializable primitives (for trigger kwargs)."""
        return {
            "max_attempts": self.max_attempts,
            "base_delay": self.base_delay,
            "max_delay": self.max_delay,
            "max_elapsed": self.max_elapsed,
            "jitter": self.jitter,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RetryPolicy:
        """Rebuild a policy from :meth:`to_dict` output."""
        return cls(
            max_attempts=int(data.get("max_attempts", 6)),
            base_delay=float(data.get("base_delay", 0.5)),
            max_delay=float(data.get("max_delay", 30.0)),
            max_elapsed=float(data.get("max_elapsed", 120.0)),
            jitter=bool(data.get("jitter", True)),
        )

    def backoff(self, attempt: int) -> float:
        """The delay after failed attempt number `attempt` (1-based), before jitter is applied."""
        delay: float = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        if self.jitter:
            delay = self.rng.uniform(delay / 2, delay)
        return delay

    def next_delay(self, attempt: int, elapsed: float, retry_after: float | None = None) -> float | None:
        """Seconds to sleep before the next attempt, or None when no attempt is left."""
        if attempt >= self.max_attempts:
            return None
        # The server's Retry-After is honoured as given when it fits in the total time (not cut to max_delay:
        # retrying sooner than asked earns another 429). When it does not fit, the policy's own backoff
        # still tries before giving up: an abort must not be dropped because a server asked for a minute.
        if retry_after is not None and elapsed + max(retry_after, 0.0) <= self.max_elapsed:
            return max(retry_after, 0.0)
        delay = self.backoff(attempt) if retry_after is None else min(max(retry_after, 0.0), self.max_delay)
        if elapsed + delay > self.max_elapsed:
            return None
        return delay


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Read a `Retry-After` header given as seconds or as an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
