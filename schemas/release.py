"""Batch release: freezes the open batch of sessions and asks for a fine-tuning task."""

from typing import Literal

from pydantic import Field

from schemas.base import Event
from schemas.fields import Id, Meta, MethodName

DEFAULT_METHOD = "default"


class ReleaseEvent(Event):
    """Freeze a batch and emit one fine-tuning task for it.

    Without ``batch_id`` the currently open batch is released. Releasing an already released
    ``batch_id``, or repeating an ``idempotency_key``, returns the same batch and task.
    """

    event_type = "release"
    type: Literal["release"]
    fine_tuning_method: MethodName = DEFAULT_METHOD
    batch_id: Id | None = Field(default=None, description="Absent: release the open batch now.")
    metadata: Meta = Field(default_factory=dict)
    idempotency_key: Id | None = None

    def kafka_key(self) -> str:
        return self.idempotency_key or self.event_id
