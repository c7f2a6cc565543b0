"""Property-based fuzzing of the wire decoder: whatever the bytes, ``decode`` (and the
consumer's ``decode_fast``) returns a valid event or raises :class:`InvalidEvent` with a
reason from the bounded set; no other exception escapes.

Inputs: arbitrary bytes, arbitrary JSON (NaN and infinities included, deep nesting), valid
events of every topic mutated field by field, and valid encodings mutated byte by byte.
Derandomized, so CI runs the same examples every time.
"""

import copy
import json
import math
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from schemas import DeadLetterReason, InvalidEvent, decode, encode
from schemas.base import Event
from schemas.codec import decode_fast
from schemas.dead_letter import HEADERS
from schemas.examples import EXAMPLE_TIME, example_json
from schemas.topics import ALL_TOPICS, CLICKSTREAM, RELEASE, TopicSpec

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=1000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
REASONS = set(DeadLetterReason)
EVENT_TOPICS = [t for t in ALL_TOPICS if t.messages]
SEEN: dict[str, int] = {}


def _verdict(spec: TopicSpec, raw: bytes | None) -> Event | InvalidEvent:
    """What decode says, and a check that it said it the contract's way."""
    try:
        event = decode(spec, raw, now=EXAMPLE_TIME)
    except InvalidEvent as exc:
        assert exc.reason in REASONS
        assert exc.detail and len(exc.detail) <= 1024
        SEEN[exc.reason.value] = SEEN.get(exc.reason.value, 0) + 1
        return exc
    assert type(event) in spec.messages
    SEEN["valid"] = SEEN.get("valid", 0) + 1
    # What was accepted survives a round trip unchanged.
    assert decode(spec, encode(event), now=EXAMPLE_TIME) == event
    return event


def _fast_verdict(spec: TopicSpec, raw: bytes | None) -> None:
    """The consumer's fast path: only events or InvalidEvent, and never a different verdict."""
    if spec not in (CLICKSTREAM, RELEASE):
        return
    try:
        fast = decode_fast(spec, raw, now=EXAMPLE_TIME)
    except InvalidEvent as exc:
        assert exc.reason in REASONS
        return
    assert fast.type in {m.event_type for m in spec.messages}


def _both(spec: TopicSpec, raw: bytes | None) -> Event | InvalidEvent:
    verdict = _verdict(spec, raw)
    _fast_verdict(spec, raw)
    if isinstance(verdict, InvalidEvent) and spec in (CLICKSTREAM, RELEASE):
        try:
            decode_fast(spec, raw, now=EXAMPLE_TIME)
        except InvalidEvent as exc:
            assert exc.reason == verdict.reason
        else:
            raise AssertionError(f"fast path accepted what decode refuses: {raw!r:.300}")
    return verdict


topics = st.sampled_from(EVENT_TOPICS + [t for t in ALL_TOPICS if t.raw])

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["search", "click", "item", "release", "task", "", "\x00", "1"])
)
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=25,
)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


@FUZZ
@given(spec=topics, raw=st.binary(max_size=2048))
def test_arbitrary_bytes(spec: TopicSpec, raw: bytes) -> None:
    _both(spec, raw)


@FUZZ
@given(spec=topics, value=json_values)
def test_arbitrary_json(spec: TopicSpec, value: Any) -> None:
    _both(spec, _dumps(value))


@FUZZ
@given(spec=topics, depth=st.integers(min_value=1, max_value=50_000), opener=st.sampled_from("[{"))
def test_deep_nesting(spec: TopicSpec, depth: int, opener: str) -> None:
    raw = (b'{"a":' if opener == "{" else b"[") * depth
    verdict = _both(spec, raw)
    assert isinstance(verdict, InvalidEvent)


# --- valid events, mutated -------------------------------------------------------------------


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, child in node.items():
            out += _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            out += _paths(child, (*prefix, i))
    return out


def _set(root: Any, path: tuple[Any, ...], op: str, value: Any, key: str) -> Any:
    if not path:
        return value if op == "replace" else root
    parent = root
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if op == "delete":
        del parent[last]
    elif op == "replace":
        parent[last] = value
    elif op == "add" and isinstance(parent[last], dict):
        parent[last][key] = value
    elif op == "add" and isinstance(parent[last], list):
        parent[last].append(value)
    elif op == "duplicate" and isinstance(parent, list):
        parent.append(parent[last])
    elif op == "stretch" and isinstance(parent[last], str):
        parent[last] = parent[last] * 300
    elif op == "stretch" and isinstance(parent[last], list):
        parent[last] = parent[last] * 80
    elif op == "inject" and isinstance(parent[last], str):
        parent[last] = parent[last] + key
    return root


@st.composite
def mutated_events(draw: st.DrawFn) -> tuple[TopicSpec, bytes]:
    spec = draw(st.sampled_from(EVENT_TOPICS))
    model = draw(st.sampled_from(spec.messages))
    obj = copy.deepcopy(example_json(model))  # the examples share nested objects
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = _paths(obj)
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["delete", "replace", "add", "duplicate", "stretch", "inject"]))
        value = draw(json_values)
        key = draw(
            st.text(max_size=4)
            | st.sampled_from(["\x00", "\n", "\u2028", "\u202e", "\ud800", "\udfff", ":eids"])
        )
        try:
            obj = _set(obj, path, op, value, key)
        except (KeyError, IndexError, TypeError):
            continue
    # Lone surrogates cannot be encoded as UTF-8; json.dumps escapes them (\\udfff), as a
    # hostile producer would.
    return spec, _dumps(obj)


@FUZZ
@given(case=mutated_events())
def test_mutated_valid_events(case: tuple[TopicSpec, bytes]) -> None:
    spec, raw = case
    _both(spec, raw)


@st.composite
def byte_mutations(draw: st.DrawFn) -> tuple[TopicSpec, bytes]:
    spec = draw(st.sampled_from(EVENT_TOPICS))
    model = draw(st.sampled_from(spec.messages))
    raw = bytearray(_dumps(example_json(model)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        at = draw(st.integers(min_value=0, max_value=len(raw)))
        op = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        if op == "flip" and at < len(raw):
            raw[at] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif op == "cut":
            del raw[at:]
        elif op == "insert":
            raw[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and at < len(raw):
            del raw[at]
    return spec, bytes(raw)


@FUZZ
@given(case=byte_mutations())
def test_byte_mutations_of_valid_events(case: tuple[TopicSpec, bytes]) -> None:
    spec, raw = case
    _both(spec, raw)


def test_every_verdict_was_reached() -> None:
    """The runs above are not vacuous: they produced valid events and most refusal reasons.
    (Runs after them in file order; alone it checks the corpus of a fresh run.)"""
    if not SEEN:
        for spec in (CLICKSTREAM, RELEASE):
            for model in spec.messages:
                _verdict(spec, _dumps(example_json(model)))
    print(f"\ndecoder fuzz verdicts: {dict(sorted(SEEN.items()))}")
    assert SEEN.get("valid", 0) > 0
    if len(SEEN) > 2:
        assert {"undecodable", "schema", "unknown_type", "wrong_topic"} <= set(SEEN)
    assert math.isfinite(len(HEADERS))


def test_a_message_without_type_is_refused_on_every_topic() -> None:
    """Found by the fuzzing above: the fast path decoded a release without "type" (msgspec
    requires the tag of a union member, not of a lone struct, and the release topic has one
    message type)."""
    for spec in (CLICKSTREAM, RELEASE):
        for model in spec.messages:
            raw = _dumps({k: v for k, v in example_json(model).items() if k != "type"})
            verdict = _both(spec, raw)
            assert isinstance(verdict, InvalidEvent) and verdict.reason == "schema", model
