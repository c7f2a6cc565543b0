"""Publishing validated events to their topics (used by the SDK and the services)."""

import asyncio
import logging
from types import TracebackType
from typing import Any, Self

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from producer.kafka_config import producer_kwargs
from producer.settings import Settings
from producer.topic_admin import ensure_topics
from schemas.base import Event
from schemas.codec import encode
from schemas.topics import ALL_TOPICS, TopicSpec

log = logging.getLogger(__name__)
_TOPIC_OF: dict[type[Event], TopicSpec] = {m: t for t in ALL_TOPICS for m in t.messages}

DeliveryFuture = asyncio.Future[RecordMetadata]


def topic_of(event: Event) -> TopicSpec:
    return _TOPIC_OF[type(event)]


class EventPublisher:
    """An aiokafka producer that sends each event, validated, to its topic.

    ``acks=all``, compression and batching from settings; idempotent where the cluster
    supports it. Records are keyed by :meth:`Event.kafka_key` (the session for
    clickstream), so one key's events stay in one partition, in order: aiokafka keeps at
    most one batch in flight per partition.
    """

    def __init__(self, settings: Settings, *, client_suffix: str = "producer") -> None:
        self.settings = settings
        self._client_suffix = client_suffix
        self._producer: AIOKafkaProducer | None = None

    async def start(self, *, create_topics: bool | None = None) -> Self:
        if self._producer is not None:
            return self
        if self.settings.create_topics if create_topics is None else create_topics:
            await ensure_topics(self.settings)
        producer = AIOKafkaProducer(
            **producer_kwargs(self.settings, client_suffix=self._client_suffix)
        )
        await producer.start()
        self._producer = producer
        return self

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("publisher is not started: call start() or use `async with`")
        return self._producer

    async def send(
        self, event: Event, *, headers: list[tuple[str, bytes]] | None = None
    ) -> DeliveryFuture:
        """Queue ``event`` for sending; the returned future resolves once the broker acked.

        Raises :class:`schemas.InvalidEvent` before anything is sent if the event would be
        refused by the consumer (e.g. over the size limit).
        """
        value = encode(event)
        return await self.producer.send(
            self.settings.topic(topic_of(event)),
            value=value,
            key=event.kafka_key().encode(),
            headers=headers,
        )

    async def publish(self, event: Event) -> RecordMetadata:
        """Send one event and wait for the broker's acknowledgement."""
        return await (await self.send(event))

    async def send_raw(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> DeliveryFuture:
        """Send bytes as they are (dead letters keep the original record)."""
        return await self.producer.send(topic, value=value, key=key, headers=headers)

    async def flush(self) -> None:
        """Wait until every queued record is acknowledged (or failed)."""
        await self.producer.flush()

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()  # flushes pending records first

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def event_fields(**fields: Any) -> dict[str, Any]:
    """Drop unset optional arguments so the model's defaults apply."""
    return {k: v for k, v in fields.items() if v is not None}
