"""deploy/compose/docker-compose.yml, checked the way `docker compose config` would (no
Docker daemon here): the Compose schema, pinned images, files that exist, references that
resolve, settings that clicktune knows, and secrets that never appear in the file."""

import json
import os
import re
import stat
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import typer
import yaml

from producer.cli import app
from producer.settings import Settings
from tests.deploy.paths import COMPOSE, DEPLOY, load_yaml

COMPOSE_DIR = COMPOSE.parent
# The Compose Specification's schema (compose-spec/compose-spec, schema/compose-spec.json,
# commit 170098ba07d9, Apache-2.0), vendored: no download in CI.
SCHEMA = Path(__file__).parent / "data" / "compose-spec.json"
_VAR = re.compile(r"\$\{([A-Z0-9_]+)(?::?-([^}]*))?\}")


def env_example() -> dict[str, str]:
    pairs = {}
    for line in (COMPOSE_DIR / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR} / ${VAR:-default} substitution; $$ is a literal $."""
    text = text.replace("$$", "\0")
    text = _VAR.sub(lambda m: env.get(m[1], m[2] or ""), text)
    return text.replace("\0", "$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(interpolate(COMPOSE.read_text(), env_example()))


def test_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    # Draft 7, named explicitly: the file's "$schema" URL lacks the "#" jsonschema expects.
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    validator.validate(compose)
    with pytest.raises(jsonschema.ValidationError):  # the schema does refuse mistakes
        validator.validate({**compose, "servics": {}})


def test_every_variable_is_documented_in_env_example() -> None:
    used = {m[1] for m in _VAR.finditer(COMPOSE.read_text())}
    assert used == set(env_example()), used ^ set(env_example())
    for match in _VAR.finditer(COMPOSE.read_text()):  # and works without a .env
        assert match[2], f"${{{match[1]}}} has no default"


def test_images_are_pinned_and_builds_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest" and "/" not in tag, f"{name}: {image}"
        if "build" in service:
            context = (COMPOSE_DIR / service["build"]["context"]).resolve()
            assert (context / service["build"]["dockerfile"]).is_file(), name
            assert (context / ".dockerignore").is_file(), "the build context needs its allow-list"


def _bind_sources(service: dict[str, Any]) -> list[str]:
    sources = []
    for volume in service.get("volumes", []):
        source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
        if source.startswith((".", "/")):
            sources.append(source)
    return sources


def test_mounted_files_and_env_files_exist(compose: dict[str, Any]) -> None:
    named = set(compose.get("volumes", {}))
    mounted = 0
    for name, service in compose["services"].items():
        for source in _bind_sources(service):
            assert (COMPOSE_DIR / source).exists(), f"{name} mounts {source}: missing"
            mounted += 1
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in named, f"{name}: volume {source} is not declared"
        for env_file in service.get("env_file", []):
            assert (COMPOSE_DIR / env_file).is_file(), f"{name}: {env_file}"
    assert mounted >= 4  # prometheus.yml, alerts.yml, Grafana provisioning and dashboards


def test_references_resolve(compose: dict[str, Any]) -> None:
    services = compose["services"]
    secrets = set(compose["secrets"])
    for name, service in services.items():
        depends = service.get("depends_on", {})
        for other in depends:
            assert other in services, f"{name} depends on unknown {other}"
            assert other != name
            condition = depends[other]["condition"] if isinstance(depends, dict) else None
            if condition == "service_healthy":
                assert "healthcheck" in services[other], f"{name} waits on {other}'s health"
        for secret in service.get("secrets", []):
            source = secret if isinstance(secret, str) else secret["source"]
            assert source in secrets, f"{name}: secret {source}"


def _clicktune_env(compose: dict[str, Any]) -> dict[str, dict[str, str]]:
    """CLICKTUNE_* variables of each service, from environment and env_file."""
    found: dict[str, dict[str, str]] = {}
    for name, service in compose["services"].items():
        env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
        for env_file in service.get("env_file", []):
            for line in (COMPOSE_DIR / env_file).read_text().splitlines():
                if line.strip() and not line.startswith("#"):
                    key, _, value = line.partition("=")
                    env.setdefault(key, value)
        found[name] = {k: v for k, v in env.items() if k.startswith("CLICKTUNE_")}
    return found


def test_clicktune_variables_are_real_settings(compose: dict[str, Any]) -> None:
    known = {f"CLICKTUNE_{name.upper()}" for name in Settings.model_fields}
    commands = set(typer.main.get_command(app).commands)
    per_service = _clicktune_env(compose)
    clicktune = [n for n, s in compose["services"].items() if s["image"].startswith("clicktune:")]
    assert {"consumer", "trainer", "trainer-cpu", "topics"} <= set(clicktune)
    for name in clicktune:
        env = per_service[name]
        assert set(env) <= known, set(env) - known
        # They load: the values validate (secrets come from files, absent here).
        Settings(**{k.removeprefix("CLICKTUNE_").lower(): v for k, v in env.items()})
        assert env["CLICKTUNE_METRICS_HOST"] == "0.0.0.0", name  # reachable by Prometheus
        assert env["CLICKTUNE_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092", name
        # The image's entrypoint is `clicktune`: the command is one of its commands.
        assert compose["services"][name]["command"][0] in commands, name


def test_no_secret_is_written_in_the_file(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|TOKEN|REDIS_URL", key) and not key.endswith(
                ("_FILE", "_DIR")
            ):
                pytest.fail(f"{name}: {key}={value} belongs in a Docker secret")
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_prometheus_finds_the_services_on_their_metrics_ports(compose: dict[str, Any]) -> None:
    services = compose["services"]
    answering: dict[str, set[str]] = {}  # DNS name -> the services that answer to it
    for name, service in services.items():
        aliases = (service.get("networks") or {}).get("default", {}).get("aliases", [])
        for dns_name in [name, *aliases]:
            answering.setdefault(dns_name, set()).add(name)
    # Either trainer (profile gpu or cpu) is scraped under one name.
    assert answering["trainer"] == {"trainer", "trainer-cpu"}
    config = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    ports = {"clicktune-consumer": 9400, "clicktune-trainer": 9401}
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(ports) <= set(jobs)
    for job_name, port in ports.items():
        [sd] = jobs[job_name]["dns_sd_configs"]
        assert sd["port"] == port
        for dns_name in sd["names"]:
            assert answering.get(dns_name), f"{job_name}: no service answers to {dns_name}"
            for name in answering[dns_name]:
                probe = " ".join(services[name]["healthcheck"]["test"])
                assert f":{port}/readyz" in probe, (name, probe)


def test_grafana_provisioning_matches_the_mounts(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"] if v.startswith("."))
    provider = load_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "clicktune.yml")
    [entry] = provider["providers"]
    assert mounts["../grafana/dashboards"] == entry["options"]["path"]
    dashboard_home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert dashboard_home == entry["options"]["path"] + "/clicktune.json"
    assert mounts["../grafana/provisioning"] == "/etc/grafana/provisioning"
    datasources = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    [source] = datasources["datasources"]
    assert source["url"] == "http://prometheus:9090" and "prometheus" in compose["services"]


def test_init_secrets_writes_every_secret_once(compose: dict[str, Any], tmp_path: Path) -> None:
    target = tmp_path / "secrets"
    script = COMPOSE_DIR / "init-secrets.sh"
    run = subprocess.run([script, str(target)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    for name, secret in compose["secrets"].items():
        path = target / Path(secret["file"]).name
        assert Path(secret["file"]).parent == Path("secrets"), name
        assert path.is_file() and path.stat().st_size >= 16, name
        # Readable by the containers' users (compose mounts the file as it is) ...
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, name
    # ... and by no other host user: the directory is closed.
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    password = (target / "redis_password").read_text()
    assert (target / "clicktune_redis_url").read_text() == f"redis://:{password}@redis:6379/0"
    Settings(redis_url=(target / "clicktune_redis_url").read_text())
    before = {p.name: p.read_text() for p in target.iterdir()}
    again = subprocess.run([script, str(target)], capture_output=True, text=True, check=False)
    assert again.returncode == 0 and again.stdout == ""
    assert {p.name: p.read_text() for p in target.iterdir()} == before
    assert len(set(before.values())) == len(before)  # independent random values
    assert os.access(script, os.X_OK)


def test_secrets_directory_is_ignored_by_git() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(COMPOSE_DIR / "secrets" / "redis_password")],
        cwd=COMPOSE_DIR,
        check=False,
    )
    assert ignored.returncode == 0
