"""Every metric the dashboard and the alert rules query is one that clicktune exports:
checked against what a running consumer and a running trainer serve on /metrics, and the
probes the deployments configure answer there too."""

import asyncio
import re
import urllib.request
from collections.abc import Iterable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from producer.settings import Settings
from tests.consumer.conftest import _drop_keys, running  # noqa: F401  (key clean-up)
from tests.deploy.paths import dashboard_exprs, metric_names, rule_exprs
from trainer.worker import TrainerWorker

# Series names a family of each type produces when scraped.
_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "gauge": ("",),
}


def exported_series(exposition: str) -> dict[str, str]:
    """Series name -> family type, for every family in a scrape, with or without samples
    (a labelled metric that has seen no label values yet shows only HELP and TYPE)."""
    series = {}
    for family in text_string_to_metric_families(exposition):
        for suffix in _SUFFIXES.get(family.type, ("",)):
            series[family.name + suffix] = family.type
    return series


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    return await asyncio.to_thread(_get, f"http://127.0.0.1:{port}{path}")


def test_the_extraction_finds_what_the_files_use() -> None:
    # A broken extraction (or an emptied dashboard) must not pass the test below vacuously.
    assert {"clicktune_consumer_lag_messages", "clicktune_dlq_messages_total"} <= metric_names(
        dashboard_exprs()
    )
    assert "clicktune_last_model_ready_timestamp_seconds" in metric_names(rule_exprs())
    assert metric_names(['up{job="clicktune-consumer"}']) == set()


def test_exported_series_names_follow_the_family_type() -> None:
    text = (
        "# TYPE clicktune_x_total counter\n"
        "# TYPE clicktune_h_seconds histogram\n"
        'clicktune_h_seconds_bucket{le="+Inf"} 0\nclicktune_h_seconds_sum 0\n'
        "clicktune_h_seconds_count 0\n"
        "# TYPE clicktune_g gauge\nclicktune_g 1\n"
    )
    assert set(exported_series(text)) == {
        "clicktune_x_total",
        "clicktune_h_seconds_bucket",
        "clicktune_h_seconds_sum",
        "clicktune_h_seconds_count",
        "clicktune_g",
    }


def _missing(used: Iterable[str], exported: dict[str, str]) -> list[str]:
    return sorted(name for name in used if name not in exported)


@pytest.mark.timeout(180)
async def test_dashboard_and_rules_use_only_exported_metrics(
    consumer_settings: Settings, tmp_path: Path
) -> None:
    used = metric_names(dashboard_exprs()) | metric_names(rule_exprs())
    async with running(consumer_settings) as consumer:
        assert consumer.health is not None
        status, consumer_text = await scrape(consumer.health.port)
        assert status == 200
        probes = [await scrape(consumer.health.port, p) for p in ("/healthz", "/readyz")]
    assert [code for code, _ in probes] == [200, 200], probes

    trainer_settings = consumer_settings.model_copy(
        update={
            "trainer_metrics_port": 0,
            "mlflow_tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "work_dir": tmp_path / "work",
            "device": "cpu",
        }
    )
    worker = TrainerWorker(trainer_settings)
    await worker.start()
    try:
        assert worker.health is not None
        status, trainer_text = await scrape(worker.health.port)
        assert status == 200
        probes = [await scrape(worker.health.port, p) for p in ("/healthz", "/readyz")]
    finally:
        await worker.close()
    assert [code for code, _ in probes] == [200, 200], probes

    consumer_series = exported_series(consumer_text)
    trainer_series = exported_series(trainer_text)
    # Each side exports its own families (a scrape of the wrong registry would pass).
    assert "clicktune_consumer_lag_messages" in consumer_series
    assert "clicktune_trials_total" in trainer_series
    assert not _missing(used, consumer_series | trainer_series), (
        "not exported by the consumer or the trainer: "
        f"{_missing(used, consumer_series | trainer_series)}"
    )


def test_selector_labels_exist_on_the_metric() -> None:
    """`metric{label=...}` and `by (label) (...metric...)` use labels the metric has."""
    from consumer.metrics import ConsumerMetrics
    from trainer.metrics_export import TrainerMetrics

    labels: dict[str, set[str]] = {}
    for holder in (ConsumerMetrics(), TrainerMetrics()):
        for metric in vars(holder).values():
            name = getattr(metric, "_name", None)
            if name is None:
                continue
            kind = getattr(metric, "_type", "")
            names = {name + s for s in _SUFFIXES.get(kind, ("",))}
            extra = {"le"} if kind == "histogram" else set()
            for series in names:
                labels[series] = set(metric._labelnames) | extra
    checked = 0
    for expr in dashboard_exprs() + rule_exprs():
        for metric, selector in re.findall(r"(clicktune_\w+)\{([^}]*)\}", expr):
            for label in re.findall(r"(\w+)\s*[=!~]", selector):
                assert label in labels[metric], f"{metric} has no label {label}: {expr}"
                checked += 1
        pattern = r"by \(([^)]*)\) \((?:\w+\()*(clicktune_\w+)"
        for by, metric in re.findall(pattern, expr):
            for label in filter(None, (x.strip() for x in by.split(","))):
                assert label in labels[metric], f"{metric} has no label {label}: {expr}"
                checked += 1
    assert checked >= 10, checked  # the patterns still match the files
