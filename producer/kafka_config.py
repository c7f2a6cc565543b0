"""aiokafka client arguments built from :class:`Settings` (security included)."""

import ssl
from typing import Any

from aiokafka.helpers import create_ssl_context

from producer.settings import SecurityProtocol, Settings


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.kafka_security_protocol not in (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL):
        return None
    secret = settings.kafka_ssl_key_password

    def password() -> str:
        # Only asked for an encrypted key. Without this callback OpenSSL would prompt on the
        # terminal (and block a service started from one).
        if secret is None:
            raise ValueError(
                f"{settings.kafka_ssl_keyfile} is encrypted: set CLICKTUNE_KAFKA_SSL_KEY_PASSWORD"
            )
        return secret.get_secret_value()

    context = create_ssl_context(
        cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
        certfile=str(settings.kafka_ssl_certfile) if settings.kafka_ssl_certfile else None,
        keyfile=str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
        password=password,
    )
    context.check_hostname = settings.kafka_ssl_check_hostname
    return context


def common_kwargs(settings: Settings, *, client_suffix: str) -> dict[str, Any]:
    """Arguments every aiokafka client (producer, consumer, admin) shares."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "client_id": f"{settings.kafka_client_id}-{client_suffix}",
        "security_protocol": settings.kafka_security_protocol.value,
        "request_timeout_ms": settings.kafka_request_timeout_ms,
    }
    context = ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    sasl = settings.kafka_security_protocol in (
        SecurityProtocol.SASL_PLAINTEXT,
        SecurityProtocol.SASL_SSL,
    )
    # A mechanism left set with PLAINTEXT or SSL means nothing (and has no password checked).
    if sasl and settings.kafka_sasl_mechanism is not None:
        assert settings.kafka_sasl_password is not None  # checked by Settings
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism.value
        kwargs["sasl_plain_username"] = settings.kafka_sasl_username
        kwargs["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return kwargs


def producer_kwargs(settings: Settings, *, client_suffix: str = "producer") -> dict[str, Any]:
    kwargs = common_kwargs(settings, client_suffix=client_suffix)
    compression = settings.kafka_compression.value
    kwargs.update(
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        compression_type=None if compression == "none" else compression,
        linger_ms=settings.kafka_linger_ms,
        max_batch_size=settings.kafka_max_batch_bytes,
    )
    return kwargs


def consumer_kwargs(
    settings: Settings,
    *,
    group_id: str | None,
    client_suffix: str = "consumer",
    from_beginning: bool = True,
) -> dict[str, Any]:
    kwargs = common_kwargs(settings, client_suffix=client_suffix)
    kwargs.update(
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        isolation_level="read_committed",
    )
    return kwargs
