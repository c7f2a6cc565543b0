"""Dead-letter contract: why a message was refused, carried in Kafka headers.

The DLQ record keeps the original key and value byte for byte; these headers say why and
where it came from, so an operator can fix and republish it.
"""

from enum import StrEnum

HEADER_REASON = "clicktune.dlq.reason"
HEADER_DETAIL = "clicktune.dlq.detail"
HEADER_SOURCE_TOPIC = "clicktune.dlq.source_topic"
HEADER_SOURCE_PARTITION = "clicktune.dlq.source_partition"
HEADER_SOURCE_OFFSET = "clicktune.dlq.source_offset"
HEADER_FAILED_AT = "clicktune.dlq.failed_at"
HEADER_ORIGINAL_SIZE = "clicktune.dlq.original_size"

#: Dead letters keep at most this much of the original value, so that a record too large
#: for the dead-letter topic can still be parked there (with its original size in a header).
MAX_DEAD_LETTER_VALUE_BYTES = 512 * 1024

HEADERS = {
    HEADER_REASON: "Reason code (see DeadLetterReason).",
    HEADER_DETAIL: "Human-readable explanation, at most 1 KiB.",
    HEADER_SOURCE_TOPIC: "Topic the message was read from.",
    HEADER_SOURCE_PARTITION: "Partition it was read from (decimal).",
    HEADER_SOURCE_OFFSET: "Offset it was read at (decimal).",
    HEADER_FAILED_AT: "When it was refused (RFC 3339, UTC).",
}
OPTIONAL_HEADERS = {
    HEADER_ORIGINAL_SIZE: "Present when the value was cut to the first "
    f"{MAX_DEAD_LETTER_VALUE_BYTES} bytes: the original size in bytes (decimal).",
}


class DeadLetterReason(StrEnum):
    """Why a message could not be applied. Bounded set: safe as a metric label."""

    EMPTY = "empty"
    OVERSIZE = "oversize"
    UNDECODABLE = "undecodable"
    UNKNOWN_TYPE = "unknown_type"
    UNSUPPORTED_VERSION = "unsupported_version"
    SCHEMA = "schema"
    WRONG_TOPIC = "wrong_topic"
    UNKNOWN_BATCH = "unknown_batch"
