"""promtool accepts the Prometheus config and the alert rules, and the rules' unit tests
(deploy/prometheus/alerts_test.yml) pass. promtool is a CI requirement (.ci/setup installs
Debian's `prometheus` package): without it these tests fail, they do not skip."""

import shutil
import subprocess

import pytest

from tests.deploy.paths import PROMETHEUS, load_yaml


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool not found: apt-get install prometheus (bash .ci/setup does)")
    return subprocess.run(
        [exe, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120, check=False
    )


def test_config_is_valid_and_finds_the_rules() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout + result.stderr


def test_rules_are_valid() -> None:
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass() -> None:
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    rules = load_yaml(PROMETHEUS / "alerts.yml")
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    tests = load_yaml(PROMETHEUS / "alerts_test.yml")
    tested = {
        case["alertname"]
        for test in tests["tests"]
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")  # a test that sees the alert fire, not only stay quiet
    }
    assert alerts == tested, alerts ^ tested
