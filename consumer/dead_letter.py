"""Sending refused records to the dead-letter topic with the reason in headers."""

from datetime import UTC, datetime

from consumer.metrics import ConsumerMetrics
from producer.event_publisher import DeliveryFuture, EventPublisher
from schemas import dead_letter as dl
from schemas.topics import DLQ


class DeadLetters:
    def __init__(self, publisher: EventPublisher, metrics: ConsumerMetrics) -> None:
        self.publisher = publisher
        self.metrics = metrics
        self.topic = publisher.settings.topic(DLQ)

    async def send(
        self,
        *,
        key: bytes | None,
        value: bytes | None,
        reason: str,
        detail: str,
        topic: str,
        partition: int,
        offset: int,
    ) -> DeliveryFuture:
        headers = [
            (dl.HEADER_REASON, reason.encode()),
            (dl.HEADER_DETAIL, detail[:1024].encode("utf-8", errors="replace")),
            (dl.HEADER_SOURCE_TOPIC, topic.encode()),
            (dl.HEADER_SOURCE_PARTITION, str(partition).encode()),
            (dl.HEADER_SOURCE_OFFSET, str(offset).encode()),
            (dl.HEADER_FAILED_AT, datetime.now(UTC).isoformat().encode()),
        ]
        if value is not None and len(value) > dl.MAX_DEAD_LETTER_VALUE_BYTES:
            headers.append((dl.HEADER_ORIGINAL_SIZE, str(len(value)).encode()))
            value = value[: dl.MAX_DEAD_LETTER_VALUE_BYTES]
        future = await self.publisher.send_raw(self.topic, value, key, headers)
        self.metrics.dead_letters.labels(reason=reason).inc()
        return future
