"""`clicktune consume`: clickstream and releases from Kafka into Redis session batches."""

import asyncio
import logging
import re
import time
from collections import Counter as Tally
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from itertools import compress
from operator import attrgetter
from typing import TypeVar

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from redis.exceptions import AuthenticationError, BusyLoadingError, ReadOnlyError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from consumer.checkpoint import Checkpoint, tp_key
from consumer.dead_letter import DeadLetters
from consumer.entries import Entry, skipped, to_entry
from consumer.health import HealthServer
from consumer.metrics import ConsumerMetrics
from consumer.outbox import Outbox
from consumer.store import ApplyResult, Outcome, PartitionBatch, RedisStore
from consumer.tasks import TaskStore
from consumer.text_cache import TextCache
from producer.event_publisher import EventPublisher
from producer.kafka_config import consumer_kwargs
from producer.redis_client import connect_redis
from producer.settings import Settings
from producer.topic_admin import ensure_topics
from schemas.codec import InvalidEvent, topic_decoder
from schemas.topics import CLICKSTREAM, RELEASE, TopicSpec

log = logging.getLogger(__name__)
T = TypeVar("T")
_TYPE_RE = re.compile(rb'"type"\s*:\s*"([a-z_]{1,32})"')
_KNOWN_TYPES = {m.event_type for m in CLICKSTREAM.messages + RELEASE.messages}
_TIME_MS = attrgetter("time_ms")
_IS_APPLIED = Outcome.APPLIED.__eq__
Record = ConsumerRecord[bytes, bytes]
#: Failures that pass: retried with backoff. Anything else is a bug and stops the service.
TRANSIENT = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    ReadOnlyError,
    OSError,
    KafkaError,
)
#: Refusals that look like connection failures but no retry can fix: bad credentials.
NOT_TRANSIENT = (AuthenticationError,)


@dataclass
class Prepared:
    """One partition's records from one poll, decoded and flattened."""

    tp: TopicPartition
    batch: PartitionBatch
    types: list[str]
    invalid: list[tuple[Record, InvalidEvent]] = field(default_factory=list)


def _claimed_type(value: bytes | None) -> str:
    match = _TYPE_RE.search(value[:512]) if value else None
    name = match.group(1).decode() if match else "unknown"
    return name if name in _KNOWN_TYPES else "unknown"


class ClickstreamConsumer:
    """The consumer service. ``await start()``, ``await run()``; ``request_stop()`` ends it."""

    def __init__(
        self,
        settings: Settings,
        *,
        metrics: ConsumerMetrics | None = None,
        serve_health: bool = True,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or ConsumerMetrics()
        self._serve_health = serve_health
        self._topic_spec: dict[str, TopicSpec] = {
            settings.topic(CLICKSTREAM): CLICKSTREAM,
            settings.topic(RELEASE): RELEASE,
        }
        self._stopping = asyncio.Event()
        self._started = False
        self._healthy = {"redis": False, "kafka": False}
        #: Why a dependency is unavailable, while it is (the last error seen).
        self.unavailable: dict[str, str] = {}
        self._last_loop = time.monotonic()
        self._open_batch_seen: tuple[str, float] | None = None
        self._texts = TextCache()
        self.redis: aioredis.Redis | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.publisher: EventPublisher | None = None
        self.health: HealthServer | None = None

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        if self._serve_health:
            self.health = HealthServer(
                self.metrics.registry,
                s.metrics_host,
                s.metrics_port,
                live=self.liveness,
                ready=self.readiness,
            ).start()
        self.redis = connect_redis(s, socket_timeout=5, socket_connect_timeout=5)
        self.store = RedisStore(self.redis, s)
        self.tasks = TaskStore(self.redis, s.redis_key_prefix)
        await self._retry("redis", self.store.ping)
        # A user that may not run the apply script or write under the prefix fails here,
        # with Redis's own words, rather than at the first record.
        await self._retry("redis", self.store.check_access)
        if s.create_topics:
            await self._retry("kafka", lambda: ensure_topics(s))
        self.publisher = EventPublisher(s, client_suffix="consumer-out")
        await self._retry("kafka", lambda: self._start_publisher())
        self.dead_letters = DeadLetters(self.publisher, self.metrics)
        self.outbox = Outbox(
            self.store, self.tasks, self.publisher, self.dead_letters, self.metrics
        )
        self.checkpoint = Checkpoint(self.store)
        self.consumer = AIOKafkaConsumer(
            **consumer_kwargs(s, group_id=s.consumer_group, client_suffix="consumer"),
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
            session_timeout_ms=s.consumer_session_timeout_ms,
            heartbeat_interval_ms=max(100, s.consumer_session_timeout_ms // 3),
        )
        self.checkpoint.bind(self.consumer)
        self.consumer.subscribe(list(self._topic_spec), listener=self.checkpoint)
        await self._retry("kafka", self.consumer.start)
        # Whatever a previous run queued but did not get to publish.
        await self._retry("kafka", self.outbox.drain)
        self._started = True
        self.metrics.ready.set(1)
        log.info("consuming %s as group %s", ", ".join(self._topic_spec), s.consumer_group)

    async def _start_publisher(self) -> None:
        assert self.publisher is not None
        await self.publisher.start(create_topics=False)

    def request_stop(self) -> None:
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self) -> None:
        """Poll, apply, commit until :meth:`request_stop`; then shut down cleanly.

        Two polls are in flight: while poll *k* is applied and committed (Redis works on the
        other core), poll *k+1* is read and decoded. Applies stay in poll order, and each
        commit follows its own apply.
        """
        applying: asyncio.Task[None] | None = None
        try:
            while not self.stopping:
                self._last_loop = time.monotonic()
                batches = await self._read_or_wait()
                prepared = await asyncio.to_thread(self._prepare, batches) if batches else []
                if applying is not None:
                    await applying
                    applying = None
                await self._forget_restarted_logs(prepared)
                if prepared:
                    applying = asyncio.create_task(self._apply(prepared))
                await self._housekeeping()
            if applying is not None:
                await applying
        finally:
            if applying is not None and not applying.done():
                applying.cancel()
            await self.close()

    async def close(self) -> None:
        self._started = False
        self.metrics.ready.set(0)
        if self.consumer is not None:
            try:
                await self.checkpoint.commit()
            except (KafkaError, AssertionError) as exc:
                log.warning("final commit failed (Redis marks cover it): %s", exc)
            await self.consumer.stop()  # leaves the group
            self.consumer = None
        if self.publisher is not None:
            await self.publisher.close()
            self.publisher = None
        if self.redis is not None:
            await self.redis.aclose()
            self.redis = None
        if self.health is not None:
            self.health.stop()
            self.health = None

    # --- probes --------------------------------------------------------------------------

    def liveness(self) -> tuple[bool, str]:
        stalled = time.monotonic() - self._last_loop
        limit = 60 + 2 * self.settings.retry_backoff_max_s
        if self._started and stalled > limit:
            return False, f"no progress for {stalled:.0f} s"
        return True, "alive"

    def readiness(self) -> tuple[bool, str]:
        if not self._started:
            return False, "starting"
        down = [name for name, ok in self._healthy.items() if not ok]
        if down:
            return False, f"{', '.join(down)} unavailable"
        return True, "ready"

    # --- the loop ------------------------------------------------------------------------

    async def poll_once(self) -> int:
        """One poll, start to finish: read, dead-letter, apply, commit. Returns the
        records handled. (``run`` overlaps consecutive polls instead.)"""
        self._last_loop = time.monotonic()
        batches = await self._read_or_wait()
        prepared = await asyncio.to_thread(self._prepare, batches) if batches else []
        await self._forget_restarted_logs(prepared)
        if prepared:
            await self._apply(prepared)
        await self._housekeeping()
        return sum(len(r) for r in batches.values())

    async def _read_or_wait(self) -> dict[TopicPartition, list[Record]]:
        try:
            batches = await self._read()
        except KafkaError as exc:
            self._set_healthy("kafka", False, exc)
            await asyncio.sleep(self.settings.retry_backoff_max_s / 5)
            return {}
        if batches:
            self._set_healthy("kafka", True)
            return batches
        # The client retries a lost broker by itself and a poll just comes back empty, so
        # an empty poll is checked against the fetch answers (they come every fetch wait,
        # half a second, records or not, once the client has nothing buffered).
        silent = self._fetch_silence_s()
        if silent is not None:
            if silent > max(5.0, self.settings.consumer_session_timeout_ms / 1000):
                self._set_healthy("kafka", False, f"no fetch answered for {silent:.0f} s")
            else:
                self._set_healthy("kafka", True)
        return batches

    def _fetch_silence_s(self) -> float | None:
        """Seconds since the newest fetch answer for an owned partition (None: no partition
        has had one, e.g. while the group rebalances)."""
        assert self.consumer is not None
        stamps = [self.consumer.last_poll_timestamp(tp) for tp in self.consumer.assignment()]
        known = [t for t in stamps if t is not None]
        return max(0.0, time.time() - max(known) / 1000) if known else None

    async def _forget_restarted_logs(self, prepared: list[Prepared]) -> None:
        """Forget the offset mark of a partition whose log started over.

        A broker that lost its data (the embedded broker keeps logs in memory only) or a topic
        deleted and created again numbers its records from 0 again; the apply script would
        take every new record up to the old mark for a replay and skip it. A log that only
        grows never reports a high watermark below the next offset to apply, so a partition
        that does (with no records in hand, or only records below that offset) has its mark
        dropped and its records are applied from the start of the new log. Runs with no
        apply in flight.
        """
        assert self.consumer is not None
        first = {p.tp: p.batch.entries[0].offset for p in prepared if p.batch.entries}
        restarted = False
        for tp in sorted(self.consumer.assignment()):
            expected = self.checkpoint.next_offset.get(tp)
            high = self.consumer.highwater(tp)
            if expected is None or high is None or high >= expected:
                continue
            if first.get(tp, -1) >= expected:
                continue  # records fetched before the log was lost: they go first
            key = tp_key(tp)
            forgotten = await self._retry(
                "redis", lambda key=key, mark=expected - 1: self.store.forget_mark(key, mark)
            )
            if not forgotten:  # another member moved the mark meanwhile: not ours any more
                continue
            self.checkpoint.forget(tp)
            if tp not in first:
                # The fetch position may lie past the new log's end (the embedded broker then
                # answers with nothing rather than "out of range"): read it from its start.
                await self.consumer.seek_to_beginning(tp)
            self.metrics.log_resets.labels(tp.topic, str(tp.partition)).inc()
            log.warning(
                "%s: high watermark %d is below the next offset to apply %d: the log started "
                "over (broker data lost, or topic recreated); offset mark %d forgotten",
                key,
                high,
                expected,
                expected - 1,
            )
            restarted = True
        if restarted and self.settings.create_topics:
            # A broker that lost its logs lost its topics too (tasks, dead letters included).
            await self._retry("kafka", lambda: ensure_topics(self.settings))

    async def _housekeeping(self) -> None:
        if self.settings.auto_release_age_s > 0:
            await self._release_by_age()
        self._update_lag()

    async def _read(self) -> dict[TopicPartition, list[Record]]:
        """One poll, lingering briefly once records arrive: brokers hand out small chunks
        under a steady trickle, and every poll costs a Redis round trip and a commit."""
        assert self.consumer is not None
        s = self.settings
        batches = await self.consumer.getmany(
            timeout_ms=s.consumer_poll_timeout_ms, max_records=s.consumer_max_records
        )
        total = sum(len(r) for r in batches.values())
        deadline = time.monotonic() + s.consumer_linger_ms / 1000
        while batches and total < s.consumer_max_records:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            more = await self.consumer.getmany(
                timeout_ms=int(remaining * 1000), max_records=s.consumer_max_records - total
            )
            for tp, records in more.items():
                batches.setdefault(tp, []).extend(records)
                total += len(records)
        return batches

    async def _apply(self, prepared: list[Prepared]) -> None:
        """Dead-letter, apply to Redis, commit: in that order, each retried until done."""
        started = time.perf_counter()
        await self._dead_letter(prepared)
        with self.metrics.redis_write.time():
            results = await self._retry(
                "redis", lambda: self.store.apply([p.batch for p in prepared])
            )
        self._account(prepared, results)
        await self._retry("kafka", self.checkpoint.commit)
        self.metrics.commits.inc()
        if any(r.releases for r in results):
            await self._retry("kafka", self.outbox.drain)
        self.metrics.batch_apply.observe(time.perf_counter() - started)

    def _prepare(self, batches: dict[TopicPartition, list[Record]]) -> list[Prepared]:
        # CPU work, run in a thread: the event loop keeps heartbeats, probes and the
        # previous poll's Redis round trip going meanwhile.
        prepared = []
        for tp, records in batches.items():
            decoder = topic_decoder(self._topic_spec[tp.topic])
            entries: list[Entry] = []
            types: list[str] = []
            invalid: list[tuple[Record, InvalidEvent]] = []
            for record in records:
                try:
                    event = decoder(record.value)
                except InvalidEvent as exc:
                    invalid.append((record, exc))
                    entries.append(skipped(record.offset))
                    types.append(_claimed_type(record.value))
                    continue
                entries.append(
                    to_entry(
                        record.offset,
                        event,
                        raw=record.value or b"",
                        key=record.key,
                        texts=self._texts,
                    )
                )
                types.append(event.type)
            batch = PartitionBatch(tp_key(tp), entries, tp.topic, tp.partition)
            batch.encoded()
            prepared.append(Prepared(tp, batch, types, invalid))
        # Releases last: clickstream read in the same poll belongs to the batch they freeze.
        prepared.sort(key=lambda p: (self._topic_spec[p.tp.topic] is RELEASE, p.tp.partition))
        return prepared

    async def _dead_letter(self, prepared: list[Prepared]) -> None:
        bad = [(p.tp, record, exc) for p in prepared for record, exc in p.invalid]
        if not bad:
            return

        async def send_all() -> None:
            futures = [
                await self.dead_letters.send(
                    key=record.key,
                    value=record.value,
                    reason=exc.reason.value,
                    detail=exc.detail,
                    topic=tp.topic,
                    partition=tp.partition,
                    offset=record.offset,
                )
                for tp, record, exc in bad
            ]
            await asyncio.gather(*futures)

        # Acknowledged by the broker before the offsets move past them.
        await self._retry("kafka", send_all)

    def _account(self, prepared: list[Prepared], results: list[ApplyResult]) -> None:
        m = self.metrics
        tallies: Tally[tuple[str, Outcome]] = Tally()
        for p, result in zip(prepared, results, strict=True):
            # Counted and filtered in C: this runs for every event the consumer applies.
            tallies.update(zip(p.types, result.outcomes, strict=True))
            self.checkpoint.applied(p.tp, result.mark)
            newest = max(
                compress(map(_TIME_MS, p.batch.entries), map(_IS_APPLIED, result.outcomes)),
                default=0,
            )
            if newest:
                m.last_event_time.labels(p.tp.topic, str(p.tp.partition)).set(newest / 1000)
            for release in result.releases:
                m.releases.labels(outcome=release.outcome).inc()
                log.info(
                    "release %s: %s batch %s",
                    release.event_id,
                    release.outcome,
                    release.batch_id or "-",
                )
        for (kind, outcome), n in tallies.items():
            m.consumed.labels(type=kind).inc(n)
            if outcome is Outcome.APPLIED:
                m.applied.labels(type=kind).inc(n)
            elif outcome is Outcome.REPLAY:
                m.duplicates.labels(type=kind, kind="offset").inc(n)
            elif outcome is Outcome.DUPLICATE:
                m.duplicates.labels(type=kind, kind="event_id").inc(n)
            elif outcome is Outcome.LATE:
                m.late.labels(type=kind).inc(n)
            elif outcome is Outcome.CUT:
                m.cut.labels(type=kind).inc(n)
            elif outcome is Outcome.SKIPPED:
                m.invalid.labels(type=kind).inc(n)
        if results:
            m.open_batch_sessions.set(results[-1].open_sessions)

    async def _release_by_age(self) -> None:
        current = await self._retry("redis", self.store.open_batch)
        if current is None:
            self._open_batch_seen = None
            return
        batch_id, _ = current
        now = time.monotonic()
        if self._open_batch_seen is None or self._open_batch_seen[0] != batch_id:
            self._open_batch_seen = (batch_id, now)
            return
        if now - self._open_batch_seen[1] < self.settings.auto_release_age_s:
            return
        release = await self._retry(
            "redis", lambda: self.store.release_open_batch("age", int(time.time() * 1000))
        )
        if release is not None:
            self.metrics.releases.labels(outcome=release.outcome).inc()
            log.info("batch %s released by age", release.batch_id)
            await self._retry("kafka", self.outbox.drain)
        self._open_batch_seen = None

    def _update_lag(self) -> None:
        assert self.consumer is not None
        owned = self.consumer.assignment()
        self.metrics.assigned_partitions.set(len(owned))
        for tp in owned:
            high = self.consumer.highwater(tp)
            nxt = self.checkpoint.next_offset.get(tp)
            if high is None or nxt is None:
                continue
            self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, high - nxt))

    # --- outages -------------------------------------------------------------------------

    def _set_healthy(
        self, dependency: str, ok: bool, exc: BaseException | str | None = None
    ) -> None:
        was = self._healthy[dependency]
        self._healthy[dependency] = ok
        if ok:
            self.unavailable.pop(dependency, None)
        else:
            self.unavailable[dependency] = f"{type(exc).__name__}: {exc}"
        if was and not ok:
            log.warning("%s unavailable, retrying with backoff: %s", dependency, exc)
        elif ok and not was and self._started:
            log.warning("%s available again", dependency)
        self.metrics.ready.set(1 if self._started and all(self._healthy.values()) else 0)

    async def _retry(self, dependency: str, op: Callable[[], Awaitable[T]]) -> T:
        """Run ``op`` until it succeeds; while it fails, report not-ready and back off.

        Nothing is committed meanwhile, so the records in hand are neither lost nor
        applied twice when the dependency returns (the apply script skips replays).
        """
        delay = 0.1
        while True:
            try:
                result = await op()
            except NOT_TRANSIENT:
                raise
            except TRANSIENT as exc:
                self.metrics.errors.labels(dependency=dependency).inc()
                self._set_healthy(dependency, False, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_backoff_max_s)
                self._last_loop = time.monotonic()
                continue
            self._set_healthy(dependency, True)
            return result
