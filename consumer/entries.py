"""Validated events flattened into the argument rows the apply script consumes.

The flattening happens in Python (off the Redis server) so the script does little parsing:
six strings per record, ``offset, kind, event_id, key, time_ms, data``.
"""

import json
from dataclasses import dataclass
from datetime import datetime

from schemas.base import Event
from schemas.clickstream import ClickEvent, IrrelevantEvent, ItemEvent, SearchEvent
from schemas.release import ReleaseEvent

SKIP = "skip"


def epoch_ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Entry:
    offset: int
    kind: str
    event_id: str
    key: str
    time_ms: int
    data: str

    def args(self) -> tuple[str, ...]:
        return (str(self.offset), self.kind, self.event_id, self.key, str(self.time_ms), self.data)


def skipped(offset: int) -> Entry:
    """A record that was dead-lettered: it only moves the offset mark."""
    return Entry(offset, SKIP, "", "", 0, "")


def to_entry(offset: int, event: Event, *, raw: bytes = b"", key: bytes | None = None) -> Entry:
    ts = epoch_ms(event.occurred_at)
    match event:
        case SearchEvent():
            search: dict[str, object] = {
                "q": event.query,
                "r": [[r.item_id, rank] for rank, r in event.ranked_results()],
            }
            if event.user_id is not None:
                search["u"] = event.user_id
            texts = {r.item_id: r.text for r in event.results if r.text is not None}
            if texts:
                search["t"] = texts
            return Entry(
                offset,
                "search",
                event.event_id,
                event.session_id,
                ts,
                json.dumps(search, separators=(",", ":")),
            )
        case ClickEvent():
            return Entry(offset, "click", event.event_id, event.session_id, ts, event.item_id)
        case IrrelevantEvent():
            return Entry(offset, "irrelevant", event.event_id, event.session_id, ts, "")
        case ItemEvent():
            return Entry(offset, "item", event.event_id, event.item_id, ts, event.text)
        case ReleaseEvent():
            release: dict[str, object] = {
                "m": event.fine_tuning_method,
                "md": json.dumps(event.metadata, separators=(",", ":")),
                "raw": raw.decode("utf-8"),
                "key": (key or b"").decode("utf-8", errors="replace"),
            }
            if event.batch_id is not None:
                release["b"] = event.batch_id
            if event.idempotency_key is not None:
                release["k"] = event.idempotency_key
            return Entry(
                offset,
                "release",
                event.event_id,
                "",
                ts,
                json.dumps(release, separators=(",", ":")),
            )
    raise TypeError(f"{type(event).__name__} is not applied by the consumer")
