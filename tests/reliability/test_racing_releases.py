"""Many releases with one idempotency key, raced from several producers and processes, some
resent as is: one batch frozen, one task, one `pending` status, whatever the order."""

import asyncio
import time

import redis.asyncio as aioredis

from consumer.keys import Keys
from producer import synthetic
from producer.event_publisher import EventPublisher
from producer.publisher import publish_release
from producer.settings import Settings
from schemas import ReleaseEvent, decode
from schemas.topics import STATUS, TASKS
from tests.consumer.conftest import _outbox_empty, consumed, publish, running, wait_until
from tests.reliability.conftest import CLICKTUNE, read_all

PRODUCERS = 8
ROUNDS = 3
PROCESSES = 4
KEY = "weekly-2026-48"


async def test_racing_releases_with_one_key_make_one_task(
    consumer_settings: Settings,
    redis_client: aioredis.Redis,
    cli_env: dict[str, str],
    report,
) -> None:
    s = consumer_settings
    keys = Keys(s.redis_key_prefix)
    started = time.monotonic()
    first = list(synthetic.sessions(200, seed=41))
    later = list(synthetic.sessions(50, seed=42))
    sent = 0
    async with running(s) as service:
        n = await publish(s, first)
        await wait_until(lambda: _at_least(service, n), 30, "sessions")
        for volley in range(2):
            if volley:  # sessions after the release open a batch the same key must not freeze
                n += await publish(s, later)
                await wait_until(lambda n=n: _at_least(service, n), 30, "later sessions")
            releases = await _volley(s, cli_env)
            sent += releases
            n += releases
            await wait_until(lambda n=n: _at_least(service, n), 60, "every release")
        await wait_until(lambda: _outbox_empty(redis_client, s), 30, "outbox")
    tasks = [decode(TASKS, r.value) for r in await read_all(s, TASKS)]
    statuses = [decode(STATUS, r.value) for r in await read_all(s, STATUS)]
    frozen = [b.decode() for b in await redis_client.zrange(keys.batches, 0, -1)]
    states = {b: (await redis_client.hget(keys.batch(b), "state")).decode() for b in frozen}
    mapped = {v.decode() for v in (await redis_client.hgetall(keys.releases)).values()}
    report(
        f"racing releases: {sent} releases with one idempotency key ({PRODUCERS} producers x "
        f"{ROUNDS} rounds concurrently, {PROCESSES} `clicktune release` processes, resends), "
        f"in two volleys around new sessions -> {len(tasks)} task event, "
        f"{sum(st.status == 'pending' for st in statuses)} pending status, batches {states}, "
        f"{time.monotonic() - started:.0f} s"
    )
    assert [t.task_id for t in tasks] == ["task-b000001"]
    assert [(st.task_id, st.status) for st in statuses] == [("task-b000001", "pending")]
    assert states == {"b000001": "frozen", "b000002": "open"}
    assert mapped == {"b000001"}  # every release event answered with the same batch
    assert await redis_client.zcard(keys.tasks) == 1
    assert (await redis_client.hget(keys.release_keys, KEY)).decode() == "b000001"


async def _volley(s: Settings, cli_env: dict[str, str]) -> int:
    """Publish releases with ``KEY`` all at once; return how many records were sent."""
    env = {**cli_env, "CLICKTUNE_TOPIC_PREFIX": s.topic_prefix}
    procs = [
        await asyncio.create_subprocess_exec(
            CLICKTUNE,
            "release",
            "--idempotency-key",
            KEY,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(PROCESSES)
    ]

    async def one_producer() -> int:
        n = 0
        for _ in range(ROUNDS):
            await publish_release(s, idempotency_key=KEY)
            n += 1
        return n

    async def resender() -> int:
        # A producer retry: the very same record (same event_id) three times.
        event = ReleaseEvent.create(idempotency_key=KEY)
        async with EventPublisher(s) as publisher:
            await asyncio.gather(*(publisher.publish(event) for _ in range(3)))
        return 3

    counts = await asyncio.gather(*(one_producer() for _ in range(PRODUCERS)), resender())
    for proc in procs:
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
    return sum(counts) + len(procs)


async def _at_least(service, n: int) -> bool:
    return consumed(service) >= n
