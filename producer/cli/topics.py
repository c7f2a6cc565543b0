"""`clicktune topics`: create clicktune's topics on a broker and exit.

For deployments where the services run with ``CLICKTUNE_CREATE_TOPICS=false`` (no admin
rights): a one-shot job with admin credentials creates the topics with the same names,
partitions and replication factor the services expect.
"""

import asyncio

import typer

from producer.cli.context import settings_from
from producer.topic_admin import ensure_topics
from schemas.topics import ALL_TOPICS


def topics(
    ctx: typer.Context,
    partitions: int | None = typer.Option(
        None, min=1, help="Partitions of the clickstream topic [CLICKTUNE_TOPIC_EVENTS_PARTITIONS]."
    ),
    replication_factor: int | None = typer.Option(
        None, min=1, help="Replication factor [CLICKTUNE_TOPIC_REPLICATION_FACTOR]."
    ),
) -> int:
    """Create the topics that do not exist yet (existing ones are left as they are)."""
    settings = settings_from(
        ctx,
        topic_events_partitions=partitions,
        topic_replication_factor=replication_factor,
    )
    created = set(asyncio.run(ensure_topics(settings)))
    for spec in ALL_TOPICS:
        name = settings.topic(spec)
        if name in created:
            typer.echo(f"{name:<40} created  {settings.topic_partitions(spec)} partitions")
        else:  # its partitions are whatever it was created with
            typer.echo(f"{name:<40} exists")
    return 0
