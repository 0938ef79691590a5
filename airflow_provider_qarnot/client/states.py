"""The one place that knows the Qarnot task states and what they mean.

The client, the trigger, the sensor and the operator all ask this module whether a state is final
or successful, so a new or unknown state is handled the same way everywhere: as not final.
"""

from __future__ import annotations

from typing import Final

UNSUBMITTED: Final = "UnSubmitted"
SUBMITTED: Final = "Submitted"
PARTIALLY_DISPATCHED: Final = "PartiallyDispatched"
FULLY_DISPATCHED: Final = "FullyDispatched"
PARTIALLY_EXECUTING: Final = "PartiallyExecuting"
FULLY_EXECUTING: Final = "FullyExecuting"
DOWNLOADING_RESULTS: Final = "DownloadingResults"
UPLOADING_RESULTS: Final = "UploadingResults"
PENDING_CANCEL: Final = "PendingCancel"
PENDING_DELETE: Final = "PendingDelete"
SUCCESS: Final = "Success"
FAILURE: Final = "Failure"
CANCELLED: Final = "Cancelled"

#: States from which the task can no longer change: the only states `wait()` returns on.
FINAL_STATES: Final[frozenset[str]] = frozenset({SUCCESS, FAILURE, CANCELLED})

#: States of a task that is queued or running; an abort would stop it.
ACTIVE_STATES: Final[frozenset[str]] = frozenset(
    {
        SUBMITTED,
        PARTIALLY_DISPATCHED,
        FULLY_DISPATCHED,
        PARTIALLY_EXECUTING,
        FULLY_EXECUTING,
        DOWNLOADING_RESULTS,
        UPLOADING_RESULTS,
    }
)

#: Transitional states on the way to Cancelled or to deletion: not final.
PENDING_STATES: Final[frozenset[str]] = frozenset({PENDING_CANCEL, PENDING_DELETE})

KNOWN_STATES: Final[frozenset[str]] = FINAL_STATES | ACTIVE_STATES | PENDING_STATES | {UNSUBMITTED}


def normalize_state(state: str | None) -> str | None:
    """Return the canonical spelling of a state, tolerating other letter cases (`success` → `Success`)."""
    if state is None:
        return None
    for known in KNOWN_STATES:
        if known.lower() == state.lower():
            return known
    return state


def is_final(state: str | None) -> bool:
    """Whether the task can no longer change (Success, Failure or Cancelled); unknown states are not final."""
    return normalize_state(state) in FINAL_STATES


def is_success(state: str | None) -> bool:
    """Whether the task ended with every instance successful."""
    return normalize_state(state) == SUCCESS


def is_active(state: str | None) -> bool:
    """Whether the task is queued or running, so that aborting it would stop work."""
    return normalize_state(state) in ACTIVE_STATES
