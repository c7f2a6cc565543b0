"""The envelope every clicktune message shares."""

import uuid
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field

from schemas.fields import Id, Timestamp, utc_now

SCHEMA_VERSION = 1


class Event(BaseModel):
    """Base of every message: one JSON object per Kafka record.

    Every envelope field is required, in Python as on the wire, so the model *is* the
    contract. The consumer's exactly-once effect deduplicates by ``event_id``: a producer that
    retries must resend the same id. :meth:`create` fills the envelope for Python callers.
    """

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
    )

    #: Value of the ``type`` discriminator; set by each subclass.
    event_type: ClassVar[str]

    # Narrowed to a Literal by each subclass; declared here so `type` is serialised first.
    type: str = Field(description="Message type: the discriminator.")
    # An integer bounded to 1, not Literal[1]: pydantic's literal matches true and 1.0 too
    # (True == 1), even in strict mode, so those were accepted against the published const.
    schema_version: int = Field(
        ge=SCHEMA_VERSION,
        le=SCHEMA_VERSION,
        json_schema_extra={"const": SCHEMA_VERSION},
        description="Contract version of this message.",
    )
    event_id: Id = Field(description="Client-made unique id; replays reuse it.")
    occurred_at: Timestamp = Field(description="When the event happened (UTC).")

    @classmethod
    def create(cls, **fields: Any) -> Self:
        """Build an event, filling ``type``, ``schema_version``, and (when not given)
        a fresh ``event_id`` and ``occurred_at`` = now."""
        fields["type"] = cls.event_type
        fields.setdefault("schema_version", SCHEMA_VERSION)
        fields.setdefault("event_id", uuid.uuid4().hex)
        fields.setdefault("occurred_at", utc_now())
        return cls(**fields)

    def kafka_key(self) -> str:
        """The record key that keeps related events in one partition, in order."""
        raise NotImplementedError
