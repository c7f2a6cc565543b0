"""Global options: every setting that matters on the command line, over the environment."""

import logging
from pathlib import Path
from typing import Any

import typer

from producer.settings import SaslMechanism, SecurityProtocol, Settings


def settings_from(ctx: typer.Context, **extra: Any) -> Settings:
    """Settings = environment (and secret files) + global flags + command flags."""
    overrides: dict[str, Any] = dict(ctx.find_root().obj or {})
    overrides.update(extra)
    return Settings.load(**overrides)


def global_options(
    ctx: typer.Context,
    bootstrap_servers: str | None = typer.Option(
        None,
        "--bootstrap-servers",
        "-b",
        help="Kafka host:port list [CLICKTUNE_KAFKA_BOOTSTRAP_SERVERS].",
    ),
    redis_url: str | None = typer.Option(None, help="Redis URL [CLICKTUNE_REDIS_URL]."),
    mlflow_tracking_uri: str | None = typer.Option(
        None, help="MLflow tracking URI [CLICKTUNE_MLFLOW_TRACKING_URI]."
    ),
    topic_prefix: str | None = typer.Option(
        None, help="Topic name prefix [CLICKTUNE_TOPIC_PREFIX]."
    ),
    security_protocol: SecurityProtocol | None = typer.Option(
        None,
        case_sensitive=False,
        help="Kafka security protocol [CLICKTUNE_KAFKA_SECURITY_PROTOCOL].",
    ),
    sasl_mechanism: SaslMechanism | None = typer.Option(
        None, case_sensitive=False, help="SASL mechanism [CLICKTUNE_KAFKA_SASL_MECHANISM]."
    ),
    sasl_username: str | None = typer.Option(
        None, help="SASL user [CLICKTUNE_KAFKA_SASL_USERNAME]."
    ),
    sasl_password_file: Path | None = typer.Option(
        None,
        exists=True,
        dir_okay=False,
        readable=True,
        help="File holding the SASL password (never pass secrets as arguments) "
        "[CLICKTUNE_KAFKA_SASL_PASSWORD].",
    ),
    ssl_cafile: Path | None = typer.Option(None, help="CA bundle [CLICKTUNE_KAFKA_SSL_CAFILE]."),
    ssl_certfile: Path | None = typer.Option(
        None, help="Client certificate [CLICKTUNE_KAFKA_SSL_CERTFILE]."
    ),
    ssl_keyfile: Path | None = typer.Option(None, help="Client key [CLICKTUNE_KAFKA_SSL_KEYFILE]."),
    idempotence: bool | None = typer.Option(
        None,
        "--idempotence/--no-idempotence",
        help="Idempotent producer; off for the embedded broker "
        "[CLICKTUNE_KAFKA_ENABLE_IDEMPOTENCE].",
    ),
    secrets_dir: Path | None = typer.Option(
        None, file_okay=False, help="Directory of secret files [CLICKTUNE_SECRETS_DIR]."
    ),
    verbose: int = typer.Option(
        0, "--verbose", "-v", count=True, help="More logging (-vv: debug)."
    ),
) -> None:
    """Global flags override CLICKTUNE_* environment variables."""
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        # aiokafka logs each failed connection attempt; the CLI reports the outcome itself.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    password = (
        sasl_password_file.read_text(encoding="utf-8").strip() if sasl_password_file else None
    )
    ctx.obj = {
        "kafka_bootstrap_servers": bootstrap_servers,
        "redis_url": redis_url,
        "mlflow_tracking_uri": mlflow_tracking_uri,
        "topic_prefix": topic_prefix,
        "kafka_security_protocol": security_protocol,
        "kafka_sasl_mechanism": sasl_mechanism,
        "kafka_sasl_username": sasl_username,
        "kafka_sasl_password": password,
        "kafka_ssl_cafile": ssl_cafile,
        "kafka_ssl_certfile": ssl_certfile,
        "kafka_ssl_keyfile": ssl_keyfile,
        "kafka_enable_idempotence": idempotence,
        "secrets_dir": secrets_dir,
    }
