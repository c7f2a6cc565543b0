"""The topics clicktune reads and writes, with their keys and message types.

One table drives the runtime decoder, topic creation and the AsyncAPI document.
"""

from dataclasses import dataclass, field

from schemas.base import Event
from schemas.clickstream import ClickEvent, IrrelevantEvent, ItemEvent, SearchEvent
from schemas.model_ready import ModelReadyEvent
from schemas.release import ReleaseEvent
from schemas.task import StatusEvent, TaskEvent


@dataclass(frozen=True)
class TopicSpec:
    """A logical topic. ``name`` is the default; deployments may rename or prefix it."""

    key: str  # logical name, used in settings (``topic_<key>``) and the AsyncAPI channel id
    name: str
    description: str
    key_description: str
    messages: tuple[type[Event], ...] = field(default=())
    partitions: int = 1
    #: Topics whose payload is not a clicktune event (the DLQ keeps the original bytes).
    raw: bool = False


CLICKSTREAM = TopicSpec(
    key="events",
    name="clickstream.events",
    description="Search sessions and catalog updates published by search services.",
    key_description="session_id; item_id for `item` events.",
    messages=(SearchEvent, ClickEvent, IrrelevantEvent, ItemEvent),
    partitions=6,
)
RELEASE = TopicSpec(
    key="release",
    name="clickstream.release",
    description="Batch-release requests: freeze the open batch and emit a fine-tuning task.",
    key_description="idempotency_key, or event_id when there is none.",
    messages=(ReleaseEvent,),
)
TASKS = TopicSpec(
    key="tasks",
    name="finetune.tasks",
    description="Fine-tuning tasks, one per released batch, consumed by trainer workers.",
    key_description="task_id.",
    messages=(TaskEvent,),
    partitions=3,
)
STATUS = TopicSpec(
    key="status",
    name="finetune.status",
    description="Every status change of a fine-tuning task.",
    key_description="task_id.",
    messages=(StatusEvent,),
    partitions=3,
)
MODELS = TopicSpec(
    key="models",
    name="models.ready",
    description="A new champion model is registered; indexers re-embed with it.",
    key_description="fine_tuning_method.",
    messages=(ModelReadyEvent,),
)
DLQ = TopicSpec(
    key="dlq",
    name="clickstream.dlq",
    description="Messages that could not be applied: original key and bytes, reason in headers.",
    key_description="The original record's key.",
    raw=True,
)

ALL_TOPICS: tuple[TopicSpec, ...] = (CLICKSTREAM, RELEASE, TASKS, STATUS, MODELS, DLQ)
TOPICS_BY_KEY = {t.key: t for t in ALL_TOPICS}
EVENT_TYPES: dict[str, type[Event]] = {m.event_type: m for t in ALL_TOPICS for m in t.messages}
