"""Validated events flattened into the argument rows the apply script consumes.

The flattening happens in Python (off the Redis server) so the script does little work:
one row per record, ``[offset, kind, event_id, key, time_ms, data]``, the whole partition
batch sent as one JSON argument (packing thousands of separate arguments costs more).
"""

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from consumer.text_cache import TextCache
from schemas.base import Event
from schemas.clickstream import pair_ranks, result_ids, result_ranks, result_text_column
from schemas.fast_codec import FastEvent

SKIP = "skip"


def dumps(value: Any) -> str:
    """Compact JSON; orjson on the hot path, the standard library for integers beyond 64 bits
    (valid in ``meta``), which orjson refuses."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def epoch_ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


# Not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__, and
# one Entry is made per record read.
@dataclass(slots=True)
class Entry:
    offset: int
    kind: str
    event_id: str
    key: str
    time_ms: int
    data: str | dict[str, Any]

    def row(self) -> list[Any]:
        # Times travel as strings: Lua numbers print with 14 significant digits.
        return [self.offset, self.kind, self.event_id, self.key, str(self.time_ms), self.data]


def skipped(offset: int) -> Entry:
    """A record that was dead-lettered: it only moves the offset mark."""
    return Entry(offset, SKIP, "", "", 0, "")


def to_entry(
    offset: int,
    event: Event | FastEvent,
    *,
    raw: bytes = b"",
    key: bytes | None = None,
    texts: TextCache | None = None,
) -> Entry:
    """Flatten a validated event: a pydantic event, or the fast decoder's struct of one."""
    ts = epoch_ms(event.occurred_at)
    kind = event.type
    if kind == "click":
        return Entry(offset, "click", event.event_id, event.session_id, ts, event.item_id)
    if kind == "search":
        # Results go pre-encoded: the script stores the string as is, and Redis's one
        # core is better spent elsewhere (measured: 36k vs 28k events/s).
        results = event.results
        ids = result_ids(results)
        search: dict[str, Any] = {
            "q": event.query,
            "r": dumps(pair_ranks(ids, result_ranks(results))),
        }
        if event.user_id is not None:
            search["u"] = event.user_id
        column = result_text_column(results)
        if texts is not None:
            shown = texts.changed(ids, column)
        elif None in column:
            shown = {i: t for i, t in zip(ids, column, strict=True) if t is not None}
        else:
            shown = dict(zip(ids, column, strict=True))
        if shown:
            search["t"] = shown
        return Entry(offset, "search", event.event_id, event.session_id, ts, search)
    if kind == "irrelevant":
        return Entry(offset, "irrelevant", event.event_id, event.session_id, ts, "")
    if kind == "item":
        return Entry(offset, "item", event.event_id, event.item_id, ts, event.text)
    if kind == "release":
        release: dict[str, Any] = {
            "m": event.fine_tuning_method,
            "md": dumps(event.metadata),
            "raw": raw.decode("utf-8"),
            "key": (key or b"").decode("utf-8", errors="replace"),
        }
        if event.batch_id is not None:
            release["b"] = event.batch_id
        if event.idempotency_key is not None:
            release["k"] = event.idempotency_key
        return Entry(offset, "release", event.event_id, "", ts, release)
    raise TypeError(f"{type(event).__name__} is not applied by the consumer")
