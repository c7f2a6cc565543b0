"""clicktune's event contracts: pydantic v2 models, topics, the wire codec and the spec."""

from schemas.base import SCHEMA_VERSION, Event
from schemas.clickstream import (
    ClickEvent,
    ClickstreamEvent,
    IrrelevantEvent,
    ItemEvent,
    SearchEvent,
    SearchResult,
)
from schemas.codec import InvalidEvent, decode, encode
from schemas.dead_letter import DeadLetterReason
from schemas.model_ready import ModelMetrics, ModelReadyEvent
from schemas.release import DEFAULT_METHOD, ReleaseEvent
from schemas.task import StatusEvent, TaskEvent, TaskStatus
from schemas.topics import ALL_TOPICS, TopicSpec

__all__ = [
    "ALL_TOPICS",
    "DEFAULT_METHOD",
    "SCHEMA_VERSION",
    "ClickEvent",
    "ClickstreamEvent",
    "DeadLetterReason",
    "Event",
    "InvalidEvent",
    "IrrelevantEvent",
    "ItemEvent",
    "ModelMetrics",
    "ModelReadyEvent",
    "ReleaseEvent",
    "SearchEvent",
    "SearchResult",
    "StatusEvent",
    "TaskEvent",
    "TaskStatus",
    "TopicSpec",
    "decode",
    "encode",
]
