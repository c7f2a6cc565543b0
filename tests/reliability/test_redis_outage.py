"""Redis goes away mid-stream, twice: the consumer stays up, says it is not ready, commits
nothing it has not applied, and catches up to the state of a clean run."""

import asyncio
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
import redis.asyncio as aioredis

from consumer.checkpoint import tp_key
from consumer.keys import Keys
from producer.settings import Settings
from tests.consumer.conftest import (
    _reached,
    applied_records,
    dump_state,
    normalised,
    publish,
    reference_state,
    running,
    wait_until,
)
from tests.reliability.conftest import RedisServer, tally, traffic

DOWN_S = 4.0


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_redis_down_twice_mid_stream(
    consumer_settings: Settings,
    redis_client: aioredis.Redis,
    own_redis: RedisServer,
    caplog: pytest.LogCaptureFixture,
    report,
) -> None:
    events = traffic(3000, seed=13)
    expected = await reference_state(consumer_settings, redis_client, events)
    s = consumer_settings.model_copy(
        update={"redis_url": own_redis.url, "consumer_max_records": 300}
    )
    client = aioredis.from_url(own_redis.url)
    await wait_until(lambda: _pings(client), 10, "own redis")
    q = len(events) // 4
    slices = [events[:q], events[q : 2 * q], events[2 * q : 3 * q], events[3 * q :]]
    outages: list[str] = []
    started = time.monotonic()
    async with running(s) as service:
        assert service.health is not None
        readyz = f"http://127.0.0.1:{service.health.port}/readyz"
        await publish(s, slices[0])
        for n, (during, after) in enumerate(((slices[1], slices[2]), (slices[3], []))):
            await wait_until(lambda: _moved(client, s, 0), 30, "progress")
            how = "SIGKILL" if n == 0 else "SIGTERM"
            if n == 0:
                own_redis.crash()
            else:
                own_redis.stop()
            down = time.monotonic()
            await publish(s, during)  # the stream goes on meanwhile
            await wait_until(lambda: _not_ready(service), 20, "not ready")
            noticed = time.monotonic() - down
            assert await _status(readyz) == 503
            assert _value(service.metrics.ready) == 0
            committed = await _committed(service)
            commits = _value(service.metrics.commits)
            await asyncio.sleep(max(0.0, DOWN_S - (time.monotonic() - down)))
            assert not service.readiness()[0]
            assert await _committed(service) == committed  # nothing committed meanwhile
            assert _value(service.metrics.commits) == commits
            own_redis.start()
            await wait_until(lambda: _pings(client), 10, "redis back")
            await wait_until(lambda: _ready(service), 30, "ready again")
            back = time.monotonic() - down
            assert await _status(readyz) == 200
            assert _value(service.metrics.ready) == 1
            # Never ahead of Redis: a commit follows its apply. (Committed offsets first: the
            # marks read after them can only be further on.)
            committed = await _committed(service)
            marks = await client.hgetall(Keys(s.redis_key_prefix).offsets)
            for tp, offset in committed.items():
                mark = marks.get(tp_key(tp).encode())
                assert offset is None or (mark is not None and offset <= int(mark) + 1), tp
            outages.append(f"{how} {back:.1f} s (not ready after {noticed:.1f} s)")
            if after:
                await publish(s, after)
        await wait_until(lambda: _reached(client, s, len(events)), 120, "caught up")
    state = normalised(await dump_state(client, s.redis_key_prefix, s.topic_prefix))
    await client.aclose()
    counts = tally(state, events)
    warnings = [r for r in caplog.records if "redis unavailable" in r.getMessage()]
    report(
        f"redis outage: {len(outages)} outages mid-stream ({'; '.join(outages)}), /readyz 503 "
        f"and ready gauge 0 during each, 0 commits during each, {len(events)} records, lost "
        f"{counts.lost}, double-applied {counts.doubled}, state "
        f"{'equals' if state == expected else 'DIFFERS from'} a clean run, "
        f"{time.monotonic() - started:.0f} s"
    )
    assert counts.exact, counts
    assert state == expected
    assert len(warnings) == 2  # logged once per outage, not once per retry
    assert not [r for r in caplog.records if "kafka unavailable" in r.getMessage()]


async def _pings(client: aioredis.Redis) -> bool:
    try:
        return bool(await client.ping())
    except Exception:
        return False


async def _moved(client: aioredis.Redis, settings: Settings, start: int) -> bool:
    return await applied_records(client, settings) > start


async def _not_ready(service: Any) -> bool:
    return not service.readiness()[0]


async def _ready(service: Any) -> bool:
    return bool(service.readiness()[0])


async def _committed(service: Any) -> dict[Any, int | None]:
    return {tp: await service.consumer.committed(tp) for tp in service.consumer.assignment()}


def _value(metric: Any) -> float:
    return sum(
        s.value for m in metric.collect() for s in m.samples if not s.name.endswith("_created")
    )


async def _status(url: str) -> int:
    def get() -> int:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    return await asyncio.to_thread(get)
