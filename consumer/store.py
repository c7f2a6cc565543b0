"""Session-batch state in Redis, written only through the atomic apply script."""

import json
from dataclasses import dataclass, field
from enum import IntEnum
from importlib.resources import files
from typing import Any

import orjson
import redis.asyncio as aioredis

from consumer.entries import Entry
from consumer.keys import Keys
from producer.settings import Settings

APPLY_SCRIPT = files("consumer").joinpath("lua/apply.lua").read_text(encoding="utf-8")
#: Drop a partition's offset mark, unless it moved since the caller read it.
FORGET_MARK_SCRIPT = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


class Outcome(IntEnum):
    APPLIED = 0
    REPLAY = 1
    DUPLICATE = 2
    LATE = 3
    CUT = 4
    SKIPPED = 5


#: By value; a tuple lookup runs in C where ``Outcome(o)`` is a Python call per event.
_OUTCOMES = tuple(Outcome)
assert all(o.value == i for i, o in enumerate(_OUTCOMES))


@dataclass(frozen=True)
class Release:
    outcome: str  # created | duplicate | unknown_batch | empty
    batch_id: str
    event_id: str
    task_id: str | None = None


@dataclass
class ApplyResult:
    outcomes: list[Outcome]
    releases: list[Release]
    open_batch: str
    open_sessions: int
    mark: int

    @classmethod
    def parse(cls, raw: bytes | str) -> "ApplyResult":
        data: dict[str, Any] = orjson.loads(raw)
        # cjson encodes an empty Lua table as {}.
        outcomes = data["outcomes"] or []
        releases = data["releases"] or []
        return cls(
            outcomes=list(map(_OUTCOMES.__getitem__, outcomes)),
            releases=[Release(**r) for r in releases],
            open_batch=data["open_batch"],
            open_sessions=int(data["open_sessions"]),
            mark=int(data["mark"]),
        )


@dataclass
class PartitionBatch:
    """The entries of one topic-partition from one poll, in offset order."""

    tp_key: str  # "topic:partition"; "" for entries that belong to no partition
    entries: list[Entry]
    source_topic: str = ""
    source_partition: int = -1
    _encoded: bytes | None = field(default=None, repr=False)

    def encoded(self) -> bytes:
        """The script's argument: every entry's row as one JSON array. The consumer calls
        this in its decoding thread, so the event loop only sends the bytes."""
        if self._encoded is None:
            self._encoded = orjson.dumps([e.row() for e in self.entries])
        return self._encoded


class RedisStore:
    """Reads and atomically writes clicktune's session state under one key prefix."""

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.keys = Keys(settings.redis_key_prefix)
        self._apply = client.register_script(APPLY_SCRIPT)
        self._forget_mark = client.register_script(FORGET_MARK_SCRIPT)

    def _args(self, batch: PartitionBatch) -> list[str | bytes]:
        s = self.settings
        args: list[str | bytes] = [
            s.redis_key_prefix,
            batch.tp_key,
            str(s.max_clicks_per_session),
            str(s.max_events_per_session),
            str(s.auto_release_sessions),
            s.fine_tuning_method,
            batch.source_topic,
            str(batch.source_partition),
            batch.encoded(),
        ]
        return args

    async def apply(self, batches: list[PartitionBatch]) -> list[ApplyResult]:
        """Apply each partition's entries atomically; all partitions in one round trip."""
        if not batches:
            return []
        pipe = self.client.pipeline(transaction=False)
        for batch in batches:
            await self._apply(keys=[self.keys.offsets], args=self._args(batch), client=pipe)
        raw = await pipe.execute()
        return [ApplyResult.parse(r) for r in raw]

    async def marks(self, tp_keys: list[str]) -> dict[str, int | None]:
        """Highest applied offset per ``"topic:partition"`` (None: nothing applied yet)."""
        if not tp_keys:
            return {}
        values = await self.client.hmget(self.keys.offsets, tp_keys)
        return {k: None if v is None else int(v) for k, v in zip(tp_keys, values, strict=True)}

    async def forget_mark(self, tp_key: str, mark: int) -> bool:
        """Drop the offset mark of ``tp_key`` if it still is ``mark``; True if dropped."""
        dropped = await self._forget_mark(keys=[self.keys.offsets], args=[tp_key, str(mark)])
        return bool(dropped)

    async def open_batch(self) -> tuple[str, int] | None:
        """The open batch's id and session count, if a batch is open."""
        batch_id = await self.client.get(self.keys.open_batch)
        if batch_id is None:
            return None
        bid = batch_id.decode()
        sessions = await self.client.hget(self.keys.batch(bid), "sessions")
        return bid, int(sessions or 0)

    async def release_open_batch(self, reason: str, time_ms: int) -> Release | None:
        """Freeze the open batch outside any Kafka record (automatic release by age)."""
        current = await self.open_batch()
        if current is None:
            return None
        batch_id, _ = current
        key = f"auto-{batch_id}"
        data = {
            "m": self.settings.fine_tuning_method,
            "b": batch_id,
            "k": key,
            "md": json.dumps({"auto_release": reason}),
            "raw": "",
            "key": key,
        }
        entry = Entry(-1, "release", key, "", time_ms, data)
        [result] = await self.apply([PartitionBatch("", [entry])])
        return result.releases[0] if result.releases else None

    async def outbox(self) -> list[bytes]:
        return list(await self.client.lrange(self.keys.outbox, 0, -1))

    async def outbox_done(self, entry: bytes) -> None:
        await self.client.lrem(self.keys.outbox, 1, entry)

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    async def check_access(self) -> None:
        """Raise Redis's own error (NOPERM, NOSCRIPT...) unless this user may run the apply
        script and write under the key prefix. Changes nothing: the script gets no entries,
        and the write removes a field that does not exist."""
        await self._apply(keys=[self.keys.offsets], args=self._args(PartitionBatch("", [])))
        await self.client.hdel(self.keys.offsets, "")
