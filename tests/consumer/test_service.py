"""The consumer service against the real broker and Redis."""

import asyncio
import json
import urllib.request
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from consumer.keys import Keys
from producer import synthetic
from producer.event_publisher import EventPublisher
from producer.settings import Settings
from schemas import ClickEvent, ReleaseEvent, SearchEvent, decode
from schemas import dead_letter as dl
from schemas.limits import MAX_MESSAGE_BYTES
from schemas.topics import CLICKSTREAM, DLQ, RELEASE, STATUS, TASKS
from tests.conftest import read_topic
from tests.consumer.conftest import consumed, publish, running, wait_until


async def test_sessions_land_in_redis_and_a_release_emits_one_task(
    consumer_settings: Settings, redis_client: aioredis.Redis
) -> None:
    events = list(synthetic.sessions(300, seed=1))
    keys = Keys(consumer_settings.redis_key_prefix)
    async with running(consumer_settings) as service:
        await publish(consumer_settings, events)
        await wait_until(lambda: _is(consumed(service), len(events)), what="all consumed")
        open_batch = (await redis_client.get(keys.open_batch)).decode()
        assert await redis_client.scard(keys.batch_sessions(open_batch)) == 300
        await publish(consumer_settings, [ReleaseEvent.create(idempotency_key="k")] * 1)
        await publish(consumer_settings, [ReleaseEvent.create(idempotency_key="k")])
        await wait_until(lambda: _is(consumed(service), len(events) + 2), what="releases")
    tasks = await read_topic(consumer_settings, TASKS, 1)
    task = decode(TASKS, tasks[0].value)
    assert task.batch_id == open_batch and task.session_count == 300
    assert tasks[0].key == task.task_id.encode()
    [status] = await read_topic(consumer_settings, STATUS, 1)
    assert decode(STATUS, status.value).status == "pending"
    # Nothing more was emitted for the repeated release.
    assert len(await read_topic(consumer_settings, TASKS, 1, wait_s=3)) == 1
    assert await redis_client.get(keys.open_batch) is None


async def _is(value: float, expected: int) -> bool:
    return value >= expected


async def test_bad_input_is_dead_lettered_and_the_next_event_applied(
    consumer_settings: Settings, redis_client: aioredis.Redis
) -> None:
    s = consumer_settings
    good = SearchEvent.create(session_id="good", query="q", results=[{"item_id": "i"}])
    bad_values = {
        "undecodable": b"\xff\xfe not utf-8",
        "empty": b"",
        "schema": json.dumps(
            {**json.loads(good.model_dump_json()), "results": [{"item_id": "a", "rank": 0}]}
        ).encode(),
        "unknown_type": json.dumps(
            {**json.loads(good.model_dump_json()), "type": "purchase"}
        ).encode(),
        "wrong_topic": ReleaseEvent.create().model_dump_json().encode(),
        "unsupported_version": json.dumps(
            {**json.loads(good.model_dump_json()), "schema_version": 9}
        ).encode(),
        "oversize": b'{"type":"search","pad":"' + b"x" * MAX_MESSAGE_BYTES + b'"}',
    }
    raw = AIOKafkaProducer(
        bootstrap_servers=s.kafka_bootstrap_servers, max_request_size=4 * MAX_MESSAGE_BYTES
    )
    async with running(s) as service:
        await raw.start()
        try:
            for n, (reason, value) in enumerate(bad_values.items()):
                await raw.send_and_wait(
                    s.topic(CLICKSTREAM), value, key=f"key-{reason}".encode(), partition=0
                )
                follow = ClickEvent.create(session_id=f"after-{n}", item_id="i")
                await raw.send_and_wait(
                    s.topic(CLICKSTREAM), follow.model_dump_json().encode(), key=b"k", partition=0
                )
            await raw.send_and_wait(
                s.topic(RELEASE),
                ReleaseEvent.create(batch_id="nope").model_dump_json().encode(),
                key=b"rk",
            )
        finally:
            await raw.stop()
        await wait_until(lambda: _is(consumed(service), 2 * len(bad_values) + 1))
        dlq = await read_topic(s, DLQ, len(bad_values) + 1)
    keys = Keys(s.redis_key_prefix)
    for n in range(len(bad_values)):
        assert await redis_client.hget(keys.session(f"after-{n}"), "clicks") == b"1"
    by_reason = {}
    for record in dlq:
        headers = {k: v.decode() for k, v in record.headers}
        by_reason[headers[dl.HEADER_REASON]] = (record, headers)
    assert set(by_reason) == set(bad_values) | {"unknown_batch"}
    for reason, value in bad_values.items():
        record, headers = by_reason[reason]
        if reason == "oversize":  # parked cut, with its real size
            assert int(headers[dl.HEADER_ORIGINAL_SIZE]) == len(value)
            assert record.value == value[: dl.MAX_DEAD_LETTER_VALUE_BYTES]
        else:
            assert record.value == value, reason
            assert dl.HEADER_ORIGINAL_SIZE not in headers
        assert record.key == f"key-{reason}".encode()
        assert headers[dl.HEADER_SOURCE_TOPIC] == s.topic(CLICKSTREAM)
        assert headers[dl.HEADER_SOURCE_PARTITION] == "0"
        assert int(headers[dl.HEADER_SOURCE_OFFSET]) == 2 * list(bad_values).index(reason)
        assert headers[dl.HEADER_DETAIL]
    record, headers = by_reason["unknown_batch"]
    assert "nope" in headers[dl.HEADER_DETAIL] and record.key == b"rk"
    assert decode(RELEASE, record.value).batch_id == "nope"


def _scrape(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, value = line.rsplit(" ", 1)
        if series.split("{")[0] != name:
            continue
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
    return total


async def test_metrics_and_probes(consumer_settings: Settings) -> None:
    s = consumer_settings
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    events = [
        SearchEvent.create(session_id="m1", query="q", results=[{"item_id": "a"}], occurred_at=t0),
        ClickEvent.create(session_id="m1", item_id="a", event_id="c1", occurred_at=t0),
        ClickEvent.create(session_id="m1", item_id="a", event_id="c1", occurred_at=t0),
        SearchEvent.create(session_id="m2", query="q", results=[{"item_id": "b"}], occurred_at=t0),
    ]
    async with running(s) as service:
        port = service.health.port
        assert _scrape(port, "/healthz")[0] == 200
        assert _scrape(port, "/readyz") == (200, "ok: ready\n")
        await publish(s, events)
        async with EventPublisher(s) as pub:
            await pub.send_raw(s.topic(CLICKSTREAM), b"{oops", b"m3")
        await publish(s, [ReleaseEvent.create()])
        await wait_until(lambda: _is(consumed(service), 6))
        await wait_until(lambda: _done_emitting(port))
        status, text = _scrape(port, "/metrics")
    assert status == 200
    assert _metric(text, "clicktune_events_consumed_total", type="search") == 2
    assert _metric(text, "clicktune_events_consumed_total", type="click") == 2
    assert _metric(text, "clicktune_events_applied_total", type="click") == 1
    assert _metric(text, "clicktune_events_duplicate_total", type="click", kind="event_id") == 1
    assert _metric(text, "clicktune_events_invalid_total", type="unknown") == 1
    assert _metric(text, "clicktune_dlq_messages_total", reason="undecodable") == 1
    assert _metric(text, "clicktune_releases_total", outcome="created") == 1
    assert _metric(text, "clicktune_tasks_emitted_total") == 1
    assert _metric(text, "clicktune_open_batch_sessions") == 0
    assert _metric(text, "clicktune_redis_write_duration_seconds_count") >= 1
    assert _metric(text, "clicktune_batch_apply_duration_seconds_count") >= 1
    assert _metric(text, "clicktune_consumer_lag_messages") == 0
    assert _metric(text, "clicktune_last_applied_event_timestamp_seconds") >= t0.timestamp() - 1
    assert _metric(text, "clicktune_consumer_ready") == 1
    for line in text.splitlines():  # bounded labels only
        assert "m1" not in line and "session_id" not in line and "user" not in line


async def _done_emitting(port: int) -> bool:
    return _metric(_scrape(port, "/metrics")[1], "clicktune_tasks_emitted_total") >= 1


def _post(url: str) -> int:
    request = urllib.request.Request(url, method="POST", data=b"")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_probes_are_read_only(consumer_settings: Settings) -> None:
    async with running(consumer_settings) as service:
        port = service.health.port
        for path in ("/readyz", "/healthz", "/metrics"):
            assert await asyncio.to_thread(_post, f"http://127.0.0.1:{port}{path}") == 405


async def test_automatic_release_by_age(
    consumer_settings: Settings, redis_client: aioredis.Redis
) -> None:
    s = consumer_settings.model_copy(update={"auto_release_age_s": 1.0})
    async with running(s) as service:
        await publish(s, list(synthetic.sessions(20, seed=2)))
        await wait_until(lambda: _is(consumed(service), 20))
        tasks = await read_topic(s, TASKS, 1, wait_s=20)
    task = decode(TASKS, tasks[0].value)
    assert task.session_count == 20
    assert task.metadata == {"auto_release": "age"}
    assert task.idempotency_key == f"auto-{task.batch_id}"
    keys = Keys(s.redis_key_prefix)
    assert await redis_client.hget(keys.batch(task.batch_id), "state") == b"frozen"
