"""Fine-tuning task records in Redis: written by the consumer, advanced by the trainer."""

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from consumer.keys import Keys
from schemas.task import StatusEvent, TaskEvent, TaskStatus


def _from_ms(value: bytes | str) -> datetime:
    return datetime.fromtimestamp(int(value) / 1000, tz=UTC)


@dataclass(frozen=True)
class TaskRecord:
    task_id: str
    batch_id: str
    fine_tuning_method: str
    metadata: dict[str, Any]
    idempotency_key: str | None
    session_count: int
    created_at: datetime
    updated_at: datetime
    status: TaskStatus
    detail: str

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes]) -> "TaskRecord":
        h = {k.decode(): v.decode() for k, v in raw.items()}
        return cls(
            task_id=h["task_id"],
            batch_id=h["batch_id"],
            fine_tuning_method=h["fine_tuning_method"],
            metadata=json.loads(h.get("metadata") or "{}"),
            idempotency_key=h.get("idempotency_key") or None,
            session_count=int(h.get("session_count") or 0),
            created_at=_from_ms(h["created_at"]),
            updated_at=_from_ms(h["updated_at"]),
            status=TaskStatus(h["status"]),
            detail=h.get("detail", ""),
        )

    def task_event(self) -> TaskEvent:
        # Deterministic event id: a re-published task (outbox retry) dedupes downstream.
        return TaskEvent.create(
            event_id=f"{self.task_id}:task",
            occurred_at=self.created_at,
            task_id=self.task_id,
            batch_id=self.batch_id,
            fine_tuning_method=self.fine_tuning_method,
            metadata=self.metadata,
            idempotency_key=self.idempotency_key,
            session_count=self.session_count,
            created_at=self.created_at,
        )

    def status_event(self) -> StatusEvent:
        return StatusEvent.create(
            event_id=f"{self.task_id}:{self.status.value}:{int(self.updated_at.timestamp() * 1e3)}",
            occurred_at=self.updated_at,
            task_id=self.task_id,
            batch_id=self.batch_id,
            fine_tuning_method=self.fine_tuning_method,
            status=self.status,
            created_at=self.created_at,
            updated_at=self.updated_at,
            detail=self.detail[:4096],
        )


class TaskStore:
    """Task records under the deployment's key prefix."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client = client
        self.keys = Keys(prefix)

    async def get(self, task_id: str) -> TaskRecord | None:
        raw = await self.client.hgetall(self.keys.task(task_id))
        return TaskRecord.from_hash(raw) if raw else None

    async def set_status(self, task_id: str, status: TaskStatus, detail: str = "") -> TaskRecord:
        """Move a task to ``status`` (``updated_at`` = now) and return the new record."""
        key = self.keys.task(task_id)
        if not await self.client.exists(key):
            raise KeyError(f"no task {task_id}")
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        await self.client.hset(
            key,
            mapping={
                "status": status.value,
                "detail": detail[:4096],
                "updated_at": str(now_ms),
            },
        )
        record = await self.get(task_id)
        assert record is not None
        return record

    async def recent(self, limit: int = 20) -> list[TaskRecord]:
        ids = await self.client.zrevrange(self.keys.tasks, 0, limit - 1)
        records = [await self.get(i.decode()) for i in ids]
        return [r for r in records if r is not None]


async def finish_task(
    client: aioredis.Redis,
    prefix: str,
    task_id: str,
    status: TaskStatus,
    detail: str,
    *,
    retention_s: int,
) -> TaskRecord:
    """Record a task's final status and let its frozen batch expire after ``retention_s``.

    The batch's sessions, clicks, dedupe sets and late events are what the trainer read; once
    the task is over they only cost memory. The task record itself stays (it is small and is
    what `clicktune status` shows).
    """
    if not status.is_final:
        raise ValueError(f"{status} is not a final status")
    store = TaskStore(client, prefix)
    record = await store.set_status(task_id, status, detail)
    keys = store.keys
    bid = record.batch_id
    sessions = [m.decode() for m in await client.smembers(keys.batch_sessions(bid))]
    pipe = client.pipeline(transaction=False)
    for key in (keys.batch(bid), keys.batch_sessions(bid), keys.batch_late(bid)):
        pipe.expire(key, retention_s)
    for sid in sessions:
        for key in (keys.session(sid), keys.session_clicks(sid), keys.session_event_ids(sid)):
            pipe.expire(key, retention_s)
    await pipe.execute()
    return record
