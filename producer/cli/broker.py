"""`clicktune broker`: the embedded Kafka-compatible broker, with clicktune's topics."""

import asyncio
import signal
import threading

import typer

from producer.broker import EmbeddedBroker
from producer.cli.context import settings_from
from producer.topic_admin import ensure_topics


def broker(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback by default)."),
    port: int = typer.Option(9092, min=1, max=65535, help="Port to listen on."),
    create_topics: bool = typer.Option(
        True, "--create-topics/--no-create-topics", help="Create clicktune's topics."
    ),
) -> int:
    """Run tansu (memory storage) until Ctrl-C. For demos and tests; not for production."""
    embedded = EmbeddedBroker(host, port)
    settings = settings_from(ctx, kafka_bootstrap_servers=embedded.bootstrap_servers)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with embedded:
        if create_topics:
            asyncio.run(ensure_topics(settings))
            names = ", ".join(
                f"{name} ({settings.topic_partitions(spec)})"
                for spec, name in ((s, settings.topic(s)) for s in _specs())
            )
            typer.echo(f"topics: {names}")
        typer.echo(
            f"embedded broker (tansu, memory storage) on {embedded.bootstrap_servers}\n"
            f"  export CLICKTUNE_KAFKA_BOOTSTRAP_SERVERS={embedded.bootstrap_servers}\n"
            "  export CLICKTUNE_KAFKA_ENABLE_IDEMPOTENCE=false\n"
            "Ctrl-C stops it (everything it holds is lost)."
        )
        while not stop.wait(0.5):
            if not embedded.running():
                typer.echo("clicktune: error: the broker exited unexpectedly", err=True)
                return 1
    typer.echo("broker stopped")
    return 0


def _specs():
    from schemas.topics import ALL_TOPICS

    return ALL_TOPICS
