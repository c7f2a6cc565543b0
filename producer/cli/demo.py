"""`clicktune demo`."""

import asyncio

import typer
from rich.console import Console

from producer.cli.context import settings_from
from producer.cli.errors import CliError


def demo(
    ctx: typer.Context,
    sessions: int = typer.Option(800, min=50, max=100_000, help="Simulated search sessions."),
    max_evals: int = typer.Option(3, min=1, help="Hyperopt trials."),
    epochs: int = typer.Option(1, min=1, help="Epochs per trial."),
    keep_running: bool = typer.Option(False, help="Leave the services up afterwards."),
) -> int:
    """Run the whole loop on embedded defaults: broker, consumer, trainer, clicks, a model."""
    from producer.demo import DemoError, run_demo

    settings = settings_from(ctx, max_evals=max_evals, epochs=epochs)
    try:
        return asyncio.run(
            run_demo(settings, sessions=sessions, keep_running=keep_running, console=Console())
        )
    except DemoError as exc:
        raise CliError(str(exc)) from None
    except (KeyboardInterrupt, asyncio.CancelledError):
        typer.echo("demo stopped; services shut down", err=True)
        return 130
