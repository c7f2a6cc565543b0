"""Fault harnesses: real processes killed, services stopped, state compared with a clean run.

Each harness prints one line saying what it tried and what survived; the lines are repeated
at the end of the pytest output (``report`` fixture), so CI logs show them without ``-s``.
"""

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from consumer.keys import Keys
from producer import synthetic
from producer.broker import EmbeddedBroker, free_port
from producer.event_publisher import EventPublisher
from producer.kafka_config import consumer_kwargs
from producer.settings import Settings
from schemas.base import Event
from schemas.clickstream import ClickEvent, IrrelevantEvent, SearchEvent
from schemas.topics import DLQ, MODELS, STATUS, TASKS, TopicSpec
from tests.consumer.conftest import (
    _drop_keys,  # noqa: F401  (the same key clean-up)
    _outbox_empty,
    applied_records,
    dump_state,
    normalised,
    publish,
    running,
    wait_until,
)

CLICKTUNE = str(Path(sys.executable).with_name("clicktune"))
#: Short, so that a member killed with -9 hands its partitions over in seconds (one killed
#: while it leads the group stalls the next join until its session expires).
SESSION_TIMEOUT_MS = 2000
_REPORTS = pytest.StashKey[list[str]]()


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Print a harness's result line now and again in the terminal summary."""

    def emit(line: str) -> None:
        print(f"\n{line}", flush=True)
        request.config.stash.setdefault(_REPORTS, []).append(line)

    return emit


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    lines = config.stash.get(_REPORTS, [])
    if lines:
        terminalreporter.section("reliability harnesses")
        for line in lines:
            terminalreporter.write_line(line)


def traffic(sessions: int, seed: int, catalog: int = 200) -> list[Event]:
    """Catalog items, then sessions, with the resends a producer retry makes."""
    events: list[Event] = [
        *synthetic.catalog(catalog),
        *synthetic.sessions(sessions, seed=seed, catalog_size=catalog),
    ]
    return events + [events[i] for i in range(5, len(events), 97)]


def reliable(settings: Settings) -> Settings:
    return settings.model_copy(update={"consumer_session_timeout_ms": SESSION_TIMEOUT_MS})


def consume_env(settings: Settings, cli_env: dict[str, str]) -> dict[str, str]:
    """The environment of a `clicktune consume` process with ``settings``."""
    return {
        **cli_env,
        "CLICKTUNE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "CLICKTUNE_REDIS_URL": settings.redis_url,
        "CLICKTUNE_REDIS_KEY_PREFIX": settings.redis_key_prefix,
        "CLICKTUNE_CONSUMER_GROUP": settings.consumer_group,
        "CLICKTUNE_METRICS_PORT": "0",
        "CLICKTUNE_CONSUMER_MAX_RECORDS": str(settings.consumer_max_records),
        "CLICKTUNE_CONSUMER_POLL_TIMEOUT_MS": str(settings.consumer_poll_timeout_ms),
        "CLICKTUNE_CONSUMER_SESSION_TIMEOUT_MS": str(settings.consumer_session_timeout_ms),
        "CLICKTUNE_RETRY_BACKOFF_MAX_S": str(settings.retry_backoff_max_s),
    }


def start_consumer(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`clicktune consume` in its own process group (kill -9 reaches all of it)."""
    with log.open("ab") as err:
        return subprocess.Popen(
            [CLICKTUNE, "consume"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )


def kill_9(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def terminate(proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    """SIGTERM, and the clean exit it must lead to."""
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout)
    assert code == 0, f"consumer exited {code}: {log.read_text()[-3000:]}"


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test started; any still running at the end is killed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            kill_9(proc)


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker of this test's own, which it may stop and restart."""
    broker = EmbeddedBroker(log_file=tmp_path / "tansu.log").start()
    yield broker
    broker.stop()


class RedisServer:
    """A redis-server of a test's own, with an append-only file fsynced on every write so
    that a restart keeps every acknowledged write. Never the shared one at 6379."""

    def __init__(self, binary: str, port: int, data: Path) -> None:
        self.url = f"redis://127.0.0.1:{port}/0"
        self._cmd = [
            *(binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""),
            *("--appendonly", "yes", "--appendfsync", "always", "--dir", str(data)),
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self._cmd, stdout=subprocess.DEVNULL)

    def crash(self) -> None:
        """SIGKILL, as a crashed or OOM-killed server."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        """SIGTERM: a clean shutdown."""
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(30)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (Debian package redis-server)")
    data = tmp_path / "redis"
    data.mkdir()
    server = RedisServer(binary, free_port(), data)
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.stop()


@dataclass(frozen=True)
class Tally:
    """Session events expected from the published traffic against what Redis holds."""

    sessions: int
    events: int
    lost: int
    doubled: int

    @property
    def exact(self) -> bool:
        return self.lost == 0 and self.doubled == 0


def tally(state: dict[str, Any], events: list[Event]) -> Tally:
    """Count, per session, events and clicks in Redis against the distinct events published
    (resends share an event id, so each counts once): a missing one is lost, an extra one
    was applied twice."""
    want_events: Counter[str] = Counter()
    want_clicks: Counter[str] = Counter()
    seen: set[str] = set()
    for e in events:
        if not isinstance(e, SearchEvent | ClickEvent | IrrelevantEvent) or e.event_id in seen:
            continue
        seen.add(e.event_id)
        want_events[e.session_id] += 1
        if isinstance(e, ClickEvent):
            want_clicks[e.session_id] += 1
    keys = Keys("")  # dump_state drops the prefix
    lost = doubled = 0
    for sid, want in want_events.items():
        got = int(state.get(keys.session(sid), {}).get("events", 0))
        clicks = len(state.get(keys.session_clicks(sid), []))
        for have, expected in ((got, want), (clicks, want_clicks[sid])):
            lost += max(0, expected - have)
            doubled += max(0, have - expected)
    for key, value in state.items():  # sessions nobody published
        sid = key.removeprefix(keys.session(""))
        if key != sid and sid not in want_events and isinstance(value, dict):
            doubled += int(value.get("events", 0))
    return Tally(len(want_events), len(seen), lost, doubled)


async def clean_run(
    settings: Settings, client: aioredis.Redis, phases: list[list[Event]]
) -> dict[str, Any]:
    """Redis after one uninterrupted consumer over ``phases``, each published once the one
    before is applied (normalised; offset marks left out: they belong to one log)."""
    ref = settings.model_copy(
        update={
            "topic_prefix": f"ref-{settings.topic_prefix}",
            "redis_key_prefix": f"ref-{settings.redis_key_prefix}",
            "consumer_group": f"{settings.consumer_group}-ref",
        }
    )
    async with running(ref) as service:
        total = 0
        for phase in phases:
            total += await publish(ref, phase)
            await wait_until(lambda n=total: _consumed(service, n), 120, "reference run")
            await wait_until(lambda: _outbox_empty(client, ref), 30, "reference outbox")
    return without_marks(await dump_state(client, ref.redis_key_prefix, ref.topic_prefix))


def without_marks(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in normalised(state).items() if k != "offsets"}


async def _consumed(service: Any, n: int) -> bool:
    return (
        sum(
            s.value
            for m in service.metrics.consumed.collect()
            for s in m.samples
            if s.name.endswith("_total")
        )
        >= n
    )


async def read_all(settings: Settings, spec: TopicSpec) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of a topic, read up to each partition's high watermark (no group)."""
    topic = settings.topic(spec)
    consumer = AIOKafkaConsumer(**consumer_kwargs(settings, group_id=None, client_suffix="all"))
    await consumer.start()
    try:
        assert topic in await consumer.topics(), topic  # also loads the partitions
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[ConsumerRecord[bytes, bytes]] = []
        async with asyncio.timeout(30):
            while True:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    records.extend(batch)
                highs = [consumer.highwater(tp) for tp in tps]
                at = [await consumer.position(tp) for tp in tps]
                if all(h is not None and p >= h for p, h in zip(at, highs, strict=True)):
                    return records
    finally:
        await consumer.stop()


@dataclass
class Reference:
    """The clean run of a fault harness: one `clicktune consume` never disturbed, reading the
    same records (same topics, so the same offsets) in its own group into its own keys, and
    publishing its tasks, statuses and dead letters to topics of its own."""

    settings: Settings
    proc: subprocess.Popen[bytes]
    log: Path


def start_reference(settings: Settings, cli_env: dict[str, str], log: Path) -> Reference:
    ref = settings.model_copy(
        update={
            "redis_key_prefix": f"ref-{settings.redis_key_prefix}",
            "consumer_group": f"{settings.consumer_group}-ref",
        }
    )
    env = consume_env(ref, cli_env) | {
        f"CLICKTUNE_TOPIC_{spec.key.upper()}": f"ref-{settings.topic(spec)}"
        for spec in (TASKS, STATUS, MODELS, DLQ)
    }
    return Reference(ref, start_consumer(env, log), log)


async def publish_paced(
    settings: Settings, events: list[Event], seconds: float, sent: list[int] | None = None
) -> None:
    """Publish ``events`` in order, spread over about ``seconds`` (one producer: the same
    partitions and offsets as any other run over them); ``sent[0]`` counts them."""
    chunk = max(1, len(events) // int(seconds * 4))
    async with EventPublisher(settings) as publisher:
        began = time.monotonic()
        for i in range(0, len(events), chunk):
            for event in events[i : i + chunk]:
                await publisher.send(event)
            await publisher.flush()
            done = min(len(events), i + chunk)
            if sent is not None:
                sent[0] = done
            await asyncio.sleep(max(0.0, began + seconds * done / len(events) - time.monotonic()))


async def applied_at_least(client: aioredis.Redis, settings: Settings, n: int) -> bool:
    return await applied_records(client, settings) >= n


async def key_exists(client: aioredis.Redis, key: str) -> bool:
    return bool(await client.exists(key))
