"""The apply script against real Redis: replays, duplicates, joins, late events, releases."""

import json
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from consumer.entries import skipped, to_entry
from consumer.keys import Keys
from consumer.store import Outcome, PartitionBatch, RedisStore
from consumer.tasks import TaskStore, finish_task
from producer.settings import Settings
from schemas import ClickEvent, IrrelevantEvent, ItemEvent, ReleaseEvent, SearchEvent, TaskStatus

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)


@pytest.fixture
def store(consumer_settings: Settings, redis_client: aioredis.Redis) -> RedisStore:
    return RedisStore(redis_client, consumer_settings)


def search(sid: str, items: list[str], eid: str | None = None, at: int = 0) -> SearchEvent:
    return SearchEvent.create(
        event_id=eid or f"{sid}:search",
        occurred_at=T0 + timedelta(seconds=at),
        session_id=sid,
        query=f"query of {sid}",
        results=[{"item_id": i, "text": f"text {i}"} for i in items],
    )


def click(sid: str, item: str, eid: str, at: int = 1) -> ClickEvent:
    return ClickEvent.create(
        event_id=eid, occurred_at=T0 + timedelta(seconds=at), session_id=sid, item_id=item
    )


def release(eid: str, **fields: object) -> ReleaseEvent:
    return ReleaseEvent.create(event_id=eid, occurred_at=T0 + timedelta(seconds=30), **fields)


async def apply(store: RedisStore, tp: str, events: list, first_offset: int = 0):
    entries = [
        to_entry(first_offset + i, e, raw=e.model_dump_json().encode())
        for i, e in enumerate(events)
    ]
    [result] = await store.apply([PartitionBatch(tp, entries, tp.split(":")[0], 0)])
    return result


async def test_replayed_offsets_are_skipped(store: RedisStore, redis_client) -> None:
    events = [search("a", ["i1", "i2"]), click("a", "i2", "c1")]
    first = await apply(store, "ev:0", events)
    assert first.outcomes == [Outcome.APPLIED, Outcome.APPLIED]
    assert first.mark == 1
    again = await apply(store, "ev:0", events)
    assert again.outcomes == [Outcome.REPLAY, Outcome.REPLAY]
    # Overlapping: one old record, one new.
    overlap = await apply(store, "ev:0", [click("a", "i1", "c2")], first_offset=1)
    assert overlap.outcomes == [Outcome.REPLAY]
    newer = await apply(store, "ev:0", [click("a", "i1", "c2")], first_offset=2)
    assert newer.outcomes == [Outcome.APPLIED]
    keys = Keys(store.settings.redis_key_prefix)
    assert await redis_client.llen(keys.session_clicks("a")) == 2
    # Marks are per partition.
    other = await apply(store, "ev:1", [click("b", "i1", "c9")])
    assert other.outcomes == [Outcome.APPLIED]
    assert await store.marks(["ev:0", "ev:1", "ev:2"]) == {"ev:0": 2, "ev:1": 0, "ev:2": None}


async def test_duplicate_event_ids_within_a_session(store: RedisStore, redis_client) -> None:
    result = await apply(
        store,
        "ev:0",
        [
            search("a", ["i1", "i2"]),
            click("a", "i1", "dup"),
            click("a", "i1", "dup"),
            click("a", "i2", "other"),
        ],
    )
    assert result.outcomes == [Outcome.APPLIED, Outcome.APPLIED, Outcome.DUPLICATE, Outcome.APPLIED]
    keys = Keys(store.settings.redis_key_prefix)
    clicks = [json.loads(c) for c in await redis_client.lrange(keys.session_clicks("a"), 0, -1)]
    assert [c["item_id"] for c in clicks] == ["i1", "i2"]


async def test_click_before_its_search_is_joined(store: RedisStore, redis_client) -> None:
    r1 = await apply(store, "ev:0", [click("a", "i2", "c1", at=5)])
    r2 = await apply(store, "ev:0", [search("a", ["i1", "i2"], at=0)], first_offset=1)
    assert r1.outcomes == r2.outcomes == [Outcome.APPLIED]
    keys = Keys(store.settings.redis_key_prefix)
    session = {
        k.decode(): v.decode() for k, v in (await redis_client.hgetall(keys.session("a"))).items()
    }
    assert session["query"] == "query of a"
    assert json.loads(session["results"]) == [["i1", 1], ["i2", 2]]
    assert session["clicks"] == "1"
    assert int(session["first_at"]) == int(T0.timestamp() * 1000)
    assert int(session["last_at"]) == int((T0 + timedelta(seconds=5)).timestamp() * 1000)
    assert await redis_client.scard(keys.batch_sessions(session["batch_id"])) == 1


async def test_catalog_from_results_and_item_events(store: RedisStore, redis_client) -> None:
    await apply(
        store,
        "ev:0",
        [
            search("a", ["i1", "i2"]),
            ItemEvent.create(item_id="i1", text="new text of i1"),
            ItemEvent.create(item_id="i3", text="only from an item event"),
        ],
    )
    keys = Keys(store.settings.redis_key_prefix)
    catalog = {
        k.decode(): v.decode() for k, v in (await redis_client.hgetall(keys.catalog)).items()
    }
    assert catalog == {"i1": "new text of i1", "i2": "text i2", "i3": "only from an item event"}


async def test_release_freezes_and_late_events_stay_out(store: RedisStore, redis_client) -> None:
    await apply(store, "ev:0", [search("a", ["i1"]), search("b", ["i2"])])
    r = await apply(store, "rel:0", [release("r1", idempotency_key="k1")])
    [created] = r.releases
    assert created.outcome == "created" and created.task_id == f"task-{created.batch_id}"
    assert r.open_batch == ""
    # "a" belongs to the frozen batch: its click is late. "c" opens the next batch.
    after = await apply(
        store, "ev:0", [click("a", "i1", "late-1"), search("c", ["i3"])], first_offset=2
    )
    assert after.outcomes == [Outcome.LATE, Outcome.APPLIED]
    assert after.open_batch not in ("", created.batch_id)
    assert after.open_sessions == 1
    keys = Keys(store.settings.redis_key_prefix)
    frozen = keys.batch(created.batch_id)
    assert await redis_client.hget(frozen, "late") == b"1"
    assert await redis_client.hget(frozen, "sessions") == b"2"
    assert await redis_client.llen(keys.session_clicks("a")) == 0
    [late] = [
        json.loads(x) for x in await redis_client.lrange(keys.batch_late(created.batch_id), 0, -1)
    ]
    assert (late["type"], late["event_id"], late["data"]) == ("click", "late-1", "i1")
    assert sorted(
        m.decode() for m in await redis_client.smembers(keys.batch_sessions(created.batch_id))
    ) == ["a", "b"]


async def test_release_idempotency(store: RedisStore, redis_client) -> None:
    await apply(store, "ev:0", [search("a", ["i1"])])
    first = await apply(store, "rel:0", [release("r1", idempotency_key="nightly")])
    bid = first.releases[0].batch_id
    await apply(store, "ev:0", [search("b", ["i1"])], first_offset=1)
    # Same key again, a second event: same batch, no new task, the open batch stays open.
    same_key = await apply(
        store, "rel:0", [release("r2", idempotency_key="nightly")], first_offset=1
    )
    assert [(x.outcome, x.batch_id) for x in same_key.releases] == [("duplicate", bid)]
    assert same_key.open_sessions == 1
    # Same batch id again: same batch, no new task.
    same_batch = await apply(store, "rel:0", [release("r3", batch_id=bid)], first_offset=2)
    assert [(x.outcome, x.batch_id) for x in same_batch.releases] == [("duplicate", bid)]
    # The same release event (a producer retry at a new offset) is a duplicate too.
    resent = await apply(store, "rel:0", [release("r1", idempotency_key="nightly")], first_offset=3)
    assert resent.releases[0].outcome == "duplicate"
    keys = Keys(store.settings.redis_key_prefix)
    assert await redis_client.zcard(keys.tasks) == 1
    assert await redis_client.llen(keys.outbox) == 1
    task = await TaskStore(redis_client, store.settings.redis_key_prefix).get(f"task-{bid}")
    assert task is not None and task.status is TaskStatus.PENDING
    assert (task.batch_id, task.session_count, task.idempotency_key) == (bid, 1, "nightly")
    assert task.task_event().task_id == f"task-{bid}"


async def test_release_of_unknown_batch_and_with_nothing_open(
    store: RedisStore, redis_client
) -> None:
    nothing = await apply(store, "rel:0", [release("r0")])
    assert nothing.releases[0].outcome == "empty"
    unknown = await apply(store, "rel:0", [release("r1", batch_id="no-such-batch")], first_offset=1)
    assert unknown.releases[0].outcome == "unknown_batch"
    keys = Keys(store.settings.redis_key_prefix)
    [queued] = [json.loads(x) for x in await redis_client.lrange(keys.outbox, 0, -1)]
    assert queued["kind"] == "dlq" and queued["reason"] == "unknown_batch"
    assert json.loads(queued["value"])["batch_id"] == "no-such-batch"
    assert queued["offset"] == 1
    assert await redis_client.zcard(keys.tasks) == 0


async def test_irrelevant_and_caps(consumer_settings: Settings, redis_client) -> None:
    store = RedisStore(
        redis_client,
        consumer_settings.model_copy(
            update={"max_clicks_per_session": 2, "max_events_per_session": 4}
        ),
    )
    events = [search("a", ["i1", "i2", "i3"]), IrrelevantEvent.create(session_id="a")]
    events += [click("a", "i1", f"c{n}") for n in range(4)]
    result = await apply(store, "ev:0", events)
    assert result.outcomes == [
        Outcome.APPLIED,
        Outcome.APPLIED,
        Outcome.APPLIED,
        Outcome.APPLIED,
        Outcome.CUT,
        Outcome.CUT,
    ]
    keys = Keys(consumer_settings.redis_key_prefix)
    session = await redis_client.hgetall(keys.session("a"))
    assert session[b"irrelevant"] == b"1"
    assert session[b"clicks"] == b"2" and session[b"cut"] == b"2"
    assert await redis_client.scard(keys.session_event_ids("a")) == 4


async def test_automatic_release_by_session_count(
    consumer_settings: Settings, redis_client
) -> None:
    store = RedisStore(
        redis_client, consumer_settings.model_copy(update={"auto_release_sessions": 3})
    )
    result = await apply(store, "ev:0", [search(s, ["i1"]) for s in "abcde"])
    assert [r.outcome for r in result.releases] == ["created"]
    assert result.open_sessions == 2
    keys = Keys(consumer_settings.redis_key_prefix)
    bid = result.releases[0].batch_id
    assert await redis_client.hget(keys.batch(bid), "sessions") == b"3"


async def test_skipped_records_only_move_the_mark(store: RedisStore) -> None:
    [result] = await store.apply([PartitionBatch("ev:0", [skipped(0), skipped(1)])])
    assert result.outcomes == [Outcome.SKIPPED, Outcome.SKIPPED]
    assert await store.marks(["ev:0"]) == {"ev:0": 1}


async def test_finished_tasks_let_their_batch_expire(store: RedisStore, redis_client) -> None:
    await apply(store, "ev:0", [search("a", ["i1"]), click("a", "i1", "c1"), search("b", ["i2"])])
    r = await apply(store, "rel:0", [release("r1")])
    [created] = r.releases
    keys = Keys(store.settings.redis_key_prefix)
    prefix = store.settings.redis_key_prefix
    batch_keys = [
        keys.batch(created.batch_id),
        keys.batch_sessions(created.batch_id),
        keys.session("a"),
        keys.session_clicks("a"),
        keys.session_event_ids("a"),
        keys.session("b"),
    ]
    assert all([await redis_client.ttl(k) == -1 for k in batch_keys])  # kept while pending
    with pytest.raises(ValueError, match="not a final status"):
        await finish_task(
            redis_client, prefix, created.task_id, TaskStatus.PROCESSING, "", retention_s=60
        )
    record = await finish_task(
        redis_client, prefix, created.task_id, TaskStatus.DONE, "champion v1", retention_s=3600
    )
    assert record.status is TaskStatus.DONE and record.detail == "champion v1"
    assert record.updated_at > record.created_at
    for key in batch_keys:
        assert 3500 < await redis_client.ttl(key) <= 3600, key
    assert await redis_client.ttl(keys.task(created.task_id)) == -1
    assert await redis_client.ttl(keys.catalog) == -1
    with pytest.raises(KeyError):
        await TaskStore(redis_client, prefix).set_status("task-nope", TaskStatus.DONE)
