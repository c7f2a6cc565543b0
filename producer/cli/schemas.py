"""`clicktune schemas`: write (or check) the JSON Schema and AsyncAPI files."""

from pathlib import Path

import typer

from schemas import spec


def schemas(
    out: Path = typer.Option(
        spec.PACKAGE_DIR, "--out", "-o", file_okay=False, help="Where to write them."
    ),
    check: bool = typer.Option(
        False, "--check", help="Write nothing; exit 1 if the files differ from the models."
    ),
) -> int:
    """Generate JSON Schema for every message and the AsyncAPI 3.0 document."""
    if check:
        stale = spec.drift(out)
        if stale:
            typer.echo(f"out of date: {', '.join(stale)} (run 'clicktune schemas')", err=True)
            return 1
        typer.echo("schemas are up to date")
        return 0
    for path in spec.write(out):
        typer.echo(str(path))
    return 0
