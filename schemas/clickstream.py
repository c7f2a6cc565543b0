"""Clickstream: what search services publish to ``clickstream.events``.

A *session* is one search (query and ranked results) and what the user did with it: clicks
on results, or marking the whole list irrelevant. Events of one session share its
``session_id`` key, so they land in one partition in order. ``item`` events upsert catalog
text so that searches may carry ids only.
"""

from itertools import repeat
from operator import contains, itemgetter
from typing import Annotated, Literal, NotRequired, Self

from pydantic import ConfigDict, Field, model_validator, with_config
from typing_extensions import TypedDict  # pydantic needs this one on Python 3.11

from schemas.base import Event
from schemas.fields import Id, Meta
from schemas.limits import MAX_QUERY_LENGTH, MAX_RANK, MAX_RESULTS, MAX_TEXT_LENGTH

ItemText = Annotated[
    str,
    Field(min_length=1, max_length=MAX_TEXT_LENGTH, description="Text the model embeds."),
]


_ID = itemgetter("item_id")
_RANK = itemgetter("rank")
_ID_RANK = itemgetter("item_id", "rank")
_ID_TEXT = itemgetter("item_id", "text")


def ranked_pairs(results: list["SearchResult"]) -> list[tuple[str, int]]:
    """``(item_id, rank)`` in rank order (list order when ranks were left out)."""
    if results and "rank" in results[0]:
        # map + itemgetter run in C: this is on the consumer's per-event path.
        pairs: list[tuple[str, int]] = list(map(_ID_RANK, results))
        pairs.sort(key=itemgetter(1))  # linear when already in order, as usual
        return pairs
    return list(zip(map(_ID, results), range(1, len(results) + 1), strict=True))


def result_texts(results: list["SearchResult"]) -> dict[str, str]:
    """``item_id -> text`` of the results that carry a text."""
    try:
        return dict(map(_ID_TEXT, results))
    except KeyError:  # some results carry no text
        return {r["item_id"]: r["text"] for r in results if "text" in r}


# A TypedDict, not a model: a search carries up to 200 results, and validating plain dicts
# is about three times faster (137 -> 42 us per 30-result search), most of the consumer's
# decoding time.
@with_config(ConfigDict(strict=True, extra="forbid", allow_inf_nan=False))
class SearchResult(TypedDict):
    """One shown result. ``rank`` is 1-based; leave it out to mean list order."""

    item_id: Id
    rank: NotRequired[
        Annotated[
            int, Field(ge=1, le=MAX_RANK, description=f"1-based position shown, <= {MAX_RANK}.")
        ]
    ]
    text: NotRequired[ItemText]
    meta: NotRequired[Meta]


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
        results = self.results
        # map/itemgetter/set run in C; this validator runs for every search the consumer reads.
        if results and "rank" in results[0]:
            try:
                ranks = list(map(_RANK, results))
            except KeyError:
                raise ValueError("either every result has a rank or none has") from None
            if len(set(ranks)) != len(ranks):
                raise ValueError("result ranks must be unique")
        elif any(map(contains, results, repeat("rank"))):
            raise ValueError("either every result has a rank or none has")
        if len(set(map(_ID, results))) != len(results):
            raise ValueError("an item_id appears twice in results")
        return self

    def ranked_pairs(self) -> list[tuple[str, int]]:
        """``(item_id, rank)`` in rank order (list order when ranks were left out)."""
        return ranked_pairs(self.results)

    def texts(self) -> dict[str, str]:
        """``item_id -> text`` of the results that carry a text."""
        return result_texts(self.results)

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
