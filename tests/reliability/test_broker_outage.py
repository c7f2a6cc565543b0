"""The broker stops mid-stream and comes back empty (the embedded broker keeps its logs in
memory): the consumer reconnects, notices that every partition's log started over, and keeps
serving; nothing applied before the outage is lost or changed."""

import asyncio
import time
import urllib.error
import urllib.request
from typing import Any

import redis.asyncio as aioredis

from consumer.keys import Keys
from producer import synthetic
from producer.broker import EmbeddedBroker
from producer.settings import Settings
from schemas import ReleaseEvent
from tests.consumer.conftest import _outbox_empty, dump_state, publish, running, wait_until
from tests.reliability.conftest import clean_run, reliable, tally, traffic, without_marks

OUTAGE_S = 8.0


async def test_broker_restarted_empty_mid_stream(
    consumer_settings: Settings,
    redis_client: aioredis.Redis,
    own_broker: EmbeddedBroker,
    report,
) -> None:
    s = reliable(consumer_settings).model_copy(
        update={"kafka_bootstrap_servers": own_broker.bootstrap_servers}
    )
    keys = Keys(s.redis_key_prefix)
    before = traffic(1500, seed=21)
    after = list(synthetic.sessions(300, seed=22, catalog_size=200))
    first = ReleaseEvent.create(idempotency_key="before-outage")
    second = ReleaseEvent.create(idempotency_key="after-outage")
    expected = await clean_run(s, redis_client, [before, [first], after, [second]])
    started = time.monotonic()
    async with running(s) as service:
        assert service.health is not None
        readyz = f"http://127.0.0.1:{service.health.port}/readyz"
        await publish(s, before)
        await publish(s, [first])
        await wait_until(lambda: _has(redis_client, keys.task("task-b000001")), 60, "task 1")
        await wait_until(lambda: _outbox_empty(redis_client, s), 30, "outbox")
        marks = {k.decode(): int(v) for k, v in (await redis_client.hgetall(keys.offsets)).items()}
        assert len(marks) == 7  # six clickstream partitions and the release partition
        await asyncio.to_thread(own_broker.stop)  # the consumer's loop goes on meanwhile
        down = time.monotonic()
        await wait_until(lambda: _not_ready(service), 30, "not ready while the broker is down")
        noticed = time.monotonic() - down
        assert service.readiness() == (False, "kafka unavailable")
        assert await _status(readyz) == 503
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down)))
        await asyncio.to_thread(own_broker.start)
        outage = time.monotonic() - down
        # Fewer records per partition than before: offsets restart at 0, below the marks.
        await publish(s, after)  # a restarted producer creates the topics again
        await wait_until(lambda: _resets(service, 7), 60, "every partition's restart noticed")
        # A release at offset 0 of the new log: it would be mistaken for the old release
        # (offset 0, the mark) had the consumer not noticed the restart first.
        await publish(s, [second])
        await wait_until(lambda: _has(redis_client, keys.task("task-b000002")), 60, "task 2")
        await wait_until(lambda: _outbox_empty(redis_client, s), 30, "outbox")
        assert service.readiness() == (True, "ready")
        assert await _status(readyz) == 200
        resets = _counter(service, "log_resets")
    state = await dump_state(redis_client, s.redis_key_prefix, s.topic_prefix)
    got = without_marks(state)
    counts = tally(got, before + after)
    report(
        f"broker outage: broker down {outage:.1f} s (not ready after {noticed:.1f} s) and back "
        f"empty, {int(resets)} partition "
        f"logs found restarted (marks forgotten), {counts.events} events ({len(before)} "
        f"records before, {len(after)} after), 2 releases, lost {counts.lost}, "
        f"double-applied {counts.doubled}, {time.monotonic() - started:.0f} s"
    )
    assert counts.exact, counts
    assert got == expected
    # The new log's marks: every record published after the restart is covered.
    new_marks = {k.removeprefix(s.topic_prefix): int(v) for k, v in state["offsets"].items()}
    assert sum(v + 1 for k, v in new_marks.items() if "events" in k) == len(after)
    assert new_marks["clickstream.release:0"] == 0


async def _has(client: aioredis.Redis, key: str) -> bool:
    return bool(await client.exists(key))


def _counter(service: Any, name: str) -> float:
    metric = getattr(service.metrics, name)
    return sum(x.value for m in metric.collect() for x in m.samples if x.name.endswith("_total"))


async def _resets(service: Any, n: int) -> bool:
    return _counter(service, "log_resets") >= n


async def _not_ready(service: Any) -> bool:
    return not service.readiness()[0]


async def _status(url: str) -> int:
    def get() -> int:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    return await asyncio.to_thread(get)
