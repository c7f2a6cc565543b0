"""The consumer's Prometheus metrics: base units, ``_total`` counters, bounded labels only
(event type, reason, outcome, topic, partition; never a session or user id)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class ConsumerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.consumed = Counter(
            "clicktune_events_consumed",
            "Records read from Kafka, by event type.",
            ["type"],
            registry=r,
        )
        self.applied = Counter(
            "clicktune_events_applied", "Events applied to Redis, by type.", ["type"], registry=r
        )
        self.duplicates = Counter(
            "clicktune_events_duplicate",
            "Events not applied again: kind=offset (a replay) or kind=event_id (a resend).",
            ["type", "kind"],
            registry=r,
        )
        self.late = Counter(
            "clicktune_events_late",
            "Events for sessions of a frozen batch: kept aside, not in the snapshot.",
            ["type"],
            registry=r,
        )
        self.cut = Counter(
            "clicktune_events_cut",
            "Events over a session's caps (counted, not stored).",
            ["type"],
            registry=r,
        )
        self.invalid = Counter(
            "clicktune_events_invalid",
            "Records refused by validation, by claimed type.",
            ["type"],
            registry=r,
        )
        self.dead_letters = Counter(
            "clicktune_dlq_messages",
            "Records sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=r,
        )
        self.redis_write = Histogram(
            "clicktune_redis_write_duration_seconds",
            "One pipelined apply round trip to Redis.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_apply = Histogram(
            "clicktune_batch_apply_duration_seconds",
            "A whole poll: decode, dead-letter, apply, commit.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.open_batch_sessions = Gauge(
            "clicktune_open_batch_sessions", "Sessions in the open batch.", registry=r
        )
        self.releases = Counter(
            "clicktune_releases",
            "Release requests by outcome (created, duplicate, unknown_batch, empty).",
            ["outcome"],
            registry=r,
        )
        self.tasks_emitted = Counter(
            "clicktune_tasks_emitted", "Task events published to the tasks topic.", registry=r
        )
        self.lag = Gauge(
            "clicktune_consumer_lag_messages",
            "High watermark minus the next offset to apply.",
            ["topic", "partition"],
            registry=r,
        )
        self.last_event_time = Gauge(
            "clicktune_last_applied_event_timestamp_seconds",
            "occurred_at of the newest applied event.",
            ["topic", "partition"],
            registry=r,
        )
        self.commits = Counter(
            "clicktune_offset_commits", "Explicit offset commits to Kafka.", registry=r
        )
        self.errors = Counter(
            "clicktune_consumer_errors",
            "Failed attempts against a dependency (the work is retried).",
            ["dependency"],
            registry=r,
        )
        self.ready = Gauge(
            "clicktune_consumer_ready", "1 while the consumer can apply events.", registry=r
        )
        self.log_resets = Counter(
            "clicktune_consumer_log_resets",
            "Partitions whose log started over below the offset mark (broker data lost, "
            "topic recreated): the mark was forgotten.",
            ["topic", "partition"],
            registry=r,
        )
        self.assigned_partitions = Gauge(
            "clicktune_consumer_assigned_partitions", "Partitions this member owns.", registry=r
        )
