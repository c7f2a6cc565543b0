"""`clicktune train`: a long-lived worker in consumer group ``trainers`` on the tasks topic.

One task at a time per worker (more workers, more GPUs). A search can take hours, so the
consumer's poll loop is never held hostage: a task's offset is committed once the task is
known to Redis (the consumer wrote its record), the search runs in a thread, and the poll
loop keeps going with the partitions paused, so the group membership stays alive. Tasks
that were ``processing`` when a worker died are found in Redis at start-up and resumed
(their finished runs are not trained again: runs are named by their parameters' digest);
running workers look for them again every half lease, so a worker killed mid-task and
restarted at once resumes its task as soon as the dead worker's lease lapses.
"""

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from consumer.health import HealthServer
from consumer.keys import Keys
from consumer.tasks import TaskStore
from producer.event_publisher import EventPublisher
from producer.kafka_config import consumer_kwargs
from producer.redis_client import connect_redis
from producer.settings import Settings
from producer.topic_admin import ensure_topics
from schemas.codec import InvalidEvent, decode
from schemas.task import TaskEvent, TaskStatus
from schemas.topics import TASKS
from trainer.metrics_export import TrainerMetrics
from trainer.task_runner import TaskRunner

log = logging.getLogger(__name__)


class TrainerWorker:
    def __init__(
        self, settings: Settings, *, serve_health: bool = True, max_tasks: int | None = None
    ) -> None:
        self.settings = settings
        self.max_tasks = max_tasks
        self.metrics = TrainerMetrics()
        self._serve_health = serve_health
        self._stopping = asyncio.Event()
        self.health: HealthServer | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.tasks_done = 0

    def request_stop(self) -> None:
        self._stopping.set()
        runner = getattr(self, "runner", None)
        if runner is not None:
            runner.stop_requested.set()

    async def start(self) -> None:
        s = self.settings
        if self._serve_health:
            self.health = HealthServer(
                self.metrics.registry,
                s.metrics_host,
                s.trainer_metrics_port,
                live=lambda: (True, "alive"),
                ready=self._ready,
            ).start()
        self.redis = connect_redis(s, socket_connect_timeout=5)
        await self.redis.ping()
        if s.create_topics:
            await ensure_topics(s)
        self.publisher = await EventPublisher(s, client_suffix="trainer").start(create_topics=False)
        self.runner = TaskRunner(s, self.redis, self.publisher, self.metrics)
        self.consumer = AIOKafkaConsumer(
            s.topic(TASKS), **consumer_kwargs(s, group_id=s.trainer_group, client_suffix="trainer")
        )
        await self.consumer.start()

    def _ready(self) -> tuple[bool, str]:
        return (self.consumer is not None, "ready" if self.consumer else "starting")

    async def run(self) -> None:
        try:
            await self._recover()
            # A task whose worker was killed keeps that worker's lease for a while: a worker
            # restarted at once finds it still claimed, so the search looks again.
            every = self.settings.trainer_lease_s / 2
            due = time.monotonic() + every
            while not self._stopping.is_set():
                await self._poll()
                if time.monotonic() >= due and not self._stopping.is_set():
                    await self._recover()
                    due = time.monotonic() + every
        finally:
            await self.close()

    async def close(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None
        await self.publisher.close()
        await self.redis.aclose()
        if self.health is not None:
            self.health.stop()

    async def _poll(self) -> None:
        assert self.consumer is not None
        batches = await self.consumer.getmany(timeout_ms=500, max_records=1)
        for tp, records in batches.items():
            for record in records:
                try:
                    task = decode(TASKS, record.value)
                except InvalidEvent as exc:
                    log.warning("skipping invalid task record at %s@%d: %s", tp, record.offset, exc)
                    await self._commit(tp, record.offset + 1)
                    continue
                assert isinstance(task, TaskEvent)
                # Recorded in Redis by the consumer: safe to commit before the long part.
                await self._commit(tp, record.offset + 1)
                await self._run_while_polling(task)

    async def _commit(self, tp: TopicPartition, offset: int) -> None:
        assert self.consumer is not None
        await self.consumer.commit({tp: OffsetAndMetadata(offset, "")})

    async def _run_while_polling(self, task: TaskEvent) -> None:
        assert self.consumer is not None
        key = Keys(self.settings.redis_key_prefix).task(task.task_id) + ":lease"
        lease_s = self.settings.trainer_lease_s
        if not await self.redis.set(key, "1", nx=True, ex=lease_s):
            log.info("task %s is being run by another worker", task.task_id)
            return
        job = asyncio.create_task(self.runner.run(task))
        try:
            while not job.done():
                owned = self.consumer.assignment()
                self.consumer.pause(*owned)
                # Polling paused partitions returns nothing but keeps us in the group.
                extra = await self.consumer.getmany(timeout_ms=1000)
                for tp, records in extra.items():  # newly assigned, not paused yet
                    self.consumer.seek(tp, records[0].offset)
                await self.redis.expire(key, lease_s)
            await job
            self.tasks_done += 1
            if self.max_tasks is not None and self.tasks_done >= self.max_tasks:
                self.request_stop()
        finally:
            self.consumer.resume(*self.consumer.assignment())
            await self.redis.delete(key)

    async def _recover(self) -> None:
        """Resume tasks left ``processing`` by a worker that died (no live lease)."""
        store = TaskStore(self.redis, self.settings.redis_key_prefix)
        keys = Keys(self.settings.redis_key_prefix)
        for record in await store.recent(limit=100):
            if record.status is not TaskStatus.PROCESSING:
                continue
            if await self.redis.exists(keys.task(record.task_id) + ":lease"):
                continue
            log.warning("resuming task %s left processing", record.task_id)
            await self._run_while_polling(record.task_event())


async def main(settings: Settings, *, max_tasks: int | None = None) -> None:
    """Run a worker until SIGTERM/SIGINT (or ``max_tasks`` tasks finished)."""
    import signal

    worker = TrainerWorker(settings, max_tasks=max_tasks)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.request_stop)
    await worker.start()
    await worker.run()
