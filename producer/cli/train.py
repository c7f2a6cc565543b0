"""`clicktune train`, `clicktune status`, `clicktune cancel`."""

import asyncio
import json
from pathlib import Path

import typer

from producer.cli.context import settings_from
from producer.cli.errors import CliError


def train(
    ctx: typer.Context,
    base_model: str | None = typer.Option(None, help="[CLICKTUNE_BASE_MODEL]"),
    max_evals: int | None = typer.Option(None, min=1, help="[CLICKTUNE_MAX_EVALS]"),
    epochs: int | None = typer.Option(None, min=1, help="[CLICKTUNE_EPOCHS]"),
    top_n_params: int | None = typer.Option(None, min=1, help="[CLICKTUNE_TOP_N_PARAMS]"),
    min_improvement: float | None = typer.Option(None, min=0, help="[CLICKTUNE_MIN_IMPROVEMENT]"),
    device: str | None = typer.Option(None, help="auto, cpu or cuda [CLICKTUNE_DEVICE]"),
    batch_size: int | None = typer.Option(None, min=2, help="[CLICKTUNE_TRAIN_BATCH_SIZE]"),
    max_seq_length: int | None = typer.Option(None, min=8, help="[CLICKTUNE_MAX_SEQ_LENGTH]"),
    params_grid: Path | None = typer.Option(
        None, exists=True, dir_okay=False, help="JSON grid [CLICKTUNE_PARAMS_GRID_FILE]"
    ),
    max_tasks: int | None = typer.Option(None, min=1, help="Exit after this many tasks."),
) -> int:
    """Run a trainer worker: fine-tune on each released batch until SIGTERM or Ctrl-C."""
    settings = settings_from(
        ctx,
        base_model=base_model,
        max_evals=max_evals,
        epochs=epochs,
        top_n_params=top_n_params,
        min_improvement=min_improvement,
        device=device,
        train_batch_size=batch_size,
        max_seq_length=max_seq_length,
        params_grid_file=params_grid,
    )
    from trainer.params import load_grid
    from trainer.worker import main

    try:
        load_grid(settings.params_grid_file)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--params-grid") from None
    asyncio.run(main(settings, max_tasks=max_tasks))
    return 0


async def _task_store(ctx: typer.Context):
    from consumer.tasks import TaskStore
    from producer.redis_client import connect_redis

    settings = settings_from(ctx)
    client = connect_redis(settings, socket_connect_timeout=5, socket_timeout=10)
    return settings, client, TaskStore(client, settings.redis_key_prefix)


def status(
    ctx: typer.Context,
    task_id: str | None = typer.Argument(None, help="A task id; omit to list recent tasks."),
    as_json: bool = typer.Option(False, "--json", help="JSON output."),
) -> int:
    """Show a task (or the 20 most recent)."""

    async def run() -> list:
        _, client, store = await _task_store(ctx)
        try:
            if task_id is None:
                return await store.recent()
            record = await store.get(task_id)
            if record is None:
                raise CliError(f"no task {task_id}")
            return [record]
        finally:
            await client.aclose()

    for record in asyncio.run(run()):
        event = record.status_event()
        if as_json:
            typer.echo(
                json.dumps(
                    {**json.loads(event.model_dump_json()), "session_count": record.session_count}
                )
            )
        else:
            typer.echo(
                f"{record.task_id:<20} {record.status.value:<10} "
                f"{record.session_count:>7} sessions  updated "
                f"{record.updated_at:%Y-%m-%d %H:%M:%S}  {record.detail}"
            )
    return 0


def cancel(
    ctx: typer.Context, task_id: str = typer.Argument(..., help="The task to cancel.")
) -> int:
    """Cancel a task: a running search stops at its next trial boundary."""
    from producer.event_publisher import EventPublisher
    from schemas.task import TaskStatus

    async def run() -> None:
        settings, client, store = await _task_store(ctx)
        try:
            record = await store.get(task_id)
            if record is None:
                raise CliError(f"no task {task_id}")
            if record.status.is_final:
                raise CliError(f"task {task_id} is already {record.status.value}")
            record = await store.set_status(task_id, TaskStatus.CANCELED, "canceled by user")
            async with EventPublisher(settings) as publisher:
                await publisher.publish(record.status_event())
        finally:
            await client.aclose()

    asyncio.run(run())
    typer.echo(f"task {task_id} canceled")
    return 0
