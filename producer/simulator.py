"""A clickstream simulator: a product catalog, queries with a hidden relevance, and users who
click with position bias and noise.

It drives the demo and the benchmarks, and you can point it at your own catalog for a dry run:

    sim = ClickSimulator(catalog, judgments, rank=my_ranker, seed=7)
    for events in sim.sessions(1000): ...

``judgments`` maps a query to graded relevance ``{item_id: grade}`` (0 irrelevant .. 3 exact);
unjudged items count as grade 0 with a small click probability. ``rank(query) -> [item_id]``
is the search engine being observed (the demo uses the base embedding model, so the
clickstream carries exactly the base model's mistakes).
"""

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from schemas.base import Event
from schemas.clickstream import ClickEvent, IrrelevantEvent, ItemEvent, SearchEvent

Ranker = Callable[[str], Sequence[str]]


@dataclass(frozen=True)
class ClickModel:
    """Examination P(seen | rank) = rank^-eta; P(click | seen, grade) = click[grade]."""

    eta: float = 0.8
    click: tuple[float, float, float, float] = (0.03, 0.15, 0.45, 0.85)
    irrelevant_if_no_good_result: float = 0.3  # chance a user flags a list with no grade >= 2

    def examined(self, rank: int) -> float:
        return rank**-self.eta

    def p_click(self, grade: int) -> float:
        return self.click[max(0, min(grade, 3))]


class ClickSimulator:
    def __init__(
        self,
        catalog: dict[str, str],
        judgments: dict[str, dict[str, int]],
        rank: Ranker,
        *,
        click_model: ClickModel | None = None,
        shown: int = 20,
        seed: int = 0,
        start: datetime | None = None,
    ) -> None:
        self.catalog = catalog
        self.judgments = judgments
        self.rank = rank
        self.model = click_model or ClickModel()
        self.shown = shown
        self.rng = random.Random(seed)
        self.start = start or datetime.now(UTC) - timedelta(hours=2)
        self._ranked: dict[str, list[str]] = {}

    def items(self) -> Iterator[ItemEvent]:
        for item_id, text in self.catalog.items():
            yield ItemEvent.create(
                event_id=f"item:{item_id}", occurred_at=self.start, item_id=item_id, text=text
            )

    def _results(self, query: str) -> list[str]:
        if query not in self._ranked:
            self._ranked[query] = list(self.rank(query))[: self.shown]
        return self._ranked[query]

    def session(self, n: int, query: str) -> list[Event]:
        sid = f"sim-{n}"
        when = self.start + timedelta(seconds=n)
        results = self._results(query)
        grades = self.judgments.get(query, {})
        events: list[Event] = [
            SearchEvent.create(
                event_id=f"{sid}:search",
                occurred_at=when,
                session_id=sid,
                query=query,
                user_id=f"user-{self.rng.randrange(10_000)}",
                results=[{"item_id": item, "rank": r} for r, item in enumerate(results, 1)],
            )
        ]
        clicks = 0
        for r, item in enumerate(results, 1):
            if self.rng.random() < self.model.examined(
                r
            ) and self.rng.random() < self.model.p_click(grades.get(item, 0)):
                clicks += 1
                events.append(
                    ClickEvent.create(
                        event_id=f"{sid}:click{clicks}",
                        session_id=sid,
                        item_id=item,
                        occurred_at=when + timedelta(seconds=2 * clicks),
                    )
                )
        if (
            not clicks
            and max((grades.get(i, 0) for i in results), default=0) < 2
            and self.rng.random() < self.model.irrelevant_if_no_good_result
        ):
            events.append(
                IrrelevantEvent.create(
                    event_id=f"{sid}:irrelevant",
                    session_id=sid,
                    occurred_at=when + timedelta(seconds=5),
                )
            )
        return events

    def sessions(self, count: int, queries: Sequence[str] | None = None) -> Iterator[list[Event]]:
        pool = list(queries or self.judgments)
        for n in range(count):
            yield self.session(n, self.rng.choice(pool))
