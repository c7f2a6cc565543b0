"""`clicktune topics`: the one-shot topic job of the deployments (compose, Kubernetes)."""

from aiokafka.admin import AIOKafkaAdminClient

from producer.kafka_config import common_kwargs
from producer.settings import Settings
from schemas.topics import ALL_TOPICS, CLICKSTREAM
from tests.producer.test_cli import run


async def test_topics_creates_missing_topics_once(
    settings: Settings, cli_env: dict[str, str]
) -> None:
    first = run(["topics", "--partitions", "2"], cli_env)
    assert first.returncode == 0, first.stderr
    names = [settings.topic(spec) for spec in ALL_TOPICS]
    lines = first.stdout.splitlines()
    assert [line.split()[0] for line in lines] == names
    assert all(line.split()[1] == "created" for line in lines), first.stdout

    admin = AIOKafkaAdminClient(**common_kwargs(settings, client_suffix="test-admin"))
    await admin.start()
    try:
        [described] = await admin.describe_topics([settings.topic(CLICKSTREAM)])
    finally:
        await admin.close()
    assert len(described["partitions"]) == 2

    again = run(["topics"], cli_env)
    assert again.returncode == 0, again.stderr
    assert all(line.split()[1] == "exists" for line in again.stdout.splitlines()), again.stdout
