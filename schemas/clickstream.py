"""Clickstream: what search services publish to ``clickstream.events``.

A *session* is one search (query and ranked results) and what the user did with it: clicks
on results, or marking the whole list irrelevant. Events of one session share its
``session_id`` key, so they land in one partition in order. ``item`` events upsert catalog
text so that searches may carry ids only.
"""

from collections.abc import Sequence
from itertools import repeat
from operator import attrgetter, contains, itemgetter, methodcaller
from typing import Annotated, Any, Literal, NotRequired, Self

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
_ID_ATTR = attrgetter("item_id")
_RANK_ATTR = attrgetter("rank")
_TEXT_ATTR = attrgetter("text")
_TEXT_GET = methodcaller("get", "text")

# Results come in two shapes: plain dicts (pydantic validated a SearchResult TypedDict) and the
# consumer's fast path's msgspec structs, whose absent optional keys read as None (an explicit
# null is refused on the wire). The helpers below take either: they are on the consumer's
# per-event path, so they work column-wise with map/itemgetter/attrgetter, which run in C.


def _is_dicts(results: Sequence[Any]) -> bool:
    return type(results[0]) is dict


def result_ids(results: Sequence[Any]) -> list[str]:
    """The results' ``item_id`` s, in list order."""
    if not results:
        return []
    return list(map(_ID if _is_dicts(results) else _ID_ATTR, results))


def result_ranks(results: Sequence[Any]) -> list[int] | None:
    """The results' ranks in list order; ``None`` when they carry none.

    Raises ``ValueError`` when only some results carry a rank."""
    if not results:
        return None
    if _is_dicts(results):
        if "rank" not in results[0]:
            if any(map(contains, results, repeat("rank"))):
                raise ValueError("either every result has a rank or none has")
            return None
        try:
            return list(map(_RANK, results))
        except KeyError:
            raise ValueError("either every result has a rank or none has") from None
    ranks = list(map(_RANK_ATTR, results))
    if None in ranks:
        if any(r is not None for r in ranks):
            raise ValueError("either every result has a rank or none has")
        return None
    return ranks


def result_text_column(results: Sequence[Any]) -> list[str | None]:
    """The results' texts in list order, None where a result carries none."""
    if not results:
        return []
    if _is_dicts(results):
        return list(map(_TEXT_GET, results))
    return list(map(_TEXT_ATTR, results))


def pair_ranks(ids: list[str], ranks: list[int] | None) -> list[tuple[str, int]]:
    """``(item_id, rank)`` in rank order (list order when ranks were left out)."""
    if ranks is None:
        return list(zip(ids, range(1, len(ids) + 1), strict=True))
    pairs = list(zip(ids, ranks, strict=True))
    pairs.sort(key=itemgetter(1))  # linear when already in order, as usual
    return pairs


def ranked_pairs(results: Sequence[Any]) -> list[tuple[str, int]]:
    """``(item_id, rank)`` in rank order (list order when ranks were left out)."""
    return pair_ranks(result_ids(results), result_ranks(results))


def result_texts(results: Sequence[Any]) -> dict[str, str]:
    """``item_id -> text`` of the results that carry a text."""
    texts = result_text_column(results)
    pairs = zip(result_ids(results), texts, strict=True)
    if None not in texts:
        return dict(pairs)
    return {i: t for i, t in pairs if t is not None}


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
        # Also run by the consumer's fast path on its msgspec struct (see the helpers above).
        results = self.results
        ranks = result_ranks(results)
        if ranks is not None and len(set(ranks)) != len(ranks):
            raise ValueError("result ranks must be unique")
        if len(set(result_ids(results))) != len(results):
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
