"""The event contracts: every type round-trips; every limit refuses with a clear reason."""

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from schemas import (
    ClickEvent,
    DeadLetterReason,
    InvalidEvent,
    ItemEvent,
    ModelReadyEvent,
    ReleaseEvent,
    SearchEvent,
    StatusEvent,
    TaskEvent,
    decode,
    encode,
)
from schemas.examples import EXAMPLE_TIME, example, example_json
from schemas.limits import (
    MAX_ID_LENGTH,
    MAX_MESSAGE_BYTES,
    MAX_META_DEPTH,
    MAX_META_KEYS,
    MAX_QUERY_LENGTH,
    MAX_RESULTS,
    MAX_TEXT_LENGTH,
)
from schemas.topics import ALL_TOPICS, CLICKSTREAM, MODELS, RELEASE, TASKS, TopicSpec

ALL_MESSAGES = [(t, m) for t in ALL_TOPICS for m in t.messages]


def _wire(model: type, **changes: Any) -> bytes:
    obj = example_json(model)
    for key, value in changes.items():
        if value is _DROP:
            obj.pop(key)
        else:
            obj[key] = value
    return json.dumps(obj).encode()


_DROP = object()


def _refused(spec: TopicSpec, raw: bytes) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as info:
        decode(spec, raw, now=EXAMPLE_TIME)
    return info.value


@pytest.mark.parametrize(
    ("spec", "model"),
    ALL_MESSAGES,
    ids=lambda x: getattr(x, "key", None) or getattr(x, "event_type", None),
)
def test_every_type_round_trips(spec: TopicSpec, model: type) -> None:
    event = example(model)
    decoded = decode(spec, encode(event), now=EXAMPLE_TIME)
    assert decoded == event
    assert type(decoded) is model
    assert json.loads(encode(event))["type"] == model.event_type


def test_create_fills_the_envelope() -> None:
    a = ClickEvent.create(session_id="s", item_id="i")
    b = ClickEvent.create(session_id="s", item_id="i")
    assert a.type == "click" and a.schema_version == 1
    assert a.event_id != b.event_id
    assert abs(a.occurred_at - datetime.now(UTC)) < timedelta(seconds=5)


def test_kafka_keys_follow_the_topic_table() -> None:
    assert example(SearchEvent).kafka_key() == "s-7f3a"
    assert example(ClickEvent).kafka_key() == "s-7f3a"
    assert example(ItemEvent).kafka_key() == "sku-3003"
    assert example(ReleaseEvent).kafka_key() == "release-2026-11-24"
    no_key = ReleaseEvent.create()
    assert no_key.kafka_key() == no_key.event_id
    assert example(TaskEvent).kafka_key() == "task-1a2b3c"
    assert example(StatusEvent).kafka_key() == "task-1a2b3c"
    assert example(ModelReadyEvent).kafka_key() == "default"


def test_timestamps_are_normalised_to_utc() -> None:
    raw = _wire(ClickEvent, occurred_at="2026-11-24T14:00:00+02:00")
    event = decode(CLICKSTREAM, raw, now=EXAMPLE_TIME)
    assert event.occurred_at == datetime(2026, 11, 24, 12, tzinfo=UTC)
    assert event.occurred_at.tzinfo == UTC
    assert json.loads(encode(event))["occurred_at"] == "2026-11-24T12:00:00Z"


def test_ranks_may_be_left_out_meaning_list_order() -> None:
    results = [{"item_id": "a"}, {"item_id": "b"}]
    event = decode(CLICKSTREAM, _wire(SearchEvent, results=results), now=EXAMPLE_TIME)
    assert isinstance(event, SearchEvent)
    assert event.ranked_pairs() == [("a", 1), ("b", 2)]
    shuffled = SearchEvent.create(
        session_id="s",
        query="q",
        results=[
            {"item_id": "x", "rank": 3},
            {"item_id": "y", "rank": 1},
            {"item_id": "z", "rank": 2},
        ],
    )
    assert shuffled.ranked_pairs() == [("y", 1), ("z", 2), ("x", 3)]


# --- every limit, with its reason -------------------------------------------------------


def _results(n: int) -> list[dict[str, Any]]:
    return [{"item_id": f"i{k}", "rank": k + 1} for k in range(n)]


REFUSALS: list[tuple[str, TopicSpec, bytes, DeadLetterReason, str]] = [
    ("empty", CLICKSTREAM, b"", DeadLetterReason.EMPTY, "no value"),
    (
        "oversize",
        CLICKSTREAM,
        b"{" + b" " * MAX_MESSAGE_BYTES + b"}",
        DeadLetterReason.OVERSIZE,
        f"at most {MAX_MESSAGE_BYTES}",
    ),
    ("not utf-8", CLICKSTREAM, b'{"type":"click\xff"}', DeadLetterReason.UNDECODABLE, "UTF-8"),
    ("truncated json", CLICKSTREAM, b'{"type": "cli', DeadLetterReason.UNDECODABLE, "JSON"),
    ("not an object", CLICKSTREAM, b"[1, 2]", DeadLetterReason.SCHEMA, "object"),
    (
        "unknown type",
        CLICKSTREAM,
        _wire(ClickEvent, type="purchase"),
        DeadLetterReason.UNKNOWN_TYPE,
        "'purchase'",
    ),
    ("missing type", CLICKSTREAM, _wire(ClickEvent, type=_DROP), DeadLetterReason.SCHEMA, "type"),
    (
        "type of another topic",
        CLICKSTREAM,
        _wire(ReleaseEvent),
        DeadLetterReason.WRONG_TOPIC,
        "clickstream.events",
    ),
    ("task on release topic", RELEASE, _wire(TaskEvent), DeadLetterReason.WRONG_TOPIC, "release"),
    (
        "version 2",
        CLICKSTREAM,
        _wire(ClickEvent, schema_version=2),
        DeadLetterReason.UNSUPPORTED_VERSION,
        "schema_version",
    ),
    ("extra field", CLICKSTREAM, _wire(ClickEvent, price=3), DeadLetterReason.SCHEMA, "price"),
    (
        "strict types",
        CLICKSTREAM,
        _wire(ClickEvent, item_id=42),
        DeadLetterReason.SCHEMA,
        "item_id",
    ),
    (
        "rank as string",
        CLICKSTREAM,
        _wire(SearchEvent, results=[{"item_id": "a", "rank": "1"}]),
        DeadLetterReason.SCHEMA,
        "rank",
    ),
    (
        "rank zero",
        CLICKSTREAM,
        _wire(SearchEvent, results=[{"item_id": "a", "rank": 0}]),
        DeadLetterReason.SCHEMA,
        "greater than or equal to 1",
    ),
    (
        "negative rank",
        CLICKSTREAM,
        _wire(SearchEvent, results=[{"item_id": "a", "rank": -3}]),
        DeadLetterReason.SCHEMA,
        "rank",
    ),
    (
        "duplicate ranks",
        CLICKSTREAM,
        _wire(SearchEvent, results=[{"item_id": "a", "rank": 1}, {"item_id": "b", "rank": 1}]),
        DeadLetterReason.SCHEMA,
        "ranks must be unique",
    ),
    (
        "some ranks missing",
        CLICKSTREAM,
        _wire(SearchEvent, results=[{"item_id": "a", "rank": 1}, {"item_id": "b"}]),
        DeadLetterReason.SCHEMA,
        "every result has a rank or none",
    ),
    (
        "duplicate items",
        CLICKSTREAM,
        _wire(SearchEvent, results=[{"item_id": "a", "rank": 1}, {"item_id": "a", "rank": 2}]),
        DeadLetterReason.SCHEMA,
        "appears twice",
    ),
    (
        "too many results",
        CLICKSTREAM,
        _wire(SearchEvent, results=_results(MAX_RESULTS + 1)),
        DeadLetterReason.SCHEMA,
        f"at most {MAX_RESULTS}",
    ),
    (
        "query too long",
        CLICKSTREAM,
        _wire(SearchEvent, query="q" * (MAX_QUERY_LENGTH + 1)),
        DeadLetterReason.SCHEMA,
        f"at most {MAX_QUERY_LENGTH}",
    ),
    ("blank query", CLICKSTREAM, _wire(SearchEvent, query="   "), DeadLetterReason.SCHEMA, "blank"),
    (
        "item text too long",
        CLICKSTREAM,
        _wire(ItemEvent, text="x" * (MAX_TEXT_LENGTH + 1)),
        DeadLetterReason.SCHEMA,
        f"at most {MAX_TEXT_LENGTH}",
    ),
    (
        "result text too long",
        CLICKSTREAM,
        _wire(SearchEvent, results=[{"item_id": "a", "text": "x" * (MAX_TEXT_LENGTH + 1)}]),
        DeadLetterReason.SCHEMA,
        "text",
    ),
    (
        "empty id",
        CLICKSTREAM,
        _wire(ClickEvent, session_id=""),
        DeadLetterReason.SCHEMA,
        "session_id",
    ),
    (
        "id too long",
        CLICKSTREAM,
        _wire(ClickEvent, item_id="i" * (MAX_ID_LENGTH + 1)),
        DeadLetterReason.SCHEMA,
        f"at most {MAX_ID_LENGTH}",
    ),
    (
        "id with control character",
        CLICKSTREAM,
        _wire(ClickEvent, session_id="s\n1"),
        DeadLetterReason.SCHEMA,
        "session_id",
    ),
    (
        "empty event id",
        CLICKSTREAM,
        _wire(ClickEvent, event_id=""),
        DeadLetterReason.SCHEMA,
        "event_id",
    ),
    (
        "missing event id",
        CLICKSTREAM,
        _wire(ClickEvent, event_id=_DROP),
        DeadLetterReason.SCHEMA,
        "event_id: Field required",
    ),
    (
        "naive timestamp",
        CLICKSTREAM,
        _wire(ClickEvent, occurred_at="2026-11-24T12:00:00"),
        DeadLetterReason.SCHEMA,
        "timezone",
    ),
    (
        "year 1",
        CLICKSTREAM,
        _wire(ClickEvent, occurred_at="0001-01-01T00:00:00Z"),
        DeadLetterReason.SCHEMA,
        "in the past",
    ),
    (
        "year 9999",
        CLICKSTREAM,
        _wire(ClickEvent, occurred_at="9999-12-31T23:59:59Z"),
        DeadLetterReason.SCHEMA,
        "in the future",
    ),
    (
        "two hours ahead",
        CLICKSTREAM,
        _wire(ClickEvent, occurred_at="2026-11-24T14:00:01Z"),
        DeadLetterReason.SCHEMA,
        "in the future",
    ),
    (
        "meta too deep",
        CLICKSTREAM,
        _wire(ClickEvent, meta={"a": {"b": {"c": {"d": {"e": 1}}}}}),
        DeadLetterReason.SCHEMA,
        f"deeper than {MAX_META_DEPTH}",
    ),
    (
        "meta too wide",
        CLICKSTREAM,
        _wire(ClickEvent, meta={f"k{i}": i for i in range(MAX_META_KEYS + 1)}),
        DeadLetterReason.SCHEMA,
        f"at most {MAX_META_KEYS}",
    ),
    (
        "meta NaN",
        CLICKSTREAM,
        _wire(ClickEvent).replace(b'"item_id"', b'"meta": {"x": NaN}, "item_id"'),
        DeadLetterReason.SCHEMA,
        "finite",
    ),
    (
        "metric infinity",
        MODELS,
        _wire(ModelReadyEvent).replace(b'"ndcg@10": 0.561', b'"ndcg@10": Infinity'),
        DeadLetterReason.SCHEMA,
        "finite",
    ),
    (
        "bad sha256",
        MODELS,
        _wire(ModelReadyEvent, artifact_sha256="abc"),
        DeadLetterReason.SCHEMA,
        "artifact_sha256",
    ),
    (
        "bad method name",
        RELEASE,
        _wire(ReleaseEvent, fine_tuning_method="a b"),
        DeadLetterReason.SCHEMA,
        "fine_tuning_method",
    ),
    (
        "negative session count",
        TASKS,
        _wire(TaskEvent, session_count=-1),
        DeadLetterReason.SCHEMA,
        "session_count",
    ),
]


@pytest.mark.parametrize(
    ("case", "spec", "raw", "reason", "says"), REFUSALS, ids=[r[0] for r in REFUSALS]
)
def test_limits_refuse_with_a_precise_reason(
    case: str, spec: TopicSpec, raw: bytes, reason: DeadLetterReason, says: str
) -> None:
    refused = _refused(spec, raw)
    assert refused.reason is reason, refused
    assert says in refused.detail, refused.detail
    assert len(refused.detail) <= 1024


def test_limits_accept_values_at_the_boundary() -> None:
    ok = [
        _wire(SearchEvent, results=_results(MAX_RESULTS), query="q" * MAX_QUERY_LENGTH),
        _wire(ItemEvent, text="x" * MAX_TEXT_LENGTH),
        _wire(ClickEvent, item_id="i" * MAX_ID_LENGTH),
        _wire(ClickEvent, occurred_at="2026-11-24T13:00:00Z"),
        _wire(ClickEvent, occurred_at="2025-11-24T12:00:00Z"),
        _wire(ClickEvent, meta={"a": {"b": {"c": 1}}}),
        _wire(ClickEvent, session_id="séance-日本"),
    ]
    for raw in ok:
        decode(CLICKSTREAM, raw, now=EXAMPLE_TIME)


def test_python_construction_is_validated_too() -> None:
    with pytest.raises(ValidationError, match="ranks must be unique"):
        SearchEvent.create(
            session_id="s",
            query="q",
            results=[{"item_id": "a", "rank": 2}, {"item_id": "b", "rank": 2}],
        )
    with pytest.raises(ValidationError, match="timezone"):
        ClickEvent.create(session_id="s", item_id="i", occurred_at=datetime(2026, 1, 1))
    with pytest.raises(ValidationError, match="Extra inputs"):
        ClickEvent.create(session_id="s", item_id="i", price=3)


def test_encode_refuses_what_the_consumer_would_refuse() -> None:
    # Under the result-count cap, yet over the message-size cap.
    big = [
        {"item_id": f"i{k}", "rank": k + 1, "text": "x" * MAX_TEXT_LENGTH}
        for k in range(MAX_RESULTS)
    ]
    event = SearchEvent.create(session_id="s", query="q", results=big)
    with pytest.raises(InvalidEvent) as info:
        encode(event)
    assert info.value.reason is DeadLetterReason.OVERSIZE


def test_other_offsets_are_kept_as_instants() -> None:
    tz = timezone(timedelta(hours=-5))
    event = ClickEvent.create(
        session_id="s", item_id="i", occurred_at=datetime.now(tz).replace(microsecond=0)
    )
    assert event.occurred_at.utcoffset() == timedelta(0)
