"""The msgspec fast path never accepts what the pydantic contract refuses, and agrees with it
on everything it accepts."""

import json
from datetime import datetime
from typing import Any, Literal

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings
from pydantic import Field, field_validator

from consumer.entries import to_entry
from producer import synthetic
from schemas import ClickEvent, InvalidEvent, ItemEvent, ReleaseEvent, SearchEvent, decode
from schemas.base import Event
from schemas.codec import decode_fast, encode
from schemas.examples import EXAMPLE_TIME, example_json
from schemas.fast_codec import FastDecoder, FastEvent, compile_model
from schemas.topics import CLICKSTREAM, RELEASE, TopicSpec
from tests.schemas.test_events import REFUSALS, _results, _wire

FAST = {spec.name: FastDecoder(spec.messages) for spec in (CLICKSTREAM, RELEASE)}


def _pydantic(spec: TopicSpec, raw: bytes) -> Event | None:
    try:
        return decode(spec, raw, now=EXAMPLE_TIME)
    except InvalidEvent:
        return None


def _agree(spec: TopicSpec, raw: bytes) -> FastEvent | None:
    """Both paths on one input: the fast one may refuse more, never less, and what both
    accept flattens to the same script row."""
    fast = FAST[spec.name].decode(raw, now=EXAMPLE_TIME)
    slow = _pydantic(spec, raw)
    if fast is None:
        return None
    assert slow is not None, f"fast path accepted what pydantic refuses: {raw[:300]!r}"
    assert to_entry(0, fast, raw=raw).row() == to_entry(0, slow, raw=raw).row()
    assert fast.occurred_at == slow.occurred_at
    assert fast.occurred_at.utcoffset() == slow.occurred_at.utcoffset()
    return fast


@pytest.mark.parametrize(
    ("case", "spec", "raw"),
    [(c, s, r) for c, s, r, _, _ in REFUSALS if s in (CLICKSTREAM, RELEASE)],
    ids=[c for c, s, *_ in REFUSALS if s in (CLICKSTREAM, RELEASE)],
)
def test_every_refusal_is_refused_by_the_fast_path_with_pydantic_reason(
    case: str, spec: TopicSpec, raw: bytes
) -> None:
    assert FAST[spec.name].decode(raw, now=EXAMPLE_TIME) is None
    with pytest.raises(InvalidEvent) as fast:
        decode_fast(spec, raw, now=EXAMPLE_TIME)
    with pytest.raises(InvalidEvent) as slow:
        decode(spec, raw, now=EXAMPLE_TIME)
    assert (fast.value.reason, fast.value.detail) == (slow.value.reason, slow.value.detail)


VALID = [
    _wire(SearchEvent),
    _wire(SearchEvent, results=_results(200), query="q" * 1024),
    _wire(SearchEvent, results=[{"item_id": "a"}, {"item_id": "b", "text": "B"}]),
    _wire(SearchEvent, results=[{"item_id": "b", "rank": 2}, {"item_id": "a", "rank": 1}]),
    _wire(SearchEvent, results=[], user_id=None),
    _wire(SearchEvent, results=[{"item_id": "a", "meta": {"x": [1, 2.5, None, "y"]}}]),
    _wire(ItemEvent, text="x" * 8192),
    _wire(ClickEvent, item_id="i" * 256, meta={"a": {"b": {"c": 1}}}),
    _wire(ClickEvent, session_id="séance-日本-😀"),
    _wire(ClickEvent, occurred_at="2026-11-24T13:00:00+01:00"),
    _wire(ClickEvent, occurred_at="2025-11-24T12:00:00.5-03:30"),
    _wire(ReleaseEvent, batch_id="b000001", metadata={"by": "cron"}),
]


@pytest.mark.parametrize("raw", VALID, ids=range(len(VALID)))
def test_valid_messages_take_the_fast_path_and_match_pydantic(raw: bytes) -> None:
    spec = RELEASE if b'"release"' in raw else CLICKSTREAM
    assert _agree(spec, raw) is not None


def test_synthetic_traffic_takes_the_fast_path() -> None:
    for event in synthetic.sessions(300, seed=7, catalog_size=100):
        raw = encode(event)
        fast = FAST[CLICKSTREAM.name].decode(raw)
        assert fast is not None, raw
        assert to_entry(0, fast).row() == to_entry(0, event).row()


# Inputs where msgspec and pydantic could plausibly differ: each must be refused by both, or
# accepted by both with the same result (checked by _agree).
EDGES: list[tuple[str, Any]] = [
    ("session_id", "s\n"),  # `$` before a final newline in Python's re
    ("session_id", "s\u0085"),  # C1 control
    ("session_id", "\u007f"),
    ("session_id", "😀" * 256),  # 256 characters, 1024 bytes
    ("session_id", "😀" * 257),
    ("session_id", "\ud800"),
    ("item_id", 1),
    ("item_id", True),
    ("item_id", None),
    ("occurred_at", "2026-11-24 12:00:00Z"),
    ("occurred_at", "2026-11-24t12:00:00z"),
    ("occurred_at", "2026-11-24T12:00Z"),
    ("occurred_at", "2026-11-24T12:00:00.123456789Z"),
    ("occurred_at", "2026-11-24T12:00:60Z"),
    ("occurred_at", "2026-11-24T12:00:00-00:00"),
    ("occurred_at", "2026-11-24T12:00:00+0100"),
    ("occurred_at", "2026-11-24"),
    ("occurred_at", 1764000000),
    ("occurred_at", "1764000000"),
    ("schema_version", 1.0),
    ("schema_version", True),
    ("schema_version", "1"),
    ("meta", {"n": 10**40}),
    ("meta", {"n": -0.0}),
    ("meta", {"n": 1e308}),
    ("meta", []),
    ("meta", {"a": {"b": {"c": {"d": 1}}}}),
]


@pytest.mark.parametrize(("field", "value"), EDGES, ids=[f"{f}={v!r}"[:40] for f, v in EDGES])
def test_edge_values_never_split_the_two_paths(field: str, value: Any) -> None:
    _agree(CLICKSTREAM, _wire(ClickEvent, **{field: value}))


@pytest.mark.parametrize(
    "raw",
    [
        b'\xef\xbb\xbf{"type":"click"}',
        _wire(ClickEvent).replace(b'"item_id"', b'"item_id": "dup", "item_id"'),
        _wire(ClickEvent).replace(b'"type": "click"', b'"type": "click", "type": "item"'),
        _wire(ClickEvent) + b" \n",
        b" " + _wire(ClickEvent),
        _wire(ClickEvent) + b"{}",
        _wire(ClickEvent).replace(b'"session_id": "s-1"', b'"session_id": "s-\\u0000"'),
        _wire(SearchEvent, results=[{"item_id": "a", "rank": 10**20}]),
        _wire(SearchEvent, results=[{"item_id": "a", "rank": 1.0}]),
        _wire(SearchEvent, results=[{"item_id": "a", "text": ""}]),
        _wire(SearchEvent, results=[{"item_id": "a", "extra": 1}]),
        _wire(SearchEvent, results=[{"item_id": "a", "rank": None}]),
        _wire(SearchEvent, results=[{"item_id": "a", "text": None}]),
        _wire(SearchEvent, results=[{"item_id": "a", "meta": {"x": float("nan")}}]),
        _wire(SearchEvent, user_id=""),
        _wire(SearchEvent, query="\t\n"),
    ],
)
def test_raw_edge_messages_never_split_the_two_paths(raw: bytes) -> None:
    _agree(CLICKSTREAM, raw)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)
BASES = [example_json(m) for m in (SearchEvent, ClickEvent, ItemEvent)]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    obj = json.loads(json.dumps(draw(st.sampled_from(BASES))))
    for _ in range(draw(st.integers(1, 3))):
        target = obj
        results = obj.get("results")
        if isinstance(results, list) and draw(st.booleans()):
            dicts = [r for r in results if isinstance(r, dict)]
            if dicts:
                target = draw(st.sampled_from(dicts))
        keys = [*target, "rank", "text", "meta", "extra"]
        key = draw(st.sampled_from(keys))
        if draw(st.integers(0, 4)) == 0:
            target.pop(key, None)
        else:
            target[key] = draw(json_values)
    return json.dumps(obj).encode()


@settings(
    max_examples=400,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(mutated())
def test_mutated_messages_never_split_the_two_paths(raw: bytes) -> None:
    _agree(CLICKSTREAM, raw)


def test_compiling_refuses_what_it_does_not_understand() -> None:
    class Priced(Event):
        event_type = "priced"
        type: Literal["priced"]
        price: float

    class Checked(Event):
        event_type = "checked"
        type: Literal["checked"]
        name: str = Field(max_length=3)

        @field_validator("name")
        @classmethod
        def _upper(cls, value: str) -> str:
            return value.upper()

    for model in (Priced, Checked):
        with pytest.raises(TypeError, match="no fast path"):
            compile_model(model)


def test_decode_fast_falls_back_for_the_precise_reason() -> None:
    raw = _wire(ClickEvent, session_id="s\n")
    with pytest.raises(InvalidEvent) as refused:
        decode_fast(CLICKSTREAM, raw, now=EXAMPLE_TIME)
    assert "session_id" in refused.value.detail
    event = decode_fast(CLICKSTREAM, _wire(ClickEvent), now=EXAMPLE_TIME)
    assert isinstance(event, FastEvent)
    assert event.type == "click"
    assert isinstance(event.occurred_at, datetime)


def test_integers_beyond_64_bits_flatten_like_the_standard_library() -> None:
    raw = _wire(ReleaseEvent, metadata={"n": 10**40, "é": "ü"})
    event = decode(RELEASE, raw, now=EXAMPLE_TIME)
    data = to_entry(0, event, raw=raw).data
    assert isinstance(data, dict)
    assert json.loads(data["md"]) == {"n": 10**40, "é": "ü"}
