"""Clickstream: what search services publish to ``clickstream.events``.

A *session* is one search (query and ranked results) and what the user did with it: clicks
on results, or marking the whole list irrelevant. Events of one session share its
``session_id`` key, so they land in one partition in order. ``item`` events upsert catalog
text so that searches may carry ids only.
"""

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.base import Event
from schemas.fields import Id, Meta
from schemas.limits import MAX_QUERY_LENGTH, MAX_RESULTS, MAX_TEXT_LENGTH

ItemText = Annotated[
    str,
    Field(min_length=1, max_length=MAX_TEXT_LENGTH, description="Text the model embeds."),
]


class SearchResult(BaseModel):
    """One shown result. ``rank`` is 1-based; leave it out to mean list order."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)

    item_id: Id
    rank: int | None = Field(default=None, ge=1, description="1-based position shown.")
    text: ItemText | None = None
    meta: Meta | None = None


class SearchEvent(Event):
    """A query and the ranked results shown for it. Opens the session."""

    event_type = "search"
    type: Literal["search"]
    session_id: Id
    user_id: Id | None = None
    query: str = Field(min_length=1, max_length=MAX_QUERY_LENGTH)
    results: list[SearchResult] = Field(max_length=MAX_RESULTS)
    meta: Meta | None = None

    @model_validator(mode="after")
    def _ranks_and_items_unique(self) -> Self:
        if not self.query.strip():
            raise ValueError("query is blank")
        ranks = [r.rank for r in self.results]
        given = [r for r in ranks if r is not None]
        if given and len(given) != len(ranks):
            raise ValueError("either every result has a rank or none has")
        if len(set(given)) != len(given):
            raise ValueError("result ranks must be unique")
        ids = [r.item_id for r in self.results]
        if len(set(ids)) != len(ids):
            raise ValueError("an item_id appears twice in results")
        return self

    def ranked_results(self) -> list[tuple[int, SearchResult]]:
        """Results with their effective rank (list order when ranks were left out)."""
        return sorted(
            ((r.rank if r.rank is not None else i, r) for i, r in enumerate(self.results, 1)),
            key=lambda pair: pair[0],
        )

    def kafka_key(self) -> str:
        return self.session_id


class ClickEvent(Event):
    """The user opened one result of the session's search."""

    event_type = "click"
    type: Literal["click"]
    session_id: Id
    item_id: Id
    meta: Meta | None = None

    def kafka_key(self) -> str:
        return self.session_id


class IrrelevantEvent(Event):
    """The user marked the session's whole result list as irrelevant."""

    event_type = "irrelevant"
    type: Literal["irrelevant"]
    session_id: Id
    meta: Meta | None = None

    def kafka_key(self) -> str:
        return self.session_id


class ItemEvent(Event):
    """Upserts one catalog item's text (keyed by ``item_id``)."""

    event_type = "item"
    type: Literal["item"]
    item_id: Id
    text: ItemText
    meta: Meta | None = None

    def kafka_key(self) -> str:
        return self.item_id


ClickstreamEvent = Annotated[
    SearchEvent | ClickEvent | IrrelevantEvent | ItemEvent, Field(discriminator="type")
]
