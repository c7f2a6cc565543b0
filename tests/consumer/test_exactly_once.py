"""Replays, crashes, rebalances and Redis outages leave Redis as a clean run would."""

import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from producer import synthetic
from producer.broker import free_port
from producer.settings import Settings
from schemas import ReleaseEvent, decode
from schemas.topics import TASKS
from tests.conftest import read_topic
from tests.consumer.conftest import (
    _outbox_empty,
    _reached,
    applied_records,
    dump_state,
    normalised,
    publish,
    reference_state,
    running,
    wait_until,
)

CLICKTUNE = str(Path(sys.executable).with_name("clicktune"))


def traffic(sessions: int, seed: int) -> list:
    events = list(synthetic.catalog(200)) + list(
        synthetic.sessions(sessions, seed=seed, catalog_size=200)
    )
    # Duplicates a producer retry would make, far from the original.
    events += [events[i] for i in range(5, len(events), 97)]
    return events


async def test_replaying_the_whole_topic_changes_nothing(
    consumer_settings: Settings, redis_client: aioredis.Redis
) -> None:
    s = consumer_settings
    events = traffic(400, seed=3)
    async with running(s):
        await publish(s, events)
        await wait_until(lambda: _reached(redis_client, s, len(events)))
    before = await dump_state(redis_client, s.redis_key_prefix, s.topic_prefix)
    # Another group would resume at the Redis marks; force it back to the beginning, as a
    # lost commit or an operator's reset would: every record is then a replay.
    replay = s.model_copy(update={"consumer_group": s.consumer_group + "-replay"})
    async with running(replay) as service:
        await wait_until(lambda: _assigned(service), what="assignment")
        await service.consumer.seek_to_beginning(*service.consumer.assignment())
        await wait_until(lambda: _replayed(service, len(events)))
    after = await dump_state(redis_client, s.redis_key_prefix, s.topic_prefix)
    assert after == before


async def _assigned(service) -> bool:
    # The listener has sought every partition to its mark (our seek must come after).
    return len(service.checkpoint.next_offset) == 6  # the release topic has no mark yet


async def _replayed(service, n: int) -> bool:
    return (
        sum(
            x.value
            for m in service.metrics.duplicates.collect()
            for x in m.samples
            if x.name.endswith("_total") and x.labels["kind"] == "offset"
        )
        >= n
    )


async def test_two_consumers_and_a_rebalance_equal_a_clean_run(
    consumer_settings: Settings, redis_client: aioredis.Redis
) -> None:
    s = consumer_settings
    events = traffic(3000, seed=5)
    expected = await reference_state(s, redis_client, events)
    half = len(events) // 2
    async with running(s) as first:
        await publish(s, events[:half])
        await wait_until(lambda: _reached(redis_client, s, half // 4))
        async with running(s) as second:  # joins the group: partitions are split
            await publish(s, events[half:])
            await wait_until(lambda: _reached(redis_client, s, len(events)), 120)
            owned = (first.consumer.assignment(), second.consumer.assignment())
    assert owned[0] and owned[1] and not owned[0] & owned[1], owned
    state = normalised(await dump_state(redis_client, s.redis_key_prefix, s.topic_prefix))
    assert state == expected


def _consume(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [CLICKTUNE, "consume"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
        start_new_session=True,
    )


async def test_kill_9_mid_stream_then_restart_equals_a_clean_run(
    consumer_settings: Settings,
    redis_client: aioredis.Redis,
    cli_env: dict[str, str],
    tmp_path: Path,
) -> None:
    s = consumer_settings.model_copy(update={"consumer_max_records": 500})
    events = traffic(20000, seed=11)
    release = [ReleaseEvent.create(idempotency_key="end")]
    expected = await reference_state(s, redis_client, events, then=release)
    await publish(s, events)
    env = {
        **cli_env,
        "CLICKTUNE_REDIS_KEY_PREFIX": s.redis_key_prefix,
        "CLICKTUNE_CONSUMER_GROUP": s.consumer_group,
        "CLICKTUNE_METRICS_PORT": "0",
        "CLICKTUNE_CONSUMER_MAX_RECORDS": "500",
    }
    rng = random.Random(1)
    kills = 0
    killed_at: list[int] = []
    log = tmp_path / "consumer.log"
    while await applied_records(redis_client, s) < len(events):
        proc = _consume(env, log)
        start = await applied_records(redis_client, s)
        await wait_until(lambda start=start: _moved(redis_client, s, start), 60, "progress")
        if kills < 3:
            await asyncio.sleep(rng.uniform(0.0, 0.1))
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
            killed_at.append(await applied_records(redis_client, s))
        else:
            await wait_until(lambda: _reached(redis_client, s, len(events)), 120)
            proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert kills == 3 and all(0 < n < len(events) for n in killed_at), killed_at
    # The release, then a crash as soon as it is applied (before or after the task went out).
    await publish(s, release)
    proc = _consume(env, log)
    await wait_until(lambda: _reached(redis_client, s, len(events) + 1), 60, "release")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    started = log.read_text().count("metrics and probes")
    proc = _consume(env, log)
    await wait_until(lambda: _outbox_empty(redis_client, s), 60, "outbox drained")
    await wait_until(lambda: _logged(log, "metrics and probes", started + 1), 60, "started")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, log.read_text()[-2000:]
    state = normalised(await dump_state(redis_client, s.redis_key_prefix, s.topic_prefix))
    assert state == expected
    tasks = await read_topic(s, TASKS, 1, wait_s=3)
    assert {decode(TASKS, t.value).event_id for t in tasks} == {"task-b000001:task"}


async def _logged(log: Path, text: str, times: int) -> bool:
    return (await asyncio.to_thread(log.read_text)).count(text) >= times


async def _moved(client: aioredis.Redis, settings: Settings, start: int) -> bool:
    return await applied_records(client, settings) > start


@pytest.fixture
def own_redis(tmp_path: Path):
    """A redis-server of our own, with an append-only file so a restart keeps the data."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (Debian package redis-server)")
    port = free_port()
    data = tmp_path / "redis"
    data.mkdir()
    cmd = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        str(data),
    ]

    class Server:
        url = f"redis://127.0.0.1:{port}/0"
        proc: subprocess.Popen[bytes] | None = None

        def start(self) -> None:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)

        def crash(self) -> None:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait()

    server = Server()
    server.start()
    yield server
    if server.proc and server.proc.poll() is None:
        server.proc.terminate()
        server.proc.wait()


async def test_redis_outage_mid_stream(
    consumer_settings: Settings, redis_client: aioredis.Redis, own_redis, caplog
) -> None:
    events = traffic(3000, seed=13)
    expected = await reference_state(consumer_settings, redis_client, events)
    s = consumer_settings.model_copy(
        update={"redis_url": own_redis.url, "consumer_max_records": 300}
    )
    client = aioredis.from_url(own_redis.url)
    await wait_until(lambda: _pings(client), 10, "own redis")
    half = len(events) // 2
    async with running(s) as service:
        await publish(s, events[:half])
        await wait_until(lambda: _reached(client, s, 100))
        own_redis.crash()
        await publish(s, events[half:])
        await wait_until(lambda: _not_ready(service), 20, "not ready")
        committed_during = await _committed(service)
        await asyncio.sleep(2)
        assert not service.readiness()[0]
        assert await _committed(service) == committed_during  # nothing committed meanwhile
        own_redis.start()
        await wait_until(lambda: _pings(client), 10, "redis back")
        await wait_until(lambda: _reached(client, s, len(events)), 120, "caught up")
        assert service.readiness() == (True, "ready")
    state = normalised(await dump_state(client, s.redis_key_prefix, s.topic_prefix))
    await client.aclose()
    assert state == expected
    outage_logs = [r for r in caplog.records if "redis unavailable" in r.getMessage()]
    assert len(outage_logs) == 1  # logged once per outage, not once per retry


async def _pings(client: aioredis.Redis) -> bool:
    try:
        return bool(await client.ping())
    except Exception:
        return False


async def _not_ready(service) -> bool:
    return not service.readiness()[0]


async def _committed(service) -> dict:
    return {tp: await service.consumer.committed(tp) for tp in service.consumer.assignment()}
