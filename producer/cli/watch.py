"""`clicktune watch`: print model-ready or status events as they arrive."""

import asyncio
import contextlib
from enum import StrEnum

import typer
from rich.console import Console

from producer.cli.context import settings_from
from producer.settings import Settings
from producer.subscriber import Subscription, subscribe_model_ready, subscribe_status
from schemas.base import Event
from schemas.model_ready import ModelReadyEvent
from schemas.task import StatusEvent


class WatchTopic(StrEnum):
    MODELS = "models"
    STATUS = "status"


class Format(StrEnum):
    JSON = "json"
    TABLE = "table"


def _row(event: Event) -> str:
    when = event.occurred_at.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(event, ModelReadyEvent):
        base, tuned = event.metrics.baseline, event.metrics.tuned
        deltas = "  ".join(f"{k} {base[k]:.4f}->{tuned[k]:.4f}" for k in sorted(tuned) if k in base)
        return (
            f"{when}  {event.fine_tuning_method:<12} {event.model_name} "
            f"v{event.model_version}  {event.model_uri}  {deltas}"
        )
    if isinstance(event, StatusEvent):
        return (
            f"{when}  {event.task_id:<24} {event.status.value:<10} "
            f"{event.fine_tuning_method:<12} {event.detail}"
        )
    return event.model_dump_json()


async def _watch(
    subscription: Subscription[ModelReadyEvent] | Subscription[StatusEvent],
    fmt: Format,
    max_events: int | None,
    seconds: float | None,
    console: Console,
) -> int:
    seen = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds), subscription as events:
            async for event in events:
                if fmt is Format.JSON:
                    console.print_json(event.model_dump_json(), indent=None)
                else:
                    console.print(_row(event), markup=False, highlight=False)
                seen += 1
                if max_events is not None and seen >= max_events:
                    break
    return seen


def watch(
    ctx: typer.Context,
    topic: WatchTopic = typer.Option(WatchTopic.MODELS, "--topic", "-t", help="What to follow."),
    fmt: Format = typer.Option(Format.JSON, "--format", "-f", help="JSON lines or a table."),
    from_beginning: bool = typer.Option(
        False, "--from-beginning", help="Start at the oldest event, not the next one."
    ),
    group: str | None = typer.Option(
        None, help="Consumer group: commit progress and resume there next time."
    ),
    max_events: int | None = typer.Option(None, "--max-events", "-n", min=1, help="Stop after N."),
    seconds: float | None = typer.Option(None, "--for", min=0.1, help="Stop after this long."),
) -> int:
    """Print events as they arrive (Ctrl-C to stop)."""
    settings: Settings = settings_from(ctx)
    subscription = (
        subscribe_model_ready(settings, group_id=group, from_beginning=from_beginning)
        if topic is WatchTopic.MODELS
        else subscribe_status(settings, group_id=group, from_beginning=from_beginning)
    )
    console = Console(soft_wrap=True)
    if fmt is Format.TABLE:
        header = (
            "time                 method       model  version  uri  metrics"
            if topic is WatchTopic.MODELS
            else "time                 task_id                  status     method"
        )
        console.print(header, style="bold", markup=False, highlight=False)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_watch(subscription, fmt, max_events, seconds, console))
    return 0
