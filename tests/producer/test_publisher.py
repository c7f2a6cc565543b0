"""The SDK against a real broker: every message type round-trips, sessions stay ordered."""

import asyncio
import json
from collections import defaultdict

from producer.event_publisher import EventPublisher, topic_of
from producer.publisher import ClickstreamPublisher, publish_release
from producer.settings import Settings
from schemas import decode
from schemas.examples import EXAMPLE_TIME, example
from schemas.topics import ALL_TOPICS, CLICKSTREAM, RELEASE
from tests.conftest import read_topic


async def test_every_message_type_round_trips_through_the_broker(settings: Settings) -> None:
    events = [example(m) for t in ALL_TOPICS for m in t.messages]
    async with EventPublisher(settings) as publisher:
        acks = [await publisher.publish(e) for e in events]
    assert all(a.offset >= 0 for a in acks)
    by_topic = defaultdict(list)
    for event in events:
        by_topic[topic_of(event)].append(event)
    for spec, sent in by_topic.items():
        records = await read_topic(settings, spec, len(sent))
        assert {r.topic for r in records} == {settings.topic(spec)}
        received = [decode(spec, r.value, now=EXAMPLE_TIME) for r in records]
        assert sorted(received, key=lambda e: e.event_id) == sorted(sent, key=lambda e: e.event_id)
        for record in records:
            event = decode(spec, record.value, now=EXAMPLE_TIME)
            assert record.key == event.kafka_key().encode()


async def test_sessions_stay_in_one_partition_in_order(settings: Settings) -> None:
    sessions = [f"session-{n}" for n in range(12)]
    per_session = 150
    async with ClickstreamPublisher(settings) as publisher:
        futures = []
        # Interleave sessions so ordering is not an accident of sending one at a time.
        for k in range(per_session):
            for session in sessions:
                futures.append(
                    await publisher.click(session, f"item-{k}", event_id=f"{session}:{k}")
                )
        await publisher.flush()
        acks = await asyncio.gather(*futures)
    assert len(acks) == len(sessions) * per_session

    records = await read_topic(settings, CLICKSTREAM, len(acks))
    seen: dict[str, list[int]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        event = json.loads(record.value)
        seen[event["session_id"]].append(int(event["event_id"].split(":")[1]))
        partitions[event["session_id"]].add(record.partition)
    assert set(seen) == set(sessions)
    for session in sessions:
        assert seen[session] == list(range(per_session)), session
        assert len(partitions[session]) == 1
    # Twelve keys over six partitions: the load is actually spread.
    assert len({p for ps in partitions.values() for p in ps}) > 1


async def test_sdk_helpers_build_valid_events(settings: Settings) -> None:
    async with ClickstreamPublisher(settings) as publisher:
        await publisher.item("sku-1", "Gaming mouse pad, XL")
        await publisher.search(
            "s1", "mouse pad", ["sku-1", {"item_id": "sku-2", "rank": 2}], user_id="u1"
        )
        await publisher.click("s1", "sku-1")
        await publisher.irrelevant("s2")
        await publisher.flush()
    records = await read_topic(settings, CLICKSTREAM, 4)
    events = {
        decode(CLICKSTREAM, r.value).type: (r.key, decode(CLICKSTREAM, r.value)) for r in records
    }
    assert set(events) == {"item", "search", "click", "irrelevant"}
    key, search = events["search"]
    assert key == b"s1"
    assert [(r["item_id"], r["rank"]) for r in search.results] == [("sku-1", 1), ("sku-2", 2)]
    assert events["item"][0] == b"sku-1"


async def test_publish_release_is_keyed_by_idempotency_key(settings: Settings) -> None:
    first = await publish_release(settings, idempotency_key="nightly-1", metadata={"n": 1})
    second = await publish_release(settings, fine_tuning_method="ecommerce", batch_id="b-7")
    records = await read_topic(settings, RELEASE, 2)
    by_id = {decode(RELEASE, r.value).event_id: r for r in records}
    assert by_id[first.event_id].key == b"nightly-1"
    assert by_id[second.event_id].key == second.event_id.encode()
    released = decode(RELEASE, by_id[second.event_id].value)
    assert released.batch_id == "b-7"
    assert released.fine_tuning_method == "ecommerce"
