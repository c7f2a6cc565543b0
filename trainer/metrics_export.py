"""The trainer's Prometheus metrics (``clicktune_`` prefix, base units, bounded labels)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_TRIAL_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 3600, 7200)


class TrainerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.trials = Counter(
            "clicktune_trials",
            "Fine-tuning trials by outcome (ok, failed).",
            ["outcome"],
            registry=r,
        )
        self.trial_duration = Histogram(
            "clicktune_trial_duration_seconds",
            "Wall time of one fine-tuning trial.",
            buckets=_TRIAL_BUCKETS,
            registry=r,
        )
        self.best_metric = Gauge(
            "clicktune_best_metric",
            "Main metric (rerank_ips_dcg@10) of the latest champion, by method.",
            ["method"],
            registry=r,
        )
        self.baseline_metric = Gauge(
            "clicktune_baseline_metric",
            "Main metric of the initial model of the latest task.",
            ["method"],
            registry=r,
        )
        self.tasks = Counter(
            "clicktune_tasks", "Tasks finished, by final status.", ["status"], registry=r
        )
        self.task_duration = Histogram(
            "clicktune_task_duration_seconds",
            "Wall time of one task.",
            buckets=_TRIAL_BUCKETS,
            registry=r,
        )
        self.busy = Gauge("clicktune_trainer_busy", "1 while a task runs.", registry=r)
        self.last_model_time = Gauge(
            "clicktune_last_model_ready_timestamp_seconds",
            "When the last model_ready was published, by method.",
            ["method"],
            registry=r,
        )
