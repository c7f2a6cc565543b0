"""Idempotent topic creation, shared by `clicktune broker`, the services and the fixtures."""

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from producer.kafka_config import common_kwargs
from producer.settings import Settings
from schemas.topics import ALL_TOPICS, TopicSpec

log = logging.getLogger(__name__)
_TOPIC_ALREADY_EXISTS = TopicAlreadyExistsError.errno


async def ensure_topics(settings: Settings, specs: tuple[TopicSpec, ...] = ALL_TOPICS) -> list[str]:
    """Create the topics that do not exist yet; return the names created.

    Safe to call concurrently from several processes: "already exists" is success.
    """
    admin = AIOKafkaAdminClient(**common_kwargs(settings, client_suffix="admin"))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                settings.topic(spec),
                num_partitions=settings.topic_partitions(spec),
                replication_factor=settings.topic_replication_factor,
            )
            for spec in specs
            if settings.topic(spec) not in existing
        ]
        if not wanted:
            return []
        try:
            response = await admin.create_topics(wanted)
        except TopicAlreadyExistsError:
            return []
        created = []
        for name, code, message in response.topic_errors:
            if code == 0:
                created.append(name)
            elif code != _TOPIC_ALREADY_EXISTS:
                raise RuntimeError(f"cannot create topic {name}: {message} (error {code})")
        if created:
            log.info("created topics %s", ", ".join(created))
        return created
    finally:
        await admin.close()
