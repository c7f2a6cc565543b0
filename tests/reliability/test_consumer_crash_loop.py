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
from schemas.topics import TASKS
from tests.conftest import read_topic
from tests.consumer.conftest import (
    _outbox_empty,
    applied_records,
    dump_state,
    normalised,
    wait_until,
)
from tests.reliability.conftest import (
    applied_at_least,
    consume_env,
    key_exists,
    kill_9,
    publish_paced,
    reliable,
    start_consumer,
    start_reference,
    tally,
    terminate,
    traffic,
)

KILLS = 20
PUBLISH_S = 60  # the events arrive over about this long, while the consumer is killed


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
    s = reliable(consumer_settings).model_copy(update={"consumer_max_records": 1000})
    events = traffic(42_700, seed=31)
    assert len(events) >= 100_000
    release = ReleaseEvent.create(idempotency_key="crash-loop")
    started = time.monotonic()
    env = consume_env(s, cli_env)
    log = tmp_path / "consumer.log"
    reference = start_reference(s, cli_env, tmp_path / "reference.log")
    processes.append(reference.proc)
    ref = reference.settings
    rng = random.Random(20)
    sent = [0]
    publishing = asyncio.create_task(publish_paced(s, events, PUBLISH_S, sent))
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
        await wait_until(
            lambda run=run: applied_at_least(redis_client, run, len(events)), 120, "all applied"
        )
    # Once every event is in, the release (read in the same order by both runs).
    async with EventPublisher(s) as publisher:
        await publisher.publish(release)
    for run, process, process_log in ((s, proc, log), (ref, reference.proc, reference.log)):
        task = Keys(run.redis_key_prefix).task("task-b000001")
        await wait_until(lambda task=task: key_exists(redis_client, task), 60, "the task")
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


async def _progress(
    client: aioredis.Redis, s: Settings, start: int, publishing: asyncio.Task[None], total: int
) -> bool:
    applied = await applied_records(client, s)
    return applied > start or (publishing.done() and applied >= total)
