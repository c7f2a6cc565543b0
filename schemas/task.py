"""Fine-tuning tasks (``finetune.tasks``) and their status changes (``finetune.status``)."""

from enum import StrEnum
from typing import Literal

from pydantic import Field

from schemas.base import Event
from schemas.fields import Id, Meta, MethodName, Timestamp
from schemas.limits import MAX_DETAIL_LENGTH


class TaskStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    DONE = "done"
    CANCELED = "canceled"
    ERROR = "error"

    @property
    def is_final(self) -> bool:
        return self in (TaskStatus.DONE, TaskStatus.CANCELED, TaskStatus.ERROR)


class TaskEvent(Event):
    """One fine-tuning task over one frozen batch. ``task_id`` is derived from the batch."""

    event_type = "task"
    type: Literal["task"]
    task_id: Id
    batch_id: Id
    fine_tuning_method: MethodName
    metadata: Meta = Field(default_factory=dict)
    idempotency_key: Id | None = None
    session_count: int = Field(ge=0)
    created_at: Timestamp

    def kafka_key(self) -> str:
        return self.task_id


class StatusEvent(Event):
    """A task changed status."""

    event_type = "status"
    type: Literal["status"]
    task_id: Id
    batch_id: Id
    fine_tuning_method: MethodName
    status: TaskStatus
    created_at: Timestamp
    updated_at: Timestamp
    detail: str = Field(default="", max_length=MAX_DETAIL_LENGTH)

    def kafka_key(self) -> str:
        return self.task_id
