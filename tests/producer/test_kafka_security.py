"""Kafka over TLS and SASL, configured from settings, through the real SDK and CLI.

What is exercised for real, and how: tansu 0.6.0 (the embedded broker) cannot terminate TLS
for aiokafka, and SASL users cannot be created on its memory storage while authentication is
required (`tansu user create` then fails with "early eof"). So a front door
(``tests/kafka_front_door.py``) stands in front of a tansu that advertises the front door's
port: it terminates TLS with a certificate from a throwaway CA (optionally requiring a client
certificate) and runs the server side of SASL PLAIN and SCRAM-SHA-256/512 (salted password,
client proof verified, server signature returned), then pipes the Kafka protocol to tansu.
The client side is entirely clicktune's: ``Settings`` -> ``producer.kafka_config`` ->
aiokafka's SSL context and SASL authenticators, in the publisher, the subscriber, the
consumer service and the ``clicktune`` executable. What is *not* exercised: a broker's own
TLS stack and ACLs (Apache Kafka in ``deploy/``).
"""

import asyncio
import json
import logging
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiokafka.errors import KafkaConnectionError, KafkaError
from pydantic import SecretStr

from consumer.keys import Keys
from producer.broker import EmbeddedBroker, free_port
from producer.event_publisher import EventPublisher
from producer.kafka_config import common_kwargs, consumer_kwargs, producer_kwargs, ssl_context
from producer.settings import SaslMechanism, SecurityProtocol, Settings
from producer.subscriber import subscribe_model_ready
from schemas import ClickEvent, ModelReadyEvent, SearchEvent, decode
from schemas.topics import CLICKSTREAM, RELEASE
from tests.conftest import REDIS_URL, read_topic
from tests.factories import fresh
from tests.kafka_front_door import MECHANISMS, FrontDoor
from tests.tls_certs import KEY_PASSWORD, Certs, make_certs

CLICKTUNE = str(Path(sys.executable).with_name("clicktune"))
PASSWORD = "kafka-pw-7b2d"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def secured_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    door_port = free_port()
    log = tmp_path_factory.mktemp("secured-broker") / "tansu.log"
    with EmbeddedBroker(log_file=log, advertised_port=door_port) as broker:
        yield broker


@pytest.fixture(scope="module")
async def door(secured_broker: EmbeddedBroker) -> AsyncIterator[FrontDoor]:
    front = await FrontDoor(("127.0.0.1", secured_broker.port)).start(
        secured_broker.advertised_port
    )
    yield front
    await front.stop()


def _settings(door: FrontDoor, prefix: str, **security: Any) -> Settings:
    # The default request timeout: tansu holds a JoinGroup for several seconds.
    return Settings.load(
        kafka_bootstrap_servers=f"127.0.0.1:{door.port}",
        kafka_enable_idempotence=False,
        topic_prefix=prefix,
        redis_url=REDIS_URL,
        **security,
    )


async def _round_trip(s: Settings) -> None:
    """Publish through the SDK and read it back with a consumer built from the same settings."""
    click = ClickEvent.create(session_id="tls", item_id="i")
    ready = fresh(ModelReadyEvent)
    async with EventPublisher(s) as publisher:
        await publisher.publish(click)
        await publisher.publish(ready)
    [record] = await read_topic(s, CLICKSTREAM, 1)
    assert decode(CLICKSTREAM, record.value) == click
    async with asyncio.timeout(20), subscribe_model_ready(s, group_id="tls-indexer") as events:
        got = await anext(aiter(events))
    assert got.event_id == ready.event_id


async def test_ssl_publish_subscribe_and_the_consumer_service(
    door: FrontDoor, certs: Certs, prefix: str, redis_client: aioredis.Redis
) -> None:
    """SSL with the CA from settings: the publisher, a subscriber group and the consumer
    service (Kafka in, Redis out) all connect through TLS only."""
    from tests.consumer.conftest import running, wait_until

    door.configure(tls=certs.server_context())
    s = _settings(door, prefix, kafka_security_protocol="SSL", kafka_ssl_cafile=certs.ca)
    await _round_trip(s)
    service_settings = s.model_copy(
        update={
            "redis_key_prefix": prefix,
            "consumer_group": f"{prefix}consumer",
            "metrics_port": 0,
            "consumer_poll_timeout_ms": 100,
        }
    )
    search = SearchEvent.create(session_id="over-tls", query="q", results=[{"item_id": "i"}])
    keys = Keys(prefix)
    try:
        async with running(service_settings):
            async with EventPublisher(s) as publisher:
                await publisher.publish(search)

            async def applied() -> bool:
                return await redis_client.hget(keys.session("over-tls"), "query") == b"q"

            await wait_until(applied, 30, "the search applied over TLS")
    finally:
        for key in [k async for k in redis_client.scan_iter(f"{prefix}*")]:
            await redis_client.delete(key)
    assert door.tls_handshakes >= 3 and not door.refused, door.refused


async def test_ssl_refuses_a_broker_the_ca_did_not_sign(
    door: FrontDoor, certs: Certs, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    door.configure(tls=certs.server_context())
    s = _settings(door, prefix, kafka_security_protocol="SSL", kafka_ssl_cafile=certs.other_ca)
    with caplog.at_level(logging.ERROR, logger="aiokafka"), pytest.raises(KafkaConnectionError):
        async with EventPublisher(s):
            pass
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text
    assert door.tls_handshakes == 0  # the client hung up in the handshake


async def test_plaintext_client_cannot_talk_to_a_tls_listener(
    door: FrontDoor, certs: Certs, prefix: str
) -> None:
    door.configure(tls=certs.server_context())
    with pytest.raises(KafkaError):
        async with EventPublisher(_settings(door, prefix)):
            pass


async def test_mutual_tls_with_an_encrypted_client_key(
    door: FrontDoor, certs: Certs, prefix: str
) -> None:
    """The client certificate and its password-protected key come from settings."""
    door.configure(tls=certs.server_context(require_client_cert=True))
    s = _settings(
        door,
        prefix,
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=certs.ca,
        kafka_ssl_certfile=certs.client_cert,
        kafka_ssl_keyfile=certs.client_key,
        kafka_ssl_key_password=KEY_PASSWORD,
    )
    await _round_trip(s)
    assert door.tls_handshakes >= 1
    without = _settings(door, prefix, kafka_security_protocol="SSL", kafka_ssl_cafile=certs.ca)
    door.configure(tls=certs.server_context(require_client_cert=True))
    with pytest.raises(KafkaError):
        async with EventPublisher(without):
            pass
    assert door.tls_handshakes == 0


def _secret_dir(tmp_path: Path, password: str) -> Path:
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "CLICKTUNE_KAFKA_SASL_PASSWORD").write_text(password + "\n")
    return secrets


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
@pytest.mark.parametrize("mechanism", MECHANISMS)
async def test_sasl_mechanisms(
    door: FrontDoor,
    certs: Certs,
    prefix: str,
    tmp_path: Path,
    mechanism: str,
    protocol: str,
) -> None:
    """Each mechanism, with the password read from a secrets file: accepted with the right
    password, refused with a wrong one."""
    tls = certs.server_context() if protocol == "SASL_SSL" else None
    door.configure(tls=tls, users={"clicktune": PASSWORD}, require_sasl=True)
    security: dict[str, Any] = {
        "kafka_security_protocol": protocol,
        "kafka_sasl_mechanism": mechanism,
        "kafka_sasl_username": "clicktune",
        "secrets_dir": _secret_dir(tmp_path, PASSWORD),
    }
    if protocol == "SASL_SSL":
        security["kafka_ssl_cafile"] = certs.ca
    s = _settings(door, prefix, **security)
    assert s.kafka_sasl_password is not None
    await _round_trip(s)
    assert ("clicktune", mechanism) in door.authenticated
    assert not door.refused, door.refused

    door.configure(tls=tls, users={"clicktune": PASSWORD}, require_sasl=True)
    wrong = _settings(door, prefix, **{**security, "secrets_dir": _secret_dir(tmp_path, "nope")})
    with pytest.raises(KafkaError):
        async with EventPublisher(wrong):
            pass
    assert not door.authenticated
    assert any("password" in r or "authentication" in r for r in door.refused), door.refused


async def test_sasl_required_refuses_an_unauthenticated_client(
    door: FrontDoor, prefix: str
) -> None:
    door.configure(users={"clicktune": PASSWORD}, require_sasl=True)
    with pytest.raises(KafkaError):
        async with EventPublisher(_settings(door, prefix)):
            pass
    assert any("before authentication" in r for r in door.refused), door.refused


async def test_cli_over_sasl_ssl_with_a_password_file(
    door: FrontDoor, certs: Certs, prefix: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """`clicktune release` as a user runs it: security from flags and environment, the
    password from --sasl-password-file."""
    door.configure(tls=certs.server_context(), users={"clicktune": PASSWORD}, require_sasl=True)
    password_file = tmp_path / "sasl-password"
    password_file.write_text(PASSWORD + "\n")
    env = {
        **cli_env,
        "CLICKTUNE_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{door.port}",
        "CLICKTUNE_TOPIC_PREFIX": prefix,
        "CLICKTUNE_KAFKA_SSL_CAFILE": str(certs.ca),
    }
    args = [
        CLICKTUNE,
        "--security-protocol",
        "sasl_ssl",
        "--sasl-mechanism",
        "scram-sha-512",
        "--sasl-username",
        "clicktune",
        "--sasl-password-file",
        str(password_file),
        "release",
        "-k",
        "over-sasl-ssl",
    ]
    result = await asyncio.to_thread(
        subprocess.run, args, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    assert ("clicktune", "SCRAM-SHA-512") in door.authenticated
    s = _settings(
        door,
        prefix,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="clicktune",
        kafka_sasl_password=PASSWORD,
        kafka_ssl_cafile=certs.ca,
    )
    [record] = await read_topic(s, RELEASE, 1)
    assert record.key == b"over-sasl-ssl"
    assert json.loads(result.stdout)["idempotency_key"] == "over-sasl-ssl"


# --- settings -> aiokafka arguments ---------------------------------------------------------


@pytest.mark.parametrize("protocol", list(SecurityProtocol))
@pytest.mark.parametrize("mechanism", [None, *SaslMechanism])
def test_each_protocol_and_mechanism_maps_to_aiokafka_arguments(
    protocol: SecurityProtocol, mechanism: SaslMechanism | None, certs: Certs
) -> None:
    sasl = protocol in (SecurityProtocol.SASL_PLAINTEXT, SecurityProtocol.SASL_SSL)
    tls = protocol in (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL)
    fields: dict[str, Any] = {
        "kafka_security_protocol": protocol,
        "kafka_sasl_mechanism": mechanism,
        "kafka_sasl_username": "u" if mechanism else None,
        "kafka_sasl_password": "p" if mechanism else None,
        "kafka_ssl_cafile": certs.ca,
    }
    if sasl and mechanism is None:
        with pytest.raises(ValueError, match="kafka_sasl_mechanism is required"):
            Settings.load(**fields)
        return
    s = Settings.load(**fields)
    for kwargs in (
        common_kwargs(s, client_suffix="x"),
        producer_kwargs(s),
        consumer_kwargs(s, group_id="g"),
    ):
        assert kwargs["security_protocol"] == protocol.value
        if tls:
            context = kwargs["ssl_context"]
            assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
        else:
            assert "ssl_context" not in kwargs
        if sasl:
            assert kwargs["sasl_mechanism"] == mechanism.value  # type: ignore[union-attr]
            assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("u", "p")
        else:  # a mechanism left set means nothing without SASL (it used to assert)
            assert not any(k.startswith("sasl") for k in kwargs)


def test_ssl_context_details(certs: Certs) -> None:
    s = Settings.load(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=certs.ca,
        kafka_ssl_certfile=certs.client_cert,
        kafka_ssl_keyfile=certs.client_key,
        kafka_ssl_key_password=KEY_PASSWORD,
        kafka_ssl_check_hostname=False,
    )
    context = ssl_context(s)
    assert context is not None and context.check_hostname is False
    assert context.verify_mode is ssl.CERT_REQUIRED
    bad = s.model_copy(update={"kafka_ssl_key_password": None})
    # The key is encrypted: a clear error, not OpenSSL prompting on the terminal.
    with pytest.raises(ValueError, match="is encrypted: set CLICKTUNE_KAFKA_SSL_KEY_PASSWORD"):
        ssl_context(bad)
    wrong = s.model_copy(update={"kafka_ssl_key_password": SecretStr("wrong")})
    with pytest.raises(ssl.SSLError):
        ssl_context(wrong)
    assert ssl_context(Settings.load()) is None
    # Without a CA file the system's trust store is used, not "trust anything".
    system = ssl_context(Settings.load(kafka_security_protocol="SSL"))
    assert system is not None and system.verify_mode is ssl.CERT_REQUIRED
