"""Real services for the tests: an embedded broker per session, Redis at 127.0.0.1:6379."""

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, ConsumerRecord

from producer.broker import EmbeddedBroker
from producer.kafka_config import consumer_kwargs
from producer.settings import Settings
from schemas.topics import TopicSpec

REDIS_URL = os.environ.get("CLICKTUNE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's CLICKTUNE_* variables must not leak into the tests."""
    for name in list(os.environ):
        if name.startswith("CLICKTUNE_") and name != "CLICKTUNE_TEST_REDIS_URL":
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_file=log) as embedded:
        yield embedded


@pytest.fixture
def prefix() -> str:
    """A unique topic and key prefix: tests share one broker and one Redis."""
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture
def settings(broker: EmbeddedBroker, prefix: str) -> Settings:
    return Settings.load(
        kafka_bootstrap_servers=broker.bootstrap_servers,
        kafka_enable_idempotence=False,  # tansu has no InitProducerId
        topic_prefix=prefix,
        redis_url=REDIS_URL,
    )


@pytest.fixture
def consumer_settings(settings: Settings, prefix: str) -> Settings:
    return settings.model_copy(
        update={
            "redis_key_prefix": f"{prefix}",
            "consumer_group": f"{prefix}consumer",
            "metrics_port": 0,
            "consumer_poll_timeout_ms": 100,
            "retry_backoff_max_s": 0.5,
        }
    )


@pytest.fixture
def cli_env(settings: Settings) -> dict[str, str]:
    """Environment for running the `clicktune` executable against the test broker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLICKTUNE_")}
    env.update(
        CLICKTUNE_KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
        CLICKTUNE_KAFKA_ENABLE_IDEMPOTENCE="false",
        CLICKTUNE_TOPIC_PREFIX=settings.topic_prefix,
        CLICKTUNE_REDIS_URL=settings.redis_url,
    )
    return env


@pytest.fixture
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:  # the machine runs Redis; its absence is a broken setup
        pytest.fail(f"Redis is not reachable at {REDIS_URL}: {exc}")
    yield client
    await client.aclose()


async def read_topic(
    settings: Settings, spec: TopicSpec, count: int, wait_s: float = 20.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """The first ``count`` records of a topic (no consumer group, nothing committed)."""
    consumer = AIOKafkaConsumer(
        settings.topic(spec),
        **consumer_kwargs(settings, group_id=None, client_suffix="test-reader"),
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        async with asyncio.timeout(wait_s):
            while len(records) < count:
                batches = await consumer.getmany(timeout_ms=200)
                for batch in batches.values():
                    records.extend(batch)
    except TimeoutError:
        pytest.fail(f"{settings.topic(spec)}: got {len(records)} of {count} records")
    finally:
        await consumer.stop()
    return records
