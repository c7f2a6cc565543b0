"""`clicktune consume`: the long-lived consumer service."""

import asyncio
import signal

import typer

from producer.cli.context import settings_from
from producer.cli.errors import CliError


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
    from consumer.heap import freeze_startup_heap
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
        starting = asyncio.create_task(service.start())

        def stop() -> None:
            service.request_stop()
            starting.cancel()  # start-up retries until its dependencies answer

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        try:
            async with asyncio.timeout(settings.startup_timeout_s or None):
                await starting
        except TimeoutError:
            await service.close()
            why = "; ".join(f"{k}: {v}" for k, v in service.unavailable.items()) or "starting"
            raise CliError(
                f"not started after {settings.startup_timeout_s:g} s "
                f"(CLICKTUNE_STARTUP_TIMEOUT_S): {why}"
            ) from None
        except asyncio.CancelledError:
            await service.close()  # stopped by a signal while starting
            return
        except BaseException:
            await service.close()
            raise
        freeze_startup_heap()  # this process is the consumer's alone
        if service.health is not None:
            typer.echo(
                f"metrics and probes on http://{settings.metrics_host}:"
                f"{service.health.port}/metrics",
                err=True,
            )
        await service.run()

    asyncio.run(main())
    return 0
