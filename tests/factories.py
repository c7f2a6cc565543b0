"""Fresh events for tests: the canonical examples, re-stamped with new ids and times."""

from datetime import UTC, datetime
from typing import Any, TypeVar

from schemas.base import Event
from schemas.examples import example_json

E = TypeVar("E", bound=Event)
_STAMPED = ("created_at", "updated_at")


def fresh(model: type[E], **changes: Any) -> E:
    """``model``'s example with a new ``event_id``, times of now, and ``changes`` applied."""
    data = example_json(model)
    for key in ("type", "schema_version", "event_id", "occurred_at"):
        data.pop(key)
    now = datetime.now(UTC)
    data.update({k: now for k in _STAMPED if k in data})
    data.update(changes)
    return model.create(**data)


def fresh_json(model: type[Event], **changes: Any) -> dict[str, Any]:
    """The wire JSON of :func:`fresh`, with ``changes`` applied *after* validation (so they
    may make it invalid)."""
    import json

    obj = json.loads(fresh(model).model_dump_json(exclude_none=True))
    obj.update(changes)
    return obj
