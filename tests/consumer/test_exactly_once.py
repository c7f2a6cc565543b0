"""Replays, crashes and rebalances leave Redis as a clean run would (Redis outages and longer
fault loops: tests/reliability)."""

import asyncio
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import redis.asyncio as aioredis

from producer import synthetic
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
        # A killed member holds its partitions until its session expires (10 s by default).
        "CLICKTUNE_CONSUMER_SESSION_TIMEOUT_MS": "2000",
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
