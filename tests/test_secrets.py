"""Secrets come only from the environment or files, and never come out: not in logs (DEBUG,
every logger, in-process and a ``clicktune -vv`` subprocess), not in /metrics or the probes,
not in any event or dead letter, not in MLflow (params, tags, metrics, registered models,
artifact files), not in the settings' repr.

Exercised for real: the SASL password (SCRAM-SHA-512 over TLS, through the front door of
``tests/kafka_front_door.py``) and the Redis password (an ACL user on a private redis-server)
are the same unique marker, read from a secrets directory. The consumer service runs with
them, then ``clicktune -vv consume`` does, then a short fine-tuning task (one trial, one
epoch) runs its ranking data, MLflow logging, registration and ``model_ready`` with them.
"""

import asyncio
import logging
import signal
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import mlflow
import pytest
from aiokafka import AIOKafkaProducer
from mlflow.entities import ViewType
from prometheus_client import generate_latest

from consumer.tasks import TaskStore
from producer import synthetic
from producer.event_publisher import EventPublisher
from producer.kafka_config import producer_kwargs
from producer.redis_client import acl_rules, connect_redis
from producer.settings import Settings
from schemas import ReleaseEvent
from schemas.topics import ALL_TOPICS, CLICKSTREAM, DLQ, MODELS, STATUS, TASKS
from tests.conftest import read_topic
from tests.consumer.conftest import consumed, publish, running, wait_until
from tests.consumer.test_redis_security import PrivateRedis, private_redis  # noqa: F401
from tests.kafka_front_door import FrontDoor
from tests.producer.test_kafka_security import door, secured_broker  # noqa: F401
from tests.tls_certs import Certs, make_certs
from tests.trainer.conftest import clicked_sessions
from trainer.task_runner import TaskRunner

MARKER = f"S3CRET-{uuid.uuid4().hex}"
CLICKTUNE = str(Path(sys.executable).with_name("clicktune"))


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("secret-certs"))


def _assert_clean(where: str, text: str | bytes) -> None:
    data = text.encode() if isinstance(text, str) else text
    assert MARKER.encode() not in data, f"the secret leaked into {where}"


async def test_secrets_never_leave_the_process(
    door: FrontDoor,  # noqa: F811
    private_redis: PrivateRedis,  # noqa: F811
    certs: Certs,
    prefix: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    user = f"secret-{prefix.rstrip('.')}"
    admin = private_redis.admin()
    await admin.execute_command(
        "ACL", "SETUSER", user, "reset", "on", f">{MARKER}", *acl_rules(prefix)
    )
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name in ("CLICKTUNE_KAFKA_SASL_PASSWORD", "CLICKTUNE_REDIS_PASSWORD"):
        (secrets / name).write_text(MARKER + "\n")
    door.configure(tls=certs.server_context(), users={"clicktune": MARKER}, require_sasl=True)
    env_settings = {
        "CLICKTUNE_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{door.port}",
        "CLICKTUNE_KAFKA_ENABLE_IDEMPOTENCE": "false",
        "CLICKTUNE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "CLICKTUNE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "CLICKTUNE_KAFKA_SASL_USERNAME": "clicktune",
        "CLICKTUNE_KAFKA_SSL_CAFILE": str(certs.ca),
        "CLICKTUNE_REDIS_URL": f"redis://127.0.0.1:{private_redis.port}/0",
        "CLICKTUNE_REDIS_USERNAME": user,
        "CLICKTUNE_SECRETS_DIR": str(secrets),
        "CLICKTUNE_TOPIC_PREFIX": prefix,
        "CLICKTUNE_REDIS_KEY_PREFIX": prefix,
        "CLICKTUNE_CONSUMER_GROUP": f"{prefix}consumer",
        "CLICKTUNE_CONSUMER_POLL_TIMEOUT_MS": "100",
        "CLICKTUNE_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "CLICKTUNE_WORK_DIR": str(tmp_path / "work"),
    }
    s = _settings_from(env_settings, metrics_port=0)
    assert s.kafka_sasl_password is not None and s.redis_password is not None
    assert s.kafka_sasl_password.get_secret_value() == MARKER  # read from the files
    for shown in (repr(s), str(s), s.model_dump_json(), str(s.model_dump())):
        _assert_clean("the settings' repr or dump", shown)

    try:
        # 1. The consumer service, in process: logs, metrics, probes, events, dead letters.
        events, _ = clicked_sessions(60, seed=11)
        async with running(s) as service:
            await publish(s, events)
            raw = AIOKafkaProducer(**producer_kwargs(s, client_suffix="raw"))
            await raw.start()
            try:
                await raw.send_and_wait(s.topic(CLICKSTREAM), b"{not json", key=b"bad")
            finally:
                await raw.stop()
            await wait_until(lambda: _at_least(consumed(service), len(events) + 1), what="read")
            await publish(s, [ReleaseEvent.create(idempotency_key="secret-test")])
            await read_topic(s, TASKS, 1)
            port = service.health.port
            scraped = [
                await asyncio.to_thread(_get, f"http://127.0.0.1:{port}{path}")
                for path in ("/metrics", "/healthz", "/readyz")
            ]
        for text in scraped:
            _assert_clean("/metrics or a probe", text)

        # 2. `clicktune -vv consume` (DEBUG logging), the settings from environment and files.
        stderr = await _cli_consume(env_settings, s)
        _assert_clean("clicktune -vv consume's stderr", stderr)
        assert "DEBUG" in stderr  # it really logged at debug level

        # 3. A short fine-tuning task: ranking data, MLflow, registration, model_ready.
        trainer_settings = s.model_copy(
            update={"max_evals": 1, "epochs": 1, "device": "cpu", "train_batch_size": 16,
                    "test_fraction": 0.3, "top_n_params": 1}
        )  # fmt: skip
        client = connect_redis(trainer_settings)
        try:
            [record] = await TaskStore(client, prefix).recent()
            async with EventPublisher(trainer_settings) as publisher:
                runner = TaskRunner(trainer_settings, client, publisher)
                outcome = await runner.run(record.task_event())
        finally:
            await client.aclose()
        assert outcome is not None, "the task ran"
        _assert_clean("the trainer's metrics", generate_latest(runner.metrics.registry))
        _assert_clean("the task outcome", repr(outcome))
        _assert_clean("MLflow", _everything_in_mlflow(trainer_settings, tmp_path))

        # Every record of every topic: values, keys, headers.
        for spec in ALL_TOPICS:
            for record in await _all_records(s, spec):
                _assert_clean(f"a {spec.name} record", record)
        statuses = await _all_records(s, STATUS)
        assert statuses and await _all_records(s, DLQ)  # the checks above saw real records
        if outcome.model_ready is not None:
            assert await _all_records(s, MODELS)
    finally:
        await admin.execute_command("ACL", "DELUSER", user)
        for key in [k async for k in admin.scan_iter(f"{prefix}*", count=1000)]:
            await admin.delete(key)
        await admin.aclose()
    _assert_clean("the logs", caplog.text)
    assert "SCRAM-SHA-512" in caplog.text or door.authenticated  # the SASL path was taken
    print(
        f"\nsecret marker absent from {len(caplog.records)} log records, /metrics, probes, "
        f"every topic's records, MLflow and `clicktune -vv consume` ({len(stderr)} bytes); "
        f"task {outcome.status.value}"
    )


def _settings_from(env: dict[str, str], **overrides: object) -> Settings:
    import os

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return Settings.load(**overrides)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


async def _at_least(value: float, n: int) -> bool:
    return value >= n


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


async def _cli_consume(env_settings: dict[str, str], s: Settings) -> str:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("CLICKTUNE_")}
    env.update(env_settings, CLICKTUNE_METRICS_PORT="0")
    proc = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block
        [CLICKTUNE, "-vv", "consume"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        more = list(synthetic.sessions(5, seed=12))
        await publish(s, more)
        await asyncio.sleep(6)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(proc.communicate, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = err.decode(errors="replace")
    assert proc.returncode == 0, text[-2000:]
    return text


def _everything_in_mlflow(s: Settings, root: Path) -> str:
    mlflow.set_tracking_uri(s.mlflow_tracking_uri)
    client = mlflow.MlflowClient()
    parts: list[str] = []
    for experiment in client.search_experiments(view_type=ViewType.ALL):
        parts += [experiment.name, repr(experiment.tags), experiment.artifact_location]
        for run in client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL):
            parts += [repr(run.data.params), repr(run.data.tags), repr(run.data.metrics)]
    for model in client.search_registered_models():
        parts += [model.name, repr(model.tags), model.description or ""]
        for version in client.search_model_versions(f"name='{model.name}'"):
            parts += [repr(version.tags), version.source or "", version.description or ""]
    for path in root.rglob("*"):  # the sqlite store and every artifact file
        if path.is_file() and path.suffix != ".safetensors" and "secrets" not in path.parts:
            parts.append(path.read_bytes().decode(errors="replace"))
    return "\n".join(parts)


async def _all_records(s: Settings, spec) -> list[bytes]:  # type: ignore[no-untyped-def]
    from tests.consumer.test_hostile_input import _drain

    out = []
    for record in await _drain(s, spec, idle_s=1.5):
        out.append(record.value or b"")
        out.append(record.key or b"")
        out.extend(v for _, v in record.headers)
    return out
