"""The commit protocol between Redis (the truth) and Kafka (the position).

1. A poll's records are applied to Redis atomically with each partition's *offset mark*
   (the highest applied offset), so a record at or below the mark is a replay.
2. Only then are offsets committed to Kafka, explicitly per partition.
3. On assignment a partition resumes at ``mark + 1`` whenever Redis has a mark, whatever
   Kafka's committed offset says: ahead of it after a crash between steps 1 and 2, behind it
   if Redis lost acknowledged writes (the records are replayed from Kafka).
4. Before partitions are revoked, what was applied is committed.

A crash at any instant therefore neither loses nor double-counts a record.
"""

import logging

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import OffsetAndMetadata

from consumer.store import RedisStore

log = logging.getLogger(__name__)


def tp_key(tp: TopicPartition) -> str:
    return f"{tp.topic}:{tp.partition}"


class Checkpoint(ConsumerRebalanceListener):
    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.consumer: AIOKafkaConsumer | None = None
        self._uncommitted: dict[TopicPartition, int] = {}
        #: next offset to apply, per partition (for lag)
        self.next_offset: dict[TopicPartition, int] = {}

    def bind(self, consumer: AIOKafkaConsumer) -> None:
        self.consumer = consumer

    def applied(self, tp: TopicPartition, last_offset: int) -> None:
        """Redis acknowledged records of ``tp`` up to ``last_offset``."""
        self._uncommitted[tp] = last_offset + 1
        self.next_offset[tp] = last_offset + 1

    def forget(self, tp: TopicPartition) -> None:
        """The partition's log started over: what was applied from the old one is moot."""
        self._uncommitted.pop(tp, None)
        self.next_offset.pop(tp, None)

    async def commit(self, only: set[TopicPartition] | None = None) -> int:
        """Commit applied offsets of owned partitions; return how many were committed."""
        assert self.consumer is not None
        owned = self.consumer.assignment()
        offsets = {
            tp: OffsetAndMetadata(offset, "")
            for tp, offset in self._uncommitted.items()
            if tp in owned and (only is None or tp in only)
        }
        if not offsets:
            return 0
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group moved on; the new owner resumes from the Redis mark, so nothing is
            # lost or applied twice. Not retriable: drop these offsets.
            log.info("commit skipped after a rebalance: %s", exc)
        for tp in offsets:
            if self._uncommitted.get(tp) == offsets[tp].offset:
                del self._uncommitted[tp]
        return len(offsets)

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        try:
            await self.commit(only=set(revoked))
        except Exception as exc:
            log.warning("could not commit before revocation (Redis marks cover it): %s", exc)
        for tp in revoked:
            self._uncommitted.pop(tp, None)
            self.next_offset.pop(tp, None)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        assert self.consumer is not None
        tps = sorted(assigned)
        try:
            marks = await self.store.marks([tp_key(tp) for tp in tps])
        except Exception as exc:
            # Starting from the committed offsets is still safe: the apply script skips
            # every record at or below the mark once Redis answers again.
            log.warning("Redis marks unavailable at assignment (%s); replays will be skipped", exc)
            return
        for tp in tps:
            mark = marks[tp_key(tp)]
            if mark is None:
                continue
            committed = await self.consumer.committed(tp)
            if committed is not None and committed != mark + 1:
                log.warning(
                    "%s: committed offset %s, Redis mark %s: resuming at %s",
                    tp_key(tp),
                    committed,
                    mark,
                    mark + 1,
                )
            self.consumer.seek(tp, mark + 1)
            self.next_offset[tp] = mark + 1
