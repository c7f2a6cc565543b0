"""Turning failures into one-line messages: a CLI user never sees a traceback."""

import os
import sys
from collections.abc import Callable
from typing import NoReturn

import click
from aiokafka.errors import KafkaConnectionError, KafkaError
from pydantic import ValidationError
from redis import exceptions as redis_errors

from producer.broker import BrokerError

EXIT_FAILED = 1
EXIT_USAGE = 2


class CliError(Exception):
    """An expected failure with a message for the user."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def describe_fields(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(p) for p in err["loc"]) or exc.title
        parts.append(f"{field}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def describe(exc: BaseException) -> str:
    """One line that says what went wrong, for any exception."""
    if isinstance(exc, ValidationError):
        return "invalid settings: " + describe_fields(exc)
    if isinstance(exc, KafkaConnectionError):
        return f"cannot reach Kafka: {exc}"
    if isinstance(exc, KafkaError):
        return f"Kafka error: {exc}"
    if isinstance(exc, BrokerError):
        return f"embedded broker: {exc}"
    if isinstance(exc, redis_errors.AuthenticationError):
        return f"Redis refused the credentials (CLICKTUNE_REDIS_USERNAME/PASSWORD): {exc}"
    if isinstance(exc, redis_errors.NoPermissionError):
        return f"the Redis user lacks a permission (ACL): {exc}"
    if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError):
        return f"cannot reach Redis: {exc}"
    if isinstance(exc, redis_errors.RedisError):
        return f"Redis error: {exc}"
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def fail(message: str, code: int) -> NoReturn:
    prog = os.path.basename(sys.argv[0]) or "clicktune"
    click.echo(f"{prog}: error: {' '.join(message.split())}", err=True)
    sys.exit(code)


def run_cli(main: Callable[[], object]) -> NoReturn:
    """Run a click command in non-standalone mode and map every outcome to an exit code."""
    try:
        result = main()
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        fail("aborted", 130)
    except click.exceptions.NoArgsIsHelpError as exc:  # `clicktune` alone: the help is the answer
        shown = exc.format_message()  # typer's rich help has printed itself already
        if shown.strip():
            click.echo(shown, err=True)
        sys.exit(EXIT_USAGE)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        fail(exc.format_message() + hint, EXIT_USAGE)
    except click.ClickException as exc:
        fail(exc.format_message(), exc.exit_code)
    except CliError as exc:
        fail(str(exc), exc.code)
    except ValidationError as exc:
        fail(describe(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except (KafkaError, BrokerError, OSError, redis_errors.RedisError) as exc:
        fail(describe(exc), EXIT_FAILED)
    except Exception as exc:
        if os.environ.get("CLICKTUNE_DEBUG"):
            raise
        fail(describe(exc) + " (set CLICKTUNE_DEBUG=1 for a traceback)", EXIT_FAILED)
    sys.exit(result if isinstance(result, int) else 0)
