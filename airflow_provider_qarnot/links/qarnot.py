"""`QarnotTaskLink`: the "Qarnot task" button of a task instance, pointing at the task in the Qarnot console."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

#: XCom keys the operator and the sensor push as soon as the Qarnot task is known.
XCOM_TASK_UUID = "qarnot_task_uuid"
XCOM_TASK_URL = "qarnot_task_url"


class QarnotTaskLink(BaseOperatorLink):
    """Link to the Qarnot console page of the task this task instance submitted or watched.

    The URL is the one pushed to XCom under `qarnot_task_url` (built from the connection's
    `console_url` extra), so the link needs no connection and works on failed tasks too.
    """

    name = "Qarnot task"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """The console URL, or "" when the task instance pushed none (e.g. it failed before submitting)."""
        from airflow.sdk.execution_time.xcom import XCom

        url = XCom.get_value(ti_key=ti_key, key=XCOM_TASK_URL)
        return url if isinstance(url, str) else ""


__all__ = ["XCOM_TASK_URL", "XCOM_TASK_UUID", "QarnotTaskLink"]
