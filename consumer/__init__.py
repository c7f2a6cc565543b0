"""Clickstream → Redis session batches with an exactly-once effect; release → task."""

from consumer.service import ClickstreamConsumer
from consumer.store import RedisStore
from consumer.tasks import TaskRecord, TaskStore

__all__ = ["ClickstreamConsumer", "RedisStore", "TaskRecord", "TaskStore"]
