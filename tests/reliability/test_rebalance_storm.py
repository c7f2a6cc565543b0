"""Consumers join and leave the group over and over while events arrive (some leave cleanly
with SIGTERM, some are killed with -9): the state equals a clean run's."""

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
from tests.consumer.conftest import (
    _outbox_empty,
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
    read_all,
    reliable,
    start_consumer,
    start_reference,
    tally,
    terminate,
    traffic,
)

SLOTS = 4
STEPS = 18
PUBLISH_S = 45


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_rebalance_storm_equals_a_clean_run(
    consumer_settings: Settings,
    redis_client: aioredis.Redis,
    cli_env: dict[str, str],
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
    report,
) -> None:
    s = reliable(consumer_settings).model_copy(update={"consumer_max_records": 500})
    events = traffic(15_000, seed=51)
    started = time.monotonic()
    reference = start_reference(s, cli_env, tmp_path / "reference.log")
    processes.append(reference.proc)
    env = consume_env(s, cli_env)
    logs: list[Path] = [tmp_path / f"consumer-{i}.log" for i in range(SLOTS)]
    slots: list[subprocess.Popen[bytes] | None] = [None] * SLOTS
    publishing = asyncio.create_task(publish_paced(s, events, PUBLISH_S))
    rng = random.Random(52)
    done = {"join": 0, "SIGTERM": 0, "kill -9": 0}
    most = during = 0

    def join(i: int) -> None:
        logs[i] = tmp_path / f"consumer-{sum(done.values())}.log"  # one per process
        slots[i] = start_consumer(env, logs[i])
        processes.append(slots[i])
        done["join"] += 1

    for _ in range(STEPS):
        running = [i for i, p in enumerate(slots) if p is not None]
        free = [i for i, p in enumerate(slots) if p is None]
        action = rng.choices(["join", "SIGTERM", "kill -9"], [0.45, 0.3, 0.25])[0]
        if not running or (action == "join" and free):
            join(rng.choice(free))
        elif action == "join" or action == "SIGTERM":
            i = rng.choice(running)
            proc, slots[i] = slots[i], None
            assert proc is not None
            # A clean leave needs the signal handler, installed once the process is up
            # (before that SIGTERM just ends it, having done nothing yet).
            await wait_until(lambda i=i: _up(logs[i]), 60, "the consumer up")
            await asyncio.to_thread(terminate, proc, logs[i])
            done["SIGTERM"] += 1
        else:
            i = rng.choice(running)
            proc, slots[i] = slots[i], None
            assert proc is not None
            kill_9(proc)
            done["kill -9"] += 1
        most = max(most, sum(p is not None for p in slots))
        during += not publishing.done()
        await asyncio.sleep(rng.uniform(1.0, 3.0))
    if all(p is None for p in slots):
        join(0)
    await publishing
    ref = reference.settings
    for run in (s, ref):
        await wait_until(
            lambda run=run: applied_at_least(redis_client, run, len(events)), 120, "all applied"
        )
    release = ReleaseEvent.create(idempotency_key="storm")
    async with EventPublisher(s) as publisher:
        await publisher.publish(release)
    for run in (s, ref):
        task = Keys(run.redis_key_prefix).task("task-b000001")
        await wait_until(lambda task=task: key_exists(redis_client, task), 60, "the task")
        await wait_until(lambda run=run: _outbox_empty(redis_client, run), 60, "outbox")
    for i, proc in enumerate(slots):
        if proc is not None:
            await asyncio.to_thread(terminate, proc, logs[i])
    await asyncio.to_thread(terminate, reference.proc, reference.log)
    state = normalised(await dump_state(redis_client, s.redis_key_prefix, s.topic_prefix))
    expected = normalised(await dump_state(redis_client, ref.redis_key_prefix, s.topic_prefix))
    counts = tally(state, events)
    report(
        f"rebalance storm: {STEPS} membership changes on a seeded schedule ({done['join']} "
        f"joins, {done['SIGTERM']} SIGTERM leaves, {done['kill -9']} kill -9; up to {most} of "
        f"{SLOTS} members at once; {during} while the {len(events)} records were arriving), "
        f"lost {counts.lost}, double-applied {counts.doubled}, state "
        f"{'equals' if state == expected else 'DIFFERS from'} a clean run, "
        f"{time.monotonic() - started:.0f} s"
    )
    assert counts.exact, counts
    assert state == expected
    assert done["kill -9"] >= 2 and done["SIGTERM"] >= 2 and most >= 3, done
    assert during >= STEPS // 2
    tasks = [decode(TASKS, r.value) for r in await read_all(s, TASKS)]
    assert [t.task_id for t in tasks] == ["task-b000001"]


async def _up(log: Path) -> bool:
    return "metrics and probes" in await asyncio.to_thread(log.read_text)
