"""kill -9 the consumer over and over while 100k events arrive: Redis ends as a clean run's."""

import asyncio
import random
import subprocess
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from consumer.keys import Keys
from producer.event_publisher import EventPublisher
from producer.settings import Settings
from schemas import ReleaseEvent, decode
from schemas.base import Event
from schemas.topics import DLQ, MODELS, STATUS, TASKS
from tests.conftest import read_topic
from tests.consumer.conftest import (
    _outbox_empty,
    applied_records,
    dump_state,
    normalised,
    wait_until,
)
from tests.reliability.conftest import (
    consume_env,
    kill_9,
    start_consumer,
    tally,
    terminate,
    traffic,
)

KILLS = 20
PUBLISH_S = 60  # the events arrive over about this long, while the consumer is killed
#: A member killed while it leads the group stalls the next join until its session expires.
SESSION_TIMEOUT_MS = 2000


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_crash_loop_kill_9_while_100k_events_arrive(
    consumer_settings: Settings,
    redis_client: aioredis.Redis,
    cli_env: dict[str, str],
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
    report,
) -> None:
    s = consumer_settings.model_copy(
        update={"consumer_max_records": 1000, "consumer_session_timeout_ms": SESSION_TIMEOUT_MS}
    )
    events = traffic(42_700, seed=31)
    assert len(events) >= 100_000
    release = ReleaseEvent.create(idempotency_key="crash-loop")
    started = time.monotonic()
    env = consume_env(s, cli_env)
    log = tmp_path / "consumer.log"
    # The clean run: one consumer never killed, reading the same records in its own group
    # into its own keys (and publishing its task elsewhere).
    ref = s.model_copy(
        update={
            "redis_key_prefix": f"ref-{s.redis_key_prefix}",
            "consumer_group": f"{s.consumer_group}-ref",
        }
    )
    ref_env = consume_env(ref, cli_env) | {
        f"CLICKTUNE_TOPIC_{spec.key.upper()}": f"ref-{s.topic(spec)}"
        for spec in (TASKS, STATUS, MODELS, DLQ)
    }
    ref_log = tmp_path / "reference.log"
    reference = start_consumer(ref_env, ref_log)
    processes.append(reference)
    rng = random.Random(20)
    sent = [0]
    publishing = asyncio.create_task(_publish_paced(s, events, PUBLISH_S, sent))
    killed_at: list[int] = []
    starting = 0
    while len(killed_at) < KILLS:
        proc = start_consumer(env, log)
        processes.append(proc)
        if rng.random() < 0.25:  # while it starts, joins the group, seeks to the marks
            starting += 1
            await asyncio.sleep(rng.uniform(0.2, 2.5))
        else:  # while it applies and commits
            start = await applied_records(redis_client, s)
            await wait_until(
                lambda start=start: _progress(redis_client, s, start, publishing, len(events)),
                60,
                "progress after a restart",
            )
            await asyncio.sleep(rng.uniform(0.0, 1.0))
        kill_9(proc)
        killed_at.append(await applied_records(redis_client, s))
    published_during = sent[0]
    proc = start_consumer(env, log)
    processes.append(proc)
    await publishing
    for run in (s, ref):
        await wait_until(lambda run=run: _applied(redis_client, run, len(events)), 120, "all")
    # Once every event is in, the release (read in the same order by both runs).
    async with EventPublisher(s) as publisher:
        await publisher.publish(release)
    for run, process, process_log in ((s, proc, log), (ref, reference, ref_log)):
        task = Keys(run.redis_key_prefix).task("task-b000001")
        await wait_until(lambda task=task: _exists(redis_client, task), 60, "the task")
        await wait_until(lambda run=run: _outbox_empty(redis_client, run), 60, "outbox")
        terminate(process, process_log)
    state = normalised(await dump_state(redis_client, s.redis_key_prefix, s.topic_prefix))
    expected = normalised(await dump_state(redis_client, ref.redis_key_prefix, s.topic_prefix))
    counts = tally(state, events)
    mid_stream = sum(1 for n in killed_at if 0 < n < len(events))
    report(
        f"crash loop: {len(killed_at)} kill -9 survived ({starting} while starting, "
        f"{mid_stream} before the stream was all applied, "
        f"{published_during} of {len(events)} records published by the last kill), "
        f"{len(events)} records / {counts.events} distinct session events in "
        f"{counts.sessions} sessions, lost {counts.lost}, double-applied {counts.doubled}, "
        f"state {'equals' if state == expected else 'DIFFERS from'} a clean run, "
        f"{time.monotonic() - started:.0f} s"
    )
    assert counts.exact, counts
    assert mid_stream >= KILLS // 2, killed_at
    assert state == expected
    tasks = await read_topic(s, TASKS, 1, wait_s=3)
    assert [decode(TASKS, t.value).event_id for t in tasks] == ["task-b000001:task"]


async def _publish_paced(
    settings: Settings, events: list[Event], seconds: float, sent: list[int]
) -> None:
    """Publish ``events`` in order (one producer: the same partitions and offsets as the
    clean run) spread over about ``seconds``; ``sent[0]`` counts them."""
    chunk = max(1, len(events) // int(seconds * 4))
    async with EventPublisher(settings) as publisher:
        began = time.monotonic()
        for i in range(0, len(events), chunk):
            for event in events[i : i + chunk]:
                await publisher.send(event)
            await publisher.flush()
            sent[0] += len(events[i : i + chunk])
            due = began + seconds * sent[0] / len(events)
            await asyncio.sleep(max(0.0, due - time.monotonic()))


async def _progress(
    client: aioredis.Redis, s: Settings, start: int, publishing: asyncio.Task[None], total: int
) -> bool:
    applied = await applied_records(client, s)
    return applied > start or (publishing.done() and applied >= total)


async def _applied(client: aioredis.Redis, s: Settings, n: int) -> bool:
    return await applied_records(client, s) >= n


async def _exists(client: aioredis.Redis, key: str) -> bool:
    return bool(await client.exists(key))
