"""`clicktune consume`: the long-lived consumer service."""

import asyncio
import signal

import typer

from producer.cli.context import settings_from


def consume(
    ctx: typer.Context,
    group: str | None = typer.Option(None, help="Consumer group [CLICKTUNE_CONSUMER_GROUP]."),
    key_prefix: str | None = typer.Option(
        None, help="Redis key prefix [CLICKTUNE_REDIS_KEY_PREFIX]."
    ),
    metrics_host: str | None = typer.Option(
        None, help="Metrics/health address [CLICKTUNE_METRICS_HOST]."
    ),
    metrics_port: int | None = typer.Option(
        None, min=0, max=65535, help="Metrics/health port [CLICKTUNE_METRICS_PORT]."
    ),
) -> int:
    """Read clickstream and releases into Redis session batches until SIGTERM or Ctrl-C."""
    from consumer.service import ClickstreamConsumer

    settings = settings_from(
        ctx,
        consumer_group=group,
        redis_key_prefix=key_prefix,
        metrics_host=metrics_host,
        metrics_port=metrics_port,
    )

    async def main() -> None:
        service = ClickstreamConsumer(settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, service.request_stop)
        await service.start()
        if service.health is not None:
            typer.echo(
                f"metrics and probes on http://{settings.metrics_host}:"
                f"{service.health.port}/metrics",
                err=True,
            )
        await service.run()

    asyncio.run(main())
    return 0
