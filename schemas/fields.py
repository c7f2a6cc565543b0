"""Annotated field types reused across the event contracts."""

import math
import time
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, Field, JsonValue, ValidationInfo

from schemas.limits import (
    MAX_CLOCK_SKEW,
    MAX_EVENT_AGE,
    MAX_ID_LENGTH,
    MAX_META_DEPTH,
    MAX_META_KEY_LENGTH,
    MAX_META_KEYS,
    METHOD_PATTERN,
)

# No ASCII or C1 control characters, no Unicode line or paragraph separators and no bidi
# embedding/override/isolate controls: ids end up in Redis keys, logs and terminals, where
# these split lines or reorder what an operator reads ("Trojan Source").
_ID_PATTERN = r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]+$"

Id = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_ID_LENGTH,
        pattern=_ID_PATTERN,
        description=f"Non-empty identifier, at most {MAX_ID_LENGTH} characters, "
        "no control characters, line separators or bidi controls.",
    ),
]

MethodName = Annotated[
    str,
    Field(
        pattern=METHOD_PATTERN,
        description="Fine-tuning method: letters, digits, '_', '.', '-'; at most 64 characters.",
    ),
]


def _check_meta(value: dict[str, Any]) -> dict[str, Any]:
    def walk(node: Any, depth: int) -> None:
        if depth > MAX_META_DEPTH:
            raise ValueError(f"meta is nested deeper than {MAX_META_DEPTH} levels")
        if isinstance(node, float) and not math.isfinite(node):
            raise ValueError("meta numbers must be finite (no NaN or Infinity)")
        if isinstance(node, dict):
            if len(node) > MAX_META_KEYS:
                raise ValueError(f"meta object has {len(node)} keys, at most {MAX_META_KEYS}")
            for key, child in node.items():
                if len(key) > MAX_META_KEY_LENGTH:
                    raise ValueError(f"meta key longer than {MAX_META_KEY_LENGTH} characters")
                walk(child, depth + 1)
        elif isinstance(node, list):
            if len(node) > MAX_META_KEYS:
                raise ValueError(f"meta list has {len(node)} items, at most {MAX_META_KEYS}")
            for child in node:
                walk(child, depth + 1)

    walk(value, 1)
    return value


Meta = Annotated[
    dict[str, JsonValue],
    AfterValidator(_check_meta),
    Field(
        description=f"Free-form JSON object: at most {MAX_META_KEYS} keys per level, "
        f"{MAX_META_DEPTH} levels deep, finite numbers only."
    ),
]


def utc_now() -> datetime:
    return datetime.now(UTC)


_PAST_S = MAX_EVENT_AGE.total_seconds()
_FUTURE_S = MAX_CLOCK_SKEW.total_seconds()


def _check_timestamp(value: datetime, info: ValidationInfo) -> datetime:
    # Runs for every event the consumer reads: float arithmetic, not datetime objects.
    # Validation context may carry "now" so replays and tests validate against a fixed clock.
    now = info.context.get("now") if info.context else None
    now_s = now.timestamp() if now is not None else time.time()
    at = value.timestamp()
    if at < now_s - _PAST_S:
        raise ValueError(
            f"timestamp {value.isoformat()} is more than {MAX_EVENT_AGE.days} days in the past"
        )
    if at > now_s + _FUTURE_S:
        raise ValueError(
            f"timestamp {value.isoformat()} is more than {int(_FUTURE_S)} s in the future"
        )
    return value if value.tzinfo is UTC else value.astimezone(UTC)


Timestamp = Annotated[
    AwareDatetime,
    AfterValidator(_check_timestamp),
    Field(
        description="RFC 3339 date-time with an offset; normalised to UTC. Must lie within "
        f"{MAX_EVENT_AGE.days} days before and {int(MAX_CLOCK_SKEW.total_seconds())} s after "
        "the validating clock."
    ),
]
