"""Async iterators over what clicktune publishes, for downstream indexers and dashboards.

>>> async with subscribe_model_ready(settings, group_id="my-indexer") as events:
...     async for event in events:
...         reembed_catalog(event.model_uri)

With a ``group_id``, an event's offset is committed only once the caller is done with it:
when it asks for the next event, or leaves the ``async with`` block without an exception.
A crash or an exception mid-handling redelivers the event (at-least-once). Without a
``group_id`` nothing is committed (viewers such as ``clicktune watch``).
"""

import logging
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Generic, Self, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from producer.kafka_config import consumer_kwargs
from producer.settings import Settings
from producer.topic_admin import ensure_topics
from schemas.base import Event
from schemas.codec import InvalidEvent, decode
from schemas.model_ready import ModelReadyEvent
from schemas.task import StatusEvent
from schemas.topics import MODELS, STATUS, TopicSpec

log = logging.getLogger(__name__)
E = TypeVar("E", bound=Event)


class Subscription(Generic[E]):
    """Events of one topic, optionally filtered; commits after the caller has handled."""

    def __init__(
        self,
        settings: Settings,
        spec: TopicSpec,
        *,
        group_id: str | None,
        from_beginning: bool = True,
        keep: Callable[[E], bool] | None = None,
        poll_timeout_ms: int = 500,
    ) -> None:
        self.settings = settings
        self.spec = spec
        self.group_id = group_id
        self._from_beginning = from_beginning
        self._keep = keep
        self._poll_timeout_ms = poll_timeout_ms
        self._consumer: AIOKafkaConsumer | None = None
        self._buffer: deque[tuple[TopicPartition, ConsumerRecord[bytes, bytes]]] = deque()
        self._handed_out: tuple[TopicPartition, int] | None = None

    async def start(self) -> Self:
        if self._consumer is not None:
            return self
        if self.settings.create_topics:
            await ensure_topics(self.settings, (self.spec,))
        consumer = AIOKafkaConsumer(
            self.settings.topic(self.spec),
            **consumer_kwargs(
                self.settings,
                group_id=self.group_id,
                client_suffix=f"subscriber-{self.spec.key}",
                from_beginning=self._from_beginning,
            ),
        )
        await consumer.start()
        self._consumer = consumer
        return self

    async def aclose(self, *, commit_last: bool = True) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        try:
            if commit_last:
                await self._commit_handed_out(consumer)
        finally:
            await consumer.stop()

    async def _commit_handed_out(self, consumer: AIOKafkaConsumer) -> None:
        if self._handed_out is not None and self.group_id is not None:
            tp, offset = self._handed_out
            await consumer.commit({tp: OffsetAndMetadata(offset + 1, "")})
        self._handed_out = None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> E:
        await self.start()
        consumer = self._consumer
        assert consumer is not None
        # The caller is back for more: the previous event is handled.
        await self._commit_handed_out(consumer)
        while True:
            while not self._buffer:
                batches = await consumer.getmany(timeout_ms=self._poll_timeout_ms, max_records=100)
                for tp, records in batches.items():
                    self._buffer.extend((tp, r) for r in records)
            tp, record = self._buffer.popleft()
            event: E | None
            try:
                event = decode(self.spec, record.value)  # type: ignore[assignment]
            except InvalidEvent as exc:
                # We only read this topic, so it is not ours to dead-letter: say so, move on.
                log.warning(
                    "skipping invalid record %s[%d]@%d: %s",
                    tp.topic,
                    tp.partition,
                    record.offset,
                    exc,
                )
                event = None
            self._handed_out = (tp, record.offset)
            if event is not None and (self._keep is None or self._keep(event)):
                return event
            await self._commit_handed_out(consumer)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose(commit_last=exc_type is None)


def subscribe_model_ready(
    settings: Settings | None = None,
    *,
    group_id: str | None = "clicktune-indexers",
    fine_tuning_method: str | None = None,
    from_beginning: bool = True,
) -> Subscription[ModelReadyEvent]:
    """Model-ready events, optionally of one ``fine_tuning_method``."""
    keep = None
    if fine_tuning_method is not None:

        def keep(e: ModelReadyEvent) -> bool:
            return e.fine_tuning_method == fine_tuning_method

    return Subscription(
        settings or Settings.load(),
        MODELS,
        group_id=group_id,
        from_beginning=from_beginning,
        keep=keep,
    )


def subscribe_status(
    settings: Settings | None = None,
    *,
    group_id: str | None = None,
    task_id: str | None = None,
    from_beginning: bool = True,
) -> Subscription[StatusEvent]:
    """Task status changes, optionally of one task."""
    keep = None
    if task_id is not None:

        def keep(e: StatusEvent) -> bool:
            return e.task_id == task_id

    return Subscription(
        settings or Settings.load(),
        STATUS,
        group_id=group_id,
        from_beginning=from_beginning,
        keep=keep,
    )
