"""Redis connections built from :class:`Settings`: credentials and TLS come from settings
(environment or secret files), never from code, and every clicktune process connects the
same way.

The least a clicktune Redis user needs (an ACL user limited to the deployment's key prefix,
see :func:`acl_rules`): the consumer's apply script and its commands, the trainer's reads
and task updates, and ``clicktune status``/``cancel``.
"""

from typing import Any

import redis.asyncio as aioredis

from producer.settings import Settings

#: Commands clicktune sends or runs inside its scripts (ACL syntax, lower case).
REQUIRED_COMMANDS = (
    # AUTH is always allowed; redis-py's CLIENT SETINFO may be refused (it ignores that).
    "ping",
    # the apply scripts: loaded once, then run by their sha1
    "evalsha",
    "script|load",
    "script|exists",
    # what the scripts and the services call
    "get",
    "set",
    "del",
    "exists",
    "expire",
    "incr",
    "hget",
    "hmget",
    "hset",
    "hdel",
    "hgetall",
    "hincrby",
    "sadd",
    "smembers",
    "rpush",
    "lrange",
    "lrem",
    "zadd",
    "zrevrange",
)


def acl_rules(prefix: str) -> list[str]:
    """ACL rules for a clicktune user: only the commands above, only keys under ``prefix``
    (``ACL SETUSER clicktune on >PASSWORD`` followed by these)."""
    return ["resetkeys", f"~{prefix}*", "resetchannels", "-@all"] + [
        f"+{command}" for command in REQUIRED_COMMANDS
    ]


def redis_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of ``redis.asyncio.from_url`` for ``settings.redis_url``."""
    kwargs: dict[str, Any] = {}
    if settings.redis_username is not None:
        kwargs["username"] = settings.redis_username
    if settings.redis_password is not None:
        kwargs["password"] = settings.redis_password.get_secret_value()
    if settings.redis_url.startswith("rediss://"):
        kwargs["ssl_check_hostname"] = settings.redis_ssl_check_hostname
        if settings.redis_ssl_ca_file is not None:
            kwargs["ssl_ca_certs"] = str(settings.redis_ssl_ca_file)
        if settings.redis_ssl_certfile is not None:
            kwargs["ssl_certfile"] = str(settings.redis_ssl_certfile)
            kwargs["ssl_keyfile"] = str(settings.redis_ssl_keyfile)
        if settings.redis_ssl_key_password is not None:
            kwargs["ssl_password"] = settings.redis_ssl_key_password.get_secret_value()
    return kwargs


def connect_redis(settings: Settings, **options: Any) -> aioredis.Redis:
    """A client for the configured Redis (connections open lazily); ``options`` are further
    ``from_url`` arguments such as timeouts."""
    return aioredis.from_url(settings.redis_url, **redis_kwargs(settings), **options)
