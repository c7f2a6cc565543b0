"""The SDK search services use: publish clickstream and release batches."""

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from aiokafka.structs import RecordMetadata

from producer.event_publisher import DeliveryFuture, EventPublisher, event_fields
from producer.settings import Settings
from schemas.clickstream import (
    ClickEvent,
    IrrelevantEvent,
    ItemEvent,
    SearchEvent,
    SearchResult,
)
from schemas.release import DEFAULT_METHOD, ReleaseEvent

ResultLike = SearchResult | Mapping[str, Any] | str


def _result(value: ResultLike, rank: int) -> SearchResult | Mapping[str, Any]:
    # A bare id means "this item, at this list position".
    if isinstance(value, str):
        return {"item_id": value, "rank": rank}
    return value


class ClickstreamPublisher(EventPublisher):
    """Publish a search service's clickstream.

    >>> async with ClickstreamPublisher(Settings.load()) as pub:
    ...     await pub.search("s-1", "gaming mouse pad", ["sku-1", "sku-2"])
    ...     await pub.click("s-1", "sku-2")

    Each method validates, queues and returns a delivery future (await it, or call
    :meth:`flush`). Pass ``event_id`` when you may resend: the consumer dedupes by it.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__(settings or Settings.load(), client_suffix="publisher")

    async def search(
        self,
        session_id: str,
        query: str,
        results: Iterable[ResultLike],
        *,
        user_id: str | None = None,
        meta: dict[str, Any] | None = None,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> DeliveryFuture:
        event = SearchEvent.create(
            session_id=session_id,
            query=query,
            results=[_result(r, i) for i, r in enumerate(results, 1)],
            **event_fields(user_id=user_id, meta=meta, event_id=event_id, occurred_at=occurred_at),
        )
        return await self.send(event)

    async def click(
        self,
        session_id: str,
        item_id: str,
        *,
        meta: dict[str, Any] | None = None,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> DeliveryFuture:
        event = ClickEvent.create(
            session_id=session_id,
            item_id=item_id,
            **event_fields(meta=meta, event_id=event_id, occurred_at=occurred_at),
        )
        return await self.send(event)

    async def irrelevant(
        self,
        session_id: str,
        *,
        meta: dict[str, Any] | None = None,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> DeliveryFuture:
        event = IrrelevantEvent.create(
            session_id=session_id,
            **event_fields(meta=meta, event_id=event_id, occurred_at=occurred_at),
        )
        return await self.send(event)

    async def item(
        self,
        item_id: str,
        text: str,
        *,
        meta: dict[str, Any] | None = None,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> DeliveryFuture:
        event = ItemEvent.create(
            item_id=item_id,
            text=text,
            **event_fields(meta=meta, event_id=event_id, occurred_at=occurred_at),
        )
        return await self.send(event)

    async def release(
        self,
        *,
        fine_tuning_method: str = DEFAULT_METHOD,
        batch_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[ReleaseEvent, RecordMetadata]:
        """Ask the consumer to freeze a batch and emit a fine-tuning task; waits for the ack."""
        event = ReleaseEvent.create(
            fine_tuning_method=fine_tuning_method,
            metadata=metadata or {},
            **event_fields(batch_id=batch_id, idempotency_key=idempotency_key),
        )
        return event, await self.publish(event)


async def publish_release(
    settings: Settings | None = None,
    *,
    fine_tuning_method: str = DEFAULT_METHOD,
    batch_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> ReleaseEvent:
    """One-shot: publish a batch-release event and return it once the broker acked."""
    async with ClickstreamPublisher(settings) as publisher:
        event, _ = await publisher.release(
            fine_tuning_method=fine_tuning_method,
            batch_id=batch_id,
            metadata=metadata,
            idempotency_key=idempotency_key,
        )
    return event
