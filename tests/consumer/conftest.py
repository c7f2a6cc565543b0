"""Harness for consumer tests: a running service, Redis state dumps, waiting on content."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import pytest
import redis.asyncio as aioredis

from consumer.service import ClickstreamConsumer
from producer.event_publisher import EventPublisher
from producer.settings import Settings
from schemas.base import Event


@pytest.fixture(autouse=True)
async def _drop_keys(prefix: str, redis_client: aioredis.Redis) -> AsyncIterator[None]:
    yield
    keys = [
        k
        for pattern in (f"{prefix}*", f"ref-{prefix}*")
        async for k in redis_client.scan_iter(pattern, count=1000)
    ]
    for i in range(0, len(keys), 500):
        await redis_client.delete(*keys[i : i + 500])


@contextlib.asynccontextmanager
async def running(settings: Settings, **kwargs: Any) -> AsyncIterator[ClickstreamConsumer]:
    service = ClickstreamConsumer(settings, **kwargs)
    await service.start()
    task = asyncio.create_task(service.run())
    try:
        yield service
    finally:
        service.request_stop()
        await asyncio.wait_for(task, 30)


async def publish(settings: Settings, events: Iterable[Event]) -> int:
    n = 0
    async with EventPublisher(settings) as publisher:
        for event in events:
            await publisher.send(event)
            n += 1
        await publisher.flush()
    return n


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout_s: float = 30, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def consumed(service: ClickstreamConsumer) -> float:
    """Records the service has read (every outcome counts)."""
    return sum(
        s.value
        for m in service.metrics.consumed.collect()
        for s in m.samples
        if s.name.endswith("_total")
    )


#: Type and content of each key in KEYS, in one round trip per chunk of keys.
_DUMP_SCRIPT = """
local out = {}
for i, key in ipairs(KEYS) do
  local kind = redis.call('TYPE', key)['ok']
  local value = {}
  if kind == 'hash' then value = redis.call('HGETALL', key)
  elseif kind == 'set' then value = redis.call('SMEMBERS', key)
  elseif kind == 'list' then value = redis.call('LRANGE', key, 0, -1)
  elseif kind == 'zset' then value = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  elseif kind == 'string' then value = {redis.call('GET', key)} end
  out[i] = {kind, value}
end
return out
"""


async def dump_state(client: aioredis.Redis, prefix: str, topic_prefix: str) -> dict[str, Any]:
    """Everything under ``prefix``, by key without the prefix; offset marks keyed by topic
    without the topic prefix, so two runs on different topics compare equal."""
    state: dict[str, Any] = {}
    script = client.register_script(_DUMP_SCRIPT)
    keys = [raw async for raw in client.scan_iter(f"{prefix}*", count=1000)]
    for i in range(0, len(keys), 1000):  # 100k sessions: seconds, not a round trip per key
        chunk = keys[i : i + 1000]
        for raw, (kind, found) in zip(chunk, await script(keys=chunk), strict=True):
            key = raw.decode()[len(prefix) :]
            pairs = iter(found)
            if kind == b"hash":
                value: Any = {k.decode(): v.decode() for k, v in zip(pairs, pairs, strict=True)}
                if key == "offsets":
                    value = {k.removeprefix(topic_prefix): v for k, v in value.items()}
            elif kind == b"set":
                value = sorted(m.decode() for m in found)
            elif kind == b"list":
                value = [m.decode() for m in found]
            elif kind == b"zset":
                value = [(m.decode(), float(s)) for m, s in zip(pairs, pairs, strict=True)]
            else:
                value = (found[0] if found else b"").decode()
            state[key] = value
    return state


async def applied_records(client: aioredis.Redis, settings: Settings) -> int:
    """Records covered by the offset marks: applied, skipped or dead-lettered."""
    marks = await client.hgetall(f"{settings.redis_key_prefix}offsets")
    return sum(int(v) + 1 for v in marks.values())


def normalised(state: dict[str, Any]) -> dict[str, Any]:
    """What may differ between two correct runs, made comparable: late events of several
    partitions interleave in any order (compared as sets), and ``catalog:t`` holds the time
    each catalog text was first written, which depends on which partition came first (the
    texts themselves, in ``catalog``, must be equal)."""
    return {
        k: sorted(v) if k.endswith(":late") else v for k, v in state.items() if k != "catalog:t"
    }


async def reference_state(
    settings: Settings,
    client: aioredis.Redis,
    events: list[Event],
    then: list[Event] | None = None,
) -> dict[str, Any]:
    """Redis after one uninterrupted consumer run over ``events`` and, once those are
    applied, ``then`` (releases: which partition is read first is not deterministic)."""
    ref = settings.model_copy(
        update={
            "topic_prefix": f"ref-{settings.topic_prefix}",
            "redis_key_prefix": f"ref-{settings.redis_key_prefix}",
            "consumer_group": f"{settings.consumer_group}-ref",
        }
    )
    async with running(ref):
        await publish(ref, events)
        await wait_until(lambda: _reached(client, ref, len(events)), 120, "reference run")
        if then:
            await publish(ref, then)
            total = len(events) + len(then)
            await wait_until(lambda: _reached(client, ref, total), 60, "reference run")
            await wait_until(lambda: _outbox_empty(client, ref), 30, "reference outbox")
    state = await dump_state(client, ref.redis_key_prefix, ref.topic_prefix)
    return normalised(state)


async def _reached(client: aioredis.Redis, settings: Settings, n: int) -> bool:
    return await applied_records(client, settings) >= n


async def _outbox_empty(client: aioredis.Redis, settings: Settings) -> bool:
    return await client.llen(f"{settings.redis_key_prefix}outbox") == 0
