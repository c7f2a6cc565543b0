"""The whole path through Kafka: clickstream -> consumer -> release -> trainer -> model_ready."""

import asyncio

import pytest
import redis.asyncio as aioredis

from consumer.tasks import TaskStore
from producer.settings import Settings
from schemas import ReleaseEvent, TaskStatus, decode
from schemas.topics import MODELS, STATUS
from tests.conftest import read_topic
from tests.consumer.conftest import _reached, publish, running, wait_until
from tests.trainer.conftest import clicked_sessions
from trainer.worker import TrainerWorker


@pytest.mark.timeout(600)
async def test_release_to_model_ready_through_kafka(
    trainer_settings: Settings, redis_client: aioredis.Redis
) -> None:
    s = trainer_settings
    events, _ = clicked_sessions(60)
    async with running(s):
        await publish(s, events)
        await wait_until(lambda: _reached(redis_client, s, len(events)), 60)
        await publish(s, [ReleaseEvent.create(idempotency_key="weekly")])
        worker = TrainerWorker(s, serve_health=False, max_tasks=1)
        await worker.start()
        await asyncio.wait_for(worker.run(), 300)
    [record] = await TaskStore(redis_client, s.redis_key_prefix).recent()
    assert record.status is TaskStatus.DONE
    assert record.detail.startswith("champion "), record.detail
    [ready] = await read_topic(s, MODELS, 1)
    event = decode(MODELS, ready.value)
    assert event.task_id == record.task_id
    statuses = [decode(STATUS, r.value).status for r in await read_topic(s, STATUS, 3)]
    assert statuses == [TaskStatus.PENDING, TaskStatus.PROCESSING, TaskStatus.DONE]
    samples = {m.name: m for m in worker.metrics.registry.collect()}
    assert samples["clicktune_tasks"].samples[0].labels == {"status": "done"}
    assert (
        sum(x.value for x in samples["clicktune_trials"].samples if x.name.endswith("_total")) >= 1
    )
