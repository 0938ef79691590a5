"""Fault injection: seeded rules that add latency, answer 429/5xx, or drop the TCP connection.

A rule matches ``"METHOD /path-glob"`` (``*`` = one path segment, ``**`` = any depth, a bare ``*`` =
every request; the ``/v1`` prefix and trailing slashes are ignored). The first matching rule decides.
Each request draws one number from a ``random.Random(seed)``: ``drop_before``, ``rate_429``,
``rate_500``, ``rate_502``, ``rate_503``, ``rate_504`` and ``drop_after`` are consecutive slices of [0, 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import threading
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .exceptions import ValidationProblem

OUTCOMES = ("drop_before", "rate_429", "rate_500", "rate_502", "rate_503", "rate_504", "drop_after")
STATUS_OF = {"rate_429": 429, "rate_500": 500, "rate_502": 502, "rate_503": 503, "rate_504": 504}
#: Largest ``latency_ms``, ``retry_after`` and ``max_faults`` (an Int32, like the API's numbers).
MAX_FAULT_NUMBER = 2**31 - 1
REASONS = {
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass
class FaultRule:
    """One fault rule. Rates are probabilities in [0, 1]; their sum must not exceed 1.

    ``latency_ms`` delays every matching request; ``retry_after`` is the ``Retry-After`` header (seconds)
    sent with 429s, written as an integer when whole and as a decimal otherwise (``0.05``: handy in tests,
    though RFC 9110 only allows integers); ``max_faults`` caps how many faults this rule injects.
    """

    pattern: str = "*"
    latency_ms: float = 0.0
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_502: float = 0.0
    rate_503: float = 0.0
    rate_504: float = 0.0
    drop_before: float = 0.0
    drop_after: float = 0.0
    retry_after: float = 1.0
    max_faults: int | None = None
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _method: str = field(init=False, repr=False, compare=False)
    _injected: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._method, self._regex = compile_pattern(self.pattern)
        total = 0.0
        for name in OUTCOMES:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:  # compared before any float conversion: 10**400 must not overflow
                raise ValueError(f"{name} must be between 0 and 1")
            total += float(value)
        if total > 1.0 + 1e-9:
            raise ValueError("the fault rates of a rule add up to more than 1")
        for name in ("latency_ms", "retry_after", "max_faults"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= MAX_FAULT_NUMBER:
                raise ValueError(f"{name} must be between 0 and {MAX_FAULT_NUMBER}")

    def matches(self, method: str, path: str) -> bool:
        """Does the rule apply to this request (path already normalised)?"""
        return (self._method == "*" or self._method == method) and self._regex.match(path) is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON form (as accepted by :func:`rule_from_dict`)."""
        data = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        return data

    @property
    def exhausted(self) -> bool:
        """Has the rule injected its ``max_faults``?"""
        return self.max_faults is not None and self._injected >= self.max_faults


def normalise_path(path: str) -> str:
    """Strip the ``/v1`` prefix and trailing slashes: ``/v1/tasks/`` → ``/tasks``."""
    if path == "/v1" or path.startswith("/v1/"):
        path = path[3:]
    path = path.rstrip("/")
    return path or "/"


def compile_pattern(pattern: str) -> tuple[str, re.Pattern[str]]:
    """``"GET /tasks/*"`` → (method, path regex)."""
    text = pattern.strip()
    if text in ("", "*"):
        return "*", re.compile(r".*")
    parts = text.split(None, 1)
    if len(parts) == 2:
        method, path = parts[0].upper(), parts[1].strip()
    elif parts[0].startswith("/"):
        method, path = "*", parts[0]
    else:
        method, path = parts[0].upper(), "**"
    if path in ("*", "**"):
        return method, re.compile(r".*")
    path = normalise_path(path if path.startswith("/") else "/" + path)
    regex = ""
    index = 0
    while index < len(path):
        if path.startswith("**", index):
            regex += ".*"
            index += 2
        elif path[index] == "*":
            regex += "[^/]*"
            index += 1
        else:
            regex += re.escape(path[index])
            index += 1
    return method, re.compile(regex + r"\Z")


def rule_from_dict(data: Any) -> FaultRule:
    """Build a rule from JSON (keys are the dataclass field names, case-insensitive)."""
    if not isinstance(data, dict):
        raise ValidationProblem.single("Rules", "Each rule must be a JSON object.")
    allowed = {f.name.lower(): f.name for f in fields(FaultRule) if f.init}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = allowed.get(str(key).lower())
        if name is None:
            raise ValidationProblem.single("Rules", f"Unknown fault rule field '{key}'.")
        if name == "pattern":
            if not isinstance(value, str):
                raise ValidationProblem.single("Rules", "pattern must be a string.")
        elif name == "max_faults":
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValidationProblem.single("Rules", "max_faults must be a non-negative integer or null.")
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValidationProblem.single("Rules", f"{name} must be a number.")
        kwargs[name] = value
    try:
        return FaultRule(**kwargs)
    except (ValueError, re.error) as exc:
        raise ValidationProblem.single("Rules", str(exc)) from exc


def parse_fault_config(data: Any) -> tuple[list[FaultRule], int | None, bool | None]:
    """``{"seed", "rules", "credits_exhausted"}`` (a bare list = rules only) → (rules, seed, credits flag)."""
    if isinstance(data, list):
        return [rule_from_dict(item) for item in data], None, None
    if not isinstance(data, dict):
        raise ValidationProblem.single("$", 'Expected {"seed": int, "rules": [...], "credits_exhausted": bool}.')
    lowered = {str(k).lower(): v for k, v in data.items()}
    rules_raw = lowered.get("rules", [])
    if rules_raw is None:
        rules_raw = []
    if not isinstance(rules_raw, list):
        raise ValidationProblem.single("Rules", "rules must be an array.")
    seed = lowered.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValidationProblem.single("Seed", "seed must be an integer.")
    credits = lowered.get("credits_exhausted", lowered.get("creditsexhausted"))
    if credits is not None and not isinstance(credits, bool):
        raise ValidationProblem.single("Credits_exhausted", "credits_exhausted must be a boolean.")
    return [rule_from_dict(item) for item in rules_raw], seed, credits


def load_fault_argument(text: str) -> tuple[list[FaultRule], int | None, bool | None]:
    """The CLI's ``--faults``: inline JSON, or the path of a JSON file."""
    stripped = text.strip()
    if not stripped.startswith(("{", "[")):
        with open(stripped, encoding="utf-8") as handle:
            stripped = handle.read()
    return parse_fault_config(json.loads(stripped))


@dataclass
class Decision:
    """What to do with one request."""

    latency: float = 0.0
    outcome: str | None = None
    retry_after: float = 1.0

    @property
    def status(self) -> int | None:
        """HTTP status to answer instead of acting, if any."""
        return STATUS_OF.get(self.outcome or "")


class FaultInjector:
    """The current rules and the seeded random source; counts what it injected."""

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._seed = seed
        self._rng = random.Random(seed)
        self.injected: dict[str, int] = {name: 0 for name in OUTCOMES}

    @property
    def rules(self) -> list[FaultRule]:
        """A copy of the rules."""
        with self._lock:
            return list(self._rules)

    @property
    def seed(self) -> int:
        """The seed last set."""
        return self._seed

    def set_rules(self, rules: list[FaultRule], seed: int | None = None) -> None:
        """Replace the rules (and re-seed when ``seed`` is given)."""
        with self._lock:
            self._rules = list(rules)
            if seed is not None:
                self._seed = seed
                self._rng = random.Random(seed)

    def clear(self) -> None:
        """No more faults."""
        self.set_rules([])

    def total_injected(self) -> int:
        """How many faults were injected."""
        with self._lock:
            return sum(self.injected.values())

    def reset_counts(self) -> None:
        """Zero the counters."""
        with self._lock:
            self.injected = {name: 0 for name in OUTCOMES}

    def decide(self, method: str, path: str) -> Decision | None:
        """The fate of a request (``path`` normalised), or None when no rule matches."""
        with self._lock:
            for rule in self._rules:
                if not rule.matches(method, path):
                    continue
                decision = Decision(latency=rule.latency_ms / 1000.0, retry_after=rule.retry_after)
                if rule.exhausted:
                    return decision
                draw = self._rng.random()
                edge = 0.0
                for name in OUTCOMES:
                    edge += float(getattr(rule, name))
                    if draw < edge:
                        decision.outcome = name
                        rule._injected += 1
                        self.injected[name] += 1
                        break
                return decision
        return None


async def drop_connection(send: Any) -> bool:
    """Close the client's TCP connection without answering (uvicorn: through the request cycle's transport).

    Returns False if the server gives no way to reach the transport.
    """
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        return False
    transport.abort()
    for _ in range(3):  # let uvicorn notice the connection loss (so it does not log an error)
        await asyncio.sleep(0)
    if cycle is not None and hasattr(cycle, "disconnected"):
        with contextlib.suppress(AttributeError):
            cycle.disconnected = True
    return True
