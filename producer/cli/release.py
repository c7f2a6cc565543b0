"""`clicktune release`: freeze the open (or a named) batch and ask for a fine-tuning task."""

import asyncio
import json
from typing import Any

import typer
from pydantic import ValidationError

from producer.cli.context import settings_from
from producer.cli.errors import describe_fields
from producer.publisher import publish_release
from schemas.release import DEFAULT_METHOD


def _metadata(value: str | None) -> dict[str, Any]:
    if value is None:
        return {}
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not JSON: {exc.msg}", param_hint="--metadata") from None
    if not isinstance(parsed, dict):
        raise typer.BadParameter("must be a JSON object", param_hint="--metadata")
    return parsed


def release(
    ctx: typer.Context,
    method: str = typer.Option(DEFAULT_METHOD, "--method", "-m", help="fine_tuning_method."),
    batch_id: str | None = typer.Option(
        None, "--batch-id", help="Release this batch (default: the open one)."
    ),
    idempotency_key: str | None = typer.Option(
        None, "--idempotency-key", "-k", help="Repeat-safe key: the same key, the same batch."
    ),
    metadata: str | None = typer.Option(None, help="JSON object passed on to the task."),
) -> int:
    """Publish a batch-release event; prints it as JSON."""
    settings = settings_from(ctx)
    meta = _metadata(metadata)
    try:
        event = asyncio.run(
            publish_release(
                settings,
                fine_tuning_method=method,
                batch_id=batch_id,
                metadata=meta,
                idempotency_key=idempotency_key,
            )
        )
    except ValidationError as exc:  # the flags' values break the release contract
        raise typer.BadParameter(describe_fields(exc)) from None
    typer.echo(event.model_dump_json(exclude_none=True))
    return 0
