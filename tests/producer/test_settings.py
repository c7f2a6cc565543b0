"""Configuration: environment, secret files, CLI flags, and Kafka security arguments."""

import ssl
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from producer.kafka_config import consumer_kwargs, producer_kwargs
from producer.settings import SaslMechanism, SecurityProtocol, Settings
from schemas.topics import CLICKSTREAM, DLQ, MODELS


def test_defaults() -> None:
    s = Settings.load()
    assert s.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.topic_prefix == ""
    assert s.topic(CLICKSTREAM) == "clickstream.events"
    assert s.kafka_security_protocol is SecurityProtocol.PLAINTEXT


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLICKTUNE_KAFKA_BOOTSTRAP_SERVERS", "k1:9092, k2:9093")
    monkeypatch.setenv("CLICKTUNE_REDIS_URL", "rediss://cache:6380/2")
    monkeypatch.setenv("CLICKTUNE_MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("CLICKTUNE_TOPIC_PREFIX", "prod.")
    monkeypatch.setenv("CLICKTUNE_TOPIC_MODELS", "embeddings.models")
    monkeypatch.setenv("CLICKTUNE_KAFKA_ENABLE_IDEMPOTENCE", "false")
    s = Settings.load()
    assert s.kafka_bootstrap_servers == "k1:9092,k2:9093"
    assert s.redis_url == "rediss://cache:6380/2"
    assert s.mlflow_tracking_uri == "http://mlflow:5000"
    assert s.topic(CLICKSTREAM) == "prod.clickstream.events"
    assert s.topic(MODELS) == "prod.embeddings.models"
    assert s.kafka_enable_idempotence is False


def test_flags_override_environment_and_unset_flags_do_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLICKTUNE_TOPIC_PREFIX", "env.")
    monkeypatch.setenv("CLICKTUNE_REDIS_URL", "redis://env:6379/0")
    s = Settings.load(topic_prefix="flag.", redis_url=None)
    assert s.topic(DLQ) == "flag.clickstream.dlq"
    assert s.redis_url == "redis://env:6379/0"


def test_secrets_from_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "CLICKTUNE_KAFKA_SASL_PASSWORD").write_text("s3cret\n")
    monkeypatch.setenv("CLICKTUNE_SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("CLICKTUNE_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("CLICKTUNE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("CLICKTUNE_KAFKA_SASL_USERNAME", "clicktune")
    s = Settings.load()
    assert s.kafka_sasl_password is not None
    assert s.kafka_sasl_password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(s) and "s3cret" not in str(s.model_dump())
    kwargs = producer_kwargs(s)
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "clicktune"
    assert kwargs["sasl_plain_password"] == "s3cret"
    assert "ssl_context" not in kwargs


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"kafka_bootstrap_servers": "no-port"}, "not host:port"),
        ({"kafka_bootstrap_servers": " , "}, "at least one"),
        ({"kafka_bootstrap_servers": "h:70000"}, "not host:port"),
        ({"redis_url": "http://x"}, "redis://"),
        ({"kafka_security_protocol": "SASL_SSL"}, "kafka_sasl_mechanism is required"),
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "PLAIN"},
            "username and kafka_sasl_password",
        ),
        ({"kafka_security_protocol": "KERBEROS"}, "kafka_security_protocol"),
        ({"kafka_ssl_cafile": "/nonexistent/ca.pem"}, "no such file"),
        ({"kafka_ssl_certfile": "/etc/hostname"}, "go together"),
        ({"topic_events_partitions": 0}, "greater than or equal to 1"),
    ],
)
def test_invalid_settings_are_refused_clearly(overrides: dict, says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        Settings.load(**overrides)


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_ssl_and_sasl_ssl_build_a_tls_context(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    s = Settings.load(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism=SaslMechanism.SCRAM_SHA_256,
        kafka_sasl_username="u",
        kafka_sasl_password="p",
        kafka_ssl_cafile=cert,
        kafka_ssl_certfile=cert,
        kafka_ssl_keyfile=key,
        kafka_ssl_check_hostname=False,
    )
    kwargs = consumer_kwargs(s, group_id="g")
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname is False
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-256"
    assert kwargs["enable_auto_commit"] is False


def test_producer_arguments_follow_settings() -> None:
    kwargs = producer_kwargs(Settings.load(kafka_compression="none", kafka_linger_ms=0))
    assert kwargs["acks"] == "all"
    assert kwargs["enable_idempotence"] is True
    assert kwargs["compression_type"] is None
    assert kwargs["linger_ms"] == 0
    assert producer_kwargs(Settings.load())["compression_type"] == "gzip"
