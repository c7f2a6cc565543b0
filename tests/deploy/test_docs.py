"""The README's Operations section lists every metric clicktune exports and every alert."""

import re

from consumer.metrics import ConsumerMetrics
from tests.deploy.paths import PROMETHEUS, ROOT, load_yaml
from trainer.metrics_export import TrainerMetrics


def operations() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return readme.split("\n## Operations\n")[1].split("\n## ")[0]


def test_every_exported_metric_is_documented() -> None:
    documented = set(re.findall(r"^\| `(clicktune_\w+)`", operations(), re.M))
    exported = set()
    for holder in (ConsumerMetrics(), TrainerMetrics()):
        for family in holder.registry.collect():
            # Scraped names: counters gain _total; histograms are listed by their base name.
            exported.add(family.name + ("_total" if family.type == "counter" else ""))
    # One way only: a metric being added elsewhere may be documented before it lands.
    assert exported <= documented, exported - documented


def test_every_alert_is_documented() -> None:
    rules = load_yaml(PROMETHEUS / "alerts.yml")
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    documented = set(re.findall(r"`(Clicktune\w+)`", operations()))
    assert documented == alerts, documented ^ alerts
