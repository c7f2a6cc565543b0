"""The `clicktune` command."""

import sys

import typer

from producer.cli.broker import broker
from producer.cli.consume import consume
from producer.cli.context import global_options
from producer.cli.demo import demo
from producer.cli.errors import run_cli
from producer.cli.publish import publish
from producer.cli.release import release
from producer.cli.schemas import schemas
from producer.cli.topics import topics
from producer.cli.train import cancel, status, train
from producer.cli.watch import watch

app = typer.Typer(
    name="clicktune",
    help="Fine-tune search embeddings from Kafka clickstream.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.callback()(global_options)
app.command()(publish)
app.command()(release)
app.command()(watch)
app.command()(broker)
app.command()(topics)
app.command()(consume)
app.command()(schemas)
app.command()(train)
app.command()(status)
app.command()(cancel)
app.command()(demo)


def main(argv: list[str] | None = None) -> None:
    command = typer.main.get_command(app)
    run_cli(
        lambda: command.main(
            args=sys.argv[1:] if argv is None else argv,
            prog_name="clicktune",
            standalone_mode=False,
        )
    )
