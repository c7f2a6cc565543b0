"""Validation limits shared by every event contract.

They bound what one message can cost the consumer (Redis memory, CPU) and are part of the
published contract: the JSON Schema and AsyncAPI documents carry them as ``maxLength`` /
``maxItems`` so producers can check before sending.
"""

from datetime import timedelta

#: Largest encoded message accepted on any topic (Kafka's default ``max.message.bytes``).
MAX_MESSAGE_BYTES = 1_048_576
#: Identifiers: session, user, item, event, batch and task ids, idempotency keys.
MAX_ID_LENGTH = 256
#: Search query text, in characters.
MAX_QUERY_LENGTH = 1_024
#: Item (document) text, in characters. Models truncate long before this.
MAX_TEXT_LENGTH = 8_192
#: Ranked results shown for one search.
MAX_RESULTS = 200
#: Highest 1-based rank a result may claim (deep pages included). Unbounded integers would
#: reach the trainer's position weights (rank ** -eta), where 10**400 overflows a float.
MAX_RANK = 10_000
#: Free-form ``meta``/``metadata`` objects: keys per object, nesting depth, key length.
MAX_META_KEYS = 64
MAX_META_DEPTH = 4
MAX_META_KEY_LENGTH = 128
#: Human-readable ``detail`` of a task status.
MAX_DETAIL_LENGTH = 4_096
#: ``fine_tuning_method`` names end up in Redis keys and MLflow model names.
METHOD_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
#: How far an event time may lie from the validating clock. Clickstream is often replayed
#: from logs, so the past window is wide; the future window only absorbs clock skew.
MAX_EVENT_AGE = timedelta(days=366)
MAX_CLOCK_SKEW = timedelta(hours=1)
