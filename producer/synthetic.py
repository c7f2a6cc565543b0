"""Synthetic search sessions for load tests and benchmarks (not a relevance simulator).

Deterministic for a seed: the same seed gives the same events, ids and times, so two runs
over the same traffic can be compared byte for byte.
"""

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from schemas.base import Event
from schemas.clickstream import ClickEvent, IrrelevantEvent, ItemEvent, SearchEvent

_WORDS = (
    "mouse",
    "pad",
    "gaming",
    "desk",
    "mat",
    "wireless",
    "keyboard",
    "office",
    "chair",
    "printer",
    "ink",
    "usb",
    "hub",
    "monitor",
    "stand",
    "laptop",
    "sleeve",
    "cable",
    "organizer",
    "webcam",
    "headset",
    "speaker",
    "lamp",
)


def sessions(
    count: int,
    *,
    seed: int = 0,
    catalog_size: int = 2_000,
    results: tuple[int, int] = (10, 50),
    start: datetime | None = None,
    with_texts: bool = True,
) -> Iterator[Event]:
    """A search with 10-50 results, then 0-3 clicks (some sessions marked irrelevant)."""
    rng = random.Random(seed)
    t0 = start or datetime.now(UTC) - timedelta(hours=1)
    for n in range(count):
        sid = f"s{seed}-{n}"
        when = t0 + timedelta(milliseconds=n)
        shown = rng.sample(range(catalog_size), rng.randint(*results))
        query = " ".join(rng.choices(_WORDS, k=rng.randint(1, 4)))
        yield SearchEvent.create(
            event_id=f"{sid}:search",
            occurred_at=when,
            session_id=sid,
            query=query,
            user_id=f"u{rng.randrange(500)}",
            results=[
                {
                    "item_id": f"item-{i}",
                    "rank": r,
                    **({"text": f"{_WORDS[i % len(_WORDS)]} product {i}"} if with_texts else {}),
                }
                for r, i in enumerate(shown, 1)
            ],
        )
        if rng.random() < 0.05:
            yield IrrelevantEvent.create(event_id=f"{sid}:irr", occurred_at=when, session_id=sid)
            continue
        for c in range(rng.choice((0, 1, 1, 1, 2, 3))):
            item = shown[min(int(rng.expovariate(0.3)), len(shown) - 1)]
            yield ClickEvent.create(
                event_id=f"{sid}:click{c}",
                session_id=sid,
                item_id=f"item-{item}",
                occurred_at=when + timedelta(seconds=c + 1),
            )


def catalog(size: int = 2_000, *, start: datetime | None = None) -> Iterator[ItemEvent]:
    when = start or datetime.now(UTC) - timedelta(hours=1)
    for i in range(size):
        yield ItemEvent.create(
            event_id=f"item-{i}:v1",
            occurred_at=when,
            item_id=f"item-{i}",
            text=f"{_WORDS[i % len(_WORDS)]} product {i}",
        )
