"""`clicktune publish FILE.jsonl`: validate each line, send the good ones, report the rest."""

import asyncio
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from producer.cli.context import settings_from
from producer.event_publisher import DeliveryFuture
from producer.jsonl import Rejected, parse_line, read_lines
from producer.publisher import ClickstreamPublisher
from producer.settings import Settings

_DRAIN_EVERY = 5_000


@dataclass
class PublishReport:
    sent: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.rejected and not self.failed


async def publish_stream(
    settings: Settings,
    stream: BinaryIO,
    *,
    progress: Progress | None = None,
    on_reject: "RejectSink | None" = None,
) -> PublishReport:
    report = PublishReport()
    size = _size(stream)
    task = progress.add_task("publishing", total=size) if progress else None
    pending: list[tuple[int, DeliveryFuture]] = []

    async def drain() -> None:
        results = await asyncio.gather(*(f for _, f in pending), return_exceptions=True)
        for (line, _), result in zip(pending, results, strict=True):
            if isinstance(result, BaseException):
                report.failed.append((line, f"{type(result).__name__}: {result}"))
            else:
                report.sent += 1
        pending.clear()

    async with ClickstreamPublisher(settings) as publisher:
        async for line, raw in read_lines(stream):
            parsed = parse_line(raw, line)
            if isinstance(parsed, Rejected):
                report.rejected.append(parsed)
                if on_reject:
                    on_reject(parsed)
            else:
                pending.append((line, await publisher.send(parsed)))
                if len(pending) >= _DRAIN_EVERY:
                    await drain()
            if progress is not None and task is not None:
                progress.update(
                    task,
                    advance=len(raw),
                    description=f"sent {report.sent + len(pending):,}  "
                    f"rejected {len(report.rejected):,}",
                )
        await publisher.flush()
        await drain()
    return report


def _size(stream: BinaryIO) -> int | None:
    try:
        return Path(stream.name).stat().st_size if stream is not sys.stdin.buffer else None
    except (AttributeError, OSError, TypeError):
        return None


class RejectSink:
    """Prints each rejected line to stderr and optionally keeps it in a JSONL file."""

    def __init__(self, console: Console, path: Path | None) -> None:
        self.console = console
        self.file = path.open("w", encoding="utf-8") if path else None

    def __call__(self, rejected: Rejected) -> None:
        self.console.print(rejected.message(), markup=False, highlight=False)
        if self.file:
            self.file.write(
                json.dumps(
                    {
                        "line": rejected.line,
                        "reason": rejected.reason,
                        "detail": rejected.detail,
                        "text": rejected.text,
                    }
                )
                + "\n"
            )

    def close(self) -> None:
        if self.file:
            self.file.close()


def publish(
    ctx: typer.Context,
    file: str = typer.Argument(..., metavar="FILE.jsonl", help="JSON-lines file, or - for stdin."),
    rejects: Path | None = typer.Option(
        None, "--rejects", dir_okay=False, help="Also write rejected lines (with reasons) here."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> int:
    """Publish clickstream and release events from a JSON-lines file.

    Every line is validated on its own: good lines are sent (keyed by session), bad lines
    are reported with their line number and reason. Exit status 1 if any line was
    rejected or not acknowledged.
    """
    settings = settings_from(ctx)
    if file != "-" and not Path(file).is_file():
        raise typer.BadParameter(f"no such file: {file}", param_hint="FILE.jsonl")
    err = Console(stderr=True, soft_wrap=True)
    sink = RejectSink(err, rejects)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not progress,
        transient=True,
    )
    stream: BinaryIO = sys.stdin.buffer if file == "-" else open(file, "rb")  # noqa: SIM115
    try:
        with bar:
            report = asyncio.run(publish_stream(settings, stream, progress=bar, on_reject=sink))
    finally:
        sink.close()
        if stream is not sys.stdin.buffer:
            stream.close()
    for line, reason in report.failed:
        err.print(f"line {line}: not delivered: {reason}", markup=False, highlight=False)
    typer.echo(f"sent {report.sent}, rejected {len(report.rejected)}, failed {len(report.failed)}")
    return 0 if report.ok else 1
