"""Property-based fuzzing of the apply path: random clickstream and releases, delivered in
random polls with redeliveries, through :class:`RedisStore` and the Lua script against the
real Redis (a fresh key prefix per example).

A small reference model in Python replays the script's rules (batches, dedupe by event id,
session caps, late events, releases, the catalog's newer-text rule); after every apply the
script's outcome for each record must be the model's, and at the end Redis must hold exactly
the model's state. Besides: no exception escapes, every record is applied, counted as a
replay, duplicate, late or cut, or dead-lettered, and a session never keeps more clicks than
distinct click events were sent for it (nor more than the cap).
"""

import asyncio
import json
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import hypothesis.strategies as st
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings

from consumer.entries import Entry, skipped, to_entry
from consumer.keys import Keys
from consumer.store import ApplyResult, Outcome, PartitionBatch, RedisStore
from producer.settings import Settings
from schemas import ClickEvent, IrrelevantEvent, ItemEvent, ReleaseEvent, SearchEvent
from schemas.base import Event
from tests.conftest import REDIS_URL

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=400,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MAX_CLICKS = 2
MAX_EVENTS = 5
# 's2:eids' would be the dedupe set of 's2' if sub-keys were suffixes.
SESSIONS = ["s0", "s2", "s2:eids", "s2:clicks"]
ITEMS = ["i0", "i1", "i2", "i3"]
T0 = datetime.now(UTC) - timedelta(hours=1)
STATS: Counter[str] = Counter()


# --- what is sent ---------------------------------------------------------------------------


def _when(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


times = st.integers(min_value=0, max_value=30)  # few values: equal times happen, out of order
event_ids = st.sampled_from([f"e{k}" for k in range(16)])  # few values: duplicates happen
texts = st.sampled_from(["alpha", "beta", "gamma"])


@st.composite
def searches(draw: st.DrawFn) -> SearchEvent:
    shown = draw(st.lists(st.sampled_from(ITEMS), unique=True, max_size=3))
    ranked = draw(st.booleans())
    with_text = draw(st.booleans())
    results: list[dict[str, Any]] = []
    for n, item in enumerate(shown, 1):
        result: dict[str, Any] = {"item_id": item}
        if ranked:
            result["rank"] = len(shown) + 1 - n  # reversed: the script gets rank order
        if with_text:
            result["text"] = draw(texts)
        results.append(result)
    return SearchEvent.create(
        event_id=draw(event_ids),
        occurred_at=_when(draw(times)),
        session_id=draw(st.sampled_from(SESSIONS)),
        query=draw(st.sampled_from(["red mug", "lamp"])),
        results=results,
        user_id=draw(st.none() | st.just("u1")),
    )


clicks = st.builds(
    lambda eid, t, sid, item: ClickEvent.create(
        event_id=eid, occurred_at=_when(t), session_id=sid, item_id=item
    ),
    event_ids,
    times,
    st.sampled_from(SESSIONS),
    st.sampled_from([*ITEMS, "never-shown"]),
)
irrelevants = st.builds(
    lambda eid, t, sid: IrrelevantEvent.create(event_id=eid, occurred_at=_when(t), session_id=sid),
    event_ids,
    times,
    st.sampled_from(SESSIONS),
)
items = st.builds(
    lambda eid, t, item, text: ItemEvent.create(
        event_id=eid, occurred_at=_when(t), item_id=item, text=text
    ),
    event_ids,
    times,
    st.sampled_from(ITEMS),
    texts,
)
releases = st.builds(
    lambda eid, t, bid, idem: ReleaseEvent.create(
        event_id=f"r{eid}", occurred_at=_when(t), batch_id=bid, idempotency_key=idem
    ),
    event_ids,
    times,
    st.none() | st.sampled_from(["b000001", "b000002", "b999999", "open", "b000001:sessions"]),
    st.none() | st.sampled_from(["k0", "k1"]),
)
INVALID = "invalid"  # a record the decoder refused: dead-lettered, only moves the mark
records = st.one_of(
    searches(), searches(), clicks, clicks, clicks, irrelevants, items, releases, st.just(INVALID)
)


def partition_of(record: Event | str) -> str:
    if isinstance(record, ReleaseEvent):
        return "rel:0"
    if isinstance(record, str):
        return "ev:0"
    key = record.kafka_key()
    return f"ev:{sum(key.encode()) % 2}"


def entry_of(offset: int, record: Event | str) -> Entry:
    if isinstance(record, str):
        return skipped(offset)
    raw = record.model_dump_json().encode()
    return to_entry(offset, record, raw=raw, key=record.kafka_key().encode())


# --- the reference model --------------------------------------------------------------------


@dataclass
class Session:
    batch: str
    first_at: int
    last_at: int
    events: int = 0
    clicks: list[str] = field(default_factory=list)
    cut: int = 0
    irrelevant: int = 0
    eids: set[str] = field(default_factory=set)
    query: str | None = None
    results: list[list[Any]] | None = None
    searches: int = 0


@dataclass
class Batch:
    seq: int
    opened_at: int
    state: str = "open"
    sessions: set[str] = field(default_factory=set)
    late: int = 0


@dataclass
class Model:
    marks: dict[str, int] = field(default_factory=dict)
    sessions: dict[str, Session] = field(default_factory=dict)
    batches: dict[str, Batch] = field(default_factory=dict)
    open: str | None = None
    catalog: dict[str, tuple[str, int]] = field(default_factory=dict)
    releases: dict[str, str] = field(default_factory=dict)
    idem: dict[str, str] = field(default_factory=dict)
    tasks: int = 0
    dead_letters: int = 0
    sent_clicks: dict[str, set[str]] = field(default_factory=dict)

    def open_batch(self, ts: int) -> str:
        if self.open is None:
            bid = f"b{len(self.batches) + 1:06d}"
            self.batches[bid] = Batch(len(self.batches) + 1, ts)
            self.open = bid
        return self.open

    def upsert(self, item: str, text: str, ts: int) -> None:
        stored = self.catalog.get(item)
        if stored is None or (
            stored[0] != text and (ts > stored[1] or (ts == stored[1] and text > stored[0]))
        ):
            self.catalog[item] = (text, ts)

    def session_event(self, event: Event, ts: int) -> Outcome:
        sid = event.session_id  # type: ignore[attr-defined]
        s = self.sessions.get(sid)
        if s is None:
            bid = self.open_batch(ts)
            s = self.sessions[sid] = Session(bid, ts, ts)
            self.batches[bid].sessions.add(sid)
            self.batches[bid].opened_at = min(self.batches[bid].opened_at, ts)
        if s.events >= MAX_EVENTS:
            s.cut += 1
            return Outcome.CUT
        if event.event_id in s.eids:
            return Outcome.DUPLICATE
        s.eids.add(event.event_id)
        s.events += 1
        if self.batches[s.batch].state != "open":
            self.batches[s.batch].late += 1
            return Outcome.LATE
        s.first_at, s.last_at = min(s.first_at, ts), max(s.last_at, ts)
        if isinstance(event, SearchEvent):
            s.query = event.query
            s.results = [list(p) for p in event.ranked_pairs()]
            s.searches += 1
            for result in event.results:
                if "text" in result:
                    self.upsert(result["item_id"], result["text"], ts)
        elif isinstance(event, ClickEvent):
            if len(s.clicks) + 1 > MAX_CLICKS:
                s.cut += 1
                return Outcome.CUT
            s.clicks.append(event.item_id)
        elif isinstance(event, IrrelevantEvent):
            s.irrelevant = 1
        return Outcome.APPLIED

    def freeze(self, bid: str) -> None:
        self.batches[bid].state = "frozen"
        if self.open == bid:
            self.open = None
        self.tasks += 1

    def release(self, event: ReleaseEvent) -> str:
        eid, idem, want = event.event_id, event.idempotency_key, event.batch_id
        if eid in self.releases:
            return "duplicate"
        if idem and idem in self.idem:
            self.releases[eid] = self.idem[idem]
            return "duplicate"
        if want:
            batch = self.batches.get(want)
            if batch is None:
                self.dead_letters += 1
                return "unknown_batch"
            if batch.state != "open":
                self.releases[eid] = want
                if idem:
                    self.idem[idem] = want
                return "duplicate"
            bid = want
        else:
            if self.open is None:
                self.releases[eid] = ""
                return "empty"
            bid = self.open
        self.freeze(bid)
        self.releases[eid] = bid
        if idem:
            self.idem[idem] = bid
        return "created"

    def apply(
        self, tp: str, batch: list[tuple[int, Event | str]]
    ) -> tuple[list[Outcome], list[str]]:
        outcomes, released = [], []
        mark = self.marks.get(tp, -1)
        for offset, record in batch:
            if offset <= mark:
                outcomes.append(Outcome.REPLAY)
                continue
            if isinstance(record, str):
                outcome = Outcome.SKIPPED
            elif isinstance(record, ItemEvent):
                self.upsert(record.item_id, record.text, _ms(record))
                outcome = Outcome.APPLIED
            elif isinstance(record, ReleaseEvent):
                released.append(self.release(record))
                outcome = Outcome.APPLIED
            else:
                if isinstance(record, ClickEvent):
                    self.sent_clicks.setdefault(record.session_id, set()).add(record.event_id)
                outcome = self.session_event(record, _ms(record))
            outcomes.append(outcome)
            self.marks[tp] = mark = max(mark, offset)
        return outcomes, released


def _ms(event: Event) -> int:
    return int(event.occurred_at.timestamp() * 1000)


# --- delivery and comparison -----------------------------------------------------------------


@st.composite
def schedules(draw: st.DrawFn) -> tuple[list[Event | str], list[tuple[str, str, int]]]:
    """Records, and delivery actions: ("poll", partition order, records per partition) or
    ("rewind", partition, how far back): a consumer that crashed before committing."""
    sent = draw(st.lists(records, min_size=5, max_size=60))
    actions = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["poll", "poll", "poll", "rewind"]),
                st.sampled_from(["ev:0", "ev:1", "rel:0"]),
                st.integers(min_value=1, max_value=6),
            ),
            max_size=25,
        )
    )
    return sent, actions


async def _run(sent: list[Event | str], actions: list[tuple[str, str, int]]) -> None:
    prefix = f"fz{uuid.uuid4().hex[:10]}:"
    s = Settings.load(
        redis_key_prefix=prefix,
        max_clicks_per_session=MAX_CLICKS,
        max_events_per_session=MAX_EVENTS,
        auto_release_sessions=0,
    )
    client = aioredis.from_url(REDIS_URL)
    store = RedisStore(client, s)
    model = Model()
    logs: dict[str, list[tuple[int, Event | str]]] = {"ev:0": [], "ev:1": [], "rel:0": []}
    for record in sent:
        log = logs[partition_of(record)]
        log.append((len(log), record))
    position = dict.fromkeys(logs, 0)
    try:
        # The drawn actions, then polls until everything was delivered.
        tail = [("poll", tp, 6) for tp in logs for _ in range(0, len(logs[tp]) + 1, 6)]
        for action, tp, n in [*actions, *tail]:
            if action == "rewind":
                position[tp] = max(0, position[tp] - n)
                STATS["rewinds"] += 1
                continue
            # One poll: this partition's next n records, and the others' next ones after it.
            order = [tp, *(p for p in logs if p != tp)]
            polled = []
            for p in order:
                chunk = logs[p][position[p] : position[p] + n]
                position[p] += len(chunk)
                if chunk:
                    polled.append((p, chunk))
            if not polled:
                continue
            results = await store.apply(
                [PartitionBatch(p, [entry_of(o, r) for o, r in chunk]) for p, chunk in polled]
            )
            for (p, chunk), result in zip(polled, results, strict=True):
                _check_poll(model, p, chunk, result)
        await _check_state(client, Keys(prefix), model)
    finally:
        keys = [k async for k in client.scan_iter(f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def _check_poll(
    model: Model, tp: str, chunk: list[tuple[int, Event | str]], result: ApplyResult
) -> None:
    outcomes, released = model.apply(tp, chunk)
    assert result.outcomes == outcomes, (tp, [r for _, r in chunk])
    assert [r.outcome for r in result.releases] == released
    assert result.mark == model.marks[tp]
    assert result.open_batch == (model.open or "")
    for (_, record), outcome in zip(chunk, result.outcomes, strict=True):
        kind = "invalid" if isinstance(record, str) else record.type
        STATS[f"{kind}:{outcome.name.lower()}"] += 1
    for r in released:
        STATS[f"release:{r}"] += 1


def _s(value: bytes | None) -> str | None:
    return None if value is None else value.decode()


async def _check_state(client: aioredis.Redis, keys: Keys, model: Model) -> None:
    marks = {k.decode(): int(v) for k, v in (await client.hgetall(keys.offsets)).items()}
    assert marks == model.marks
    for sid, m in model.sessions.items():
        h = {k.decode(): v.decode() for k, v in (await client.hgetall(keys.session(sid))).items()}
        assert h["batch_id"] == m.batch
        assert int(h["events"]) == m.events == len(m.eids)
        assert int(h["clicks"]) == len(m.clicks), sid
        assert int(h["cut"]) == m.cut
        assert int(h["irrelevant"]) == m.irrelevant
        assert (int(h["first_at"]), int(h["last_at"])) == (m.first_at, m.last_at)
        assert h.get("query") == m.query
        assert (json.loads(h["results"]) if "results" in h else None) == m.results
        assert int(h.get("searches", 0)) == m.searches
        eids = {e.decode() for e in await client.smembers(keys.session_event_ids(sid))}
        assert eids == m.eids
        kept = [
            json.loads(c)["item_id"] for c in await client.lrange(keys.session_clicks(sid), 0, -1)
        ]
        assert kept == m.clicks
        # Whatever the model says: never more clicks than distinct click events, nor the cap.
        assert len(kept) <= min(len(model.sent_clicks.get(sid, ())), MAX_CLICKS)
    session_keys = [k async for k in client.scan_iter(f"{keys.prefix}session:*", count=1000)]
    assert len(session_keys) == len(model.sessions)
    for bid, b in model.batches.items():
        h = {k.decode(): v.decode() for k, v in (await client.hgetall(keys.batch(bid))).items()}
        assert h["state"] == b.state
        assert int(h["sessions"]) == len(b.sessions)
        assert int(h["late"]) == b.late
        assert int(h["opened_at"]) == b.opened_at
        members = {m.decode() for m in await client.smembers(keys.batch_sessions(bid))}
        assert members == b.sessions
        assert await client.llen(keys.batch_late(bid)) == b.late
    assert await client.zcard(keys.batches) == len(model.batches)
    assert _s(await client.get(keys.open_batch)) == model.open
    catalog = {k.decode(): v.decode() for k, v in (await client.hgetall(keys.catalog)).items()}
    assert catalog == {item: text for item, (text, _) in model.catalog.items()}
    assert await client.zcard(keys.tasks) == model.tasks
    outbox = [json.loads(x) for x in await client.lrange(keys.outbox, 0, -1)]
    assert (
        Counter(x["kind"] for x in outbox)
        == Counter({"task": model.tasks, "dlq": model.dead_letters}) - Counter()
    )
    assert all(x["reason"] == "unknown_batch" for x in outbox if x["kind"] == "dlq")


@FUZZ
@given(schedule=schedules())
def test_apply_matches_the_model_under_random_delivery(
    schedule: tuple[list[Event | str], list[tuple[str, str, int]]],
) -> None:
    sent, actions = schedule
    asyncio.run(_run(sent, actions))


def test_every_outcome_was_reached() -> None:
    """The fuzzing above is not vacuous (runs after it in file order)."""
    if not STATS:
        return
    print(f"\napply fuzz outcomes: {dict(sorted(STATS.items()))}")
    reached = {k.split(":")[1] for k in STATS if ":" in k}
    assert {"applied", "replay", "duplicate", "late", "cut", "skipped"} <= reached
    assert {"created", "duplicate", "unknown_batch", "empty"} <= reached
