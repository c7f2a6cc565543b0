"""Publishing what the apply script queued with the state: task and status events, and
dead letters found while applying (a release naming an unknown batch).

The queue lives in Redis, written in the same atomic step as the state it reports on, so a
crash can never lose a task. An entry is removed only after the broker acknowledged it: a
crash in between republishes it with the same deterministic ``event_id``.
"""

import json
import logging

from consumer.dead_letter import DeadLetters
from consumer.metrics import ConsumerMetrics
from consumer.store import RedisStore
from consumer.tasks import TaskStore
from producer.event_publisher import EventPublisher

log = logging.getLogger(__name__)


class Outbox:
    def __init__(
        self,
        store: RedisStore,
        tasks: TaskStore,
        publisher: EventPublisher,
        dead_letters: DeadLetters,
        metrics: ConsumerMetrics,
    ) -> None:
        self.store = store
        self.tasks = tasks
        self.publisher = publisher
        self.dead_letters = dead_letters
        self.metrics = metrics

    async def drain(self) -> int:
        """Publish every queued entry; return how many were published."""
        sent = 0
        for raw in await self.store.outbox():
            entry = json.loads(raw)
            if entry["kind"] == "task":
                record = await self.tasks.get(entry["task_id"])
                if record is None:  # expired long ago: nothing left to announce
                    log.warning("outbox names unknown task %s", entry["task_id"])
                else:
                    await self.publisher.publish(record.task_event())
                    await self.publisher.publish(record.status_event())
                    self.metrics.tasks_emitted.inc()
                    log.info("task %s emitted (%d sessions)", record.task_id, record.session_count)
            elif entry["kind"] == "dlq":
                await (
                    await self.dead_letters.send(
                        key=entry.get("key", "").encode() or None,
                        value=(entry.get("value") or "").encode(),
                        reason=entry["reason"],
                        detail=entry["detail"],
                        topic=entry["topic"],
                        partition=int(entry["partition"]),
                        offset=int(entry["offset"]),
                    )
                )
            await self.store.outbox_done(raw)
            sent += 1
        return sent
