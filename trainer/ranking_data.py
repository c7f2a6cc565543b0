"""Ranking data from a frozen batch: sessions, pairs with confidences, a by-query split.

For each session: the query, the shown results with ranks, the clicked items.
- positives: clicked items;
- negatives: shown but not clicked. A skip *above* a click (the user passed over it on the
  way to the click) weighs ``skip_above_weight`` times a skip below the last click;
- a session marked irrelevant makes its shown results negatives (it has no positive), the
  ``max_negatives`` highest-ranked of them: rows without a positive teach an in-batch loss
  nothing themselves, and a batch full of them leaves few positives to learn from;
- the split is by query (a query's sessions all go to train or all to test), decided by a
  hash of (batch id, normalised query): the same batch always splits the same way.
"""

import hashlib
import json
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from consumer.keys import Keys
from trainer.confidence import ConfidenceCalculator, ExaminationConfidence


@dataclass(frozen=True)
class Session:
    session_id: str
    query: str
    shown: tuple[tuple[str, int], ...]  # (item_id, rank), rank order
    clicked: frozenset[str]
    irrelevant: bool = False

    @property
    def last_click_rank(self) -> int:
        ranks = [r for i, r in self.shown if i in self.clicked]
        return max(ranks) if ranks else 0


@dataclass(frozen=True)
class Pair:
    """One training example: the query should score ``positive`` above ``negative``."""

    query: str
    positive: str  # item id ("" for an irrelevant session: no positive)
    negative: str  # item id ("" when only the positive is known)
    weight: float


@dataclass
class RankingData:
    batch_id: str
    train: list[Session]
    test: list[Session]
    items: dict[str, str]  # item id -> text
    stats: dict[str, int] = field(default_factory=dict)

    def pairs(
        self,
        sessions: list[Session],
        confidence: ConfidenceCalculator | None = None,
        *,
        skip_above_weight: float = 2.0,
        max_negatives: int = 4,
    ) -> list[Pair]:
        """Training pairs of ``sessions``. Each positive keeps its ``max_negatives``
        strongest negatives (skips above the click and high ranks first): the rest add
        little beyond the in-batch negatives and cost a forward pass each."""
        conf = confidence or ExaminationConfidence()
        out: list[Pair] = []
        for s in sessions:
            if s.irrelevant:
                shown = [(item, rank) for item, rank in s.shown if item in self.items]
                out.extend(
                    Pair(s.query, "", item, conf(rank))
                    for item, rank in sorted(shown, key=lambda x: x[1])[:max_negatives]
                )
                continue
            positives = [(i, r) for i, r in s.shown if i in s.clicked and i in self.items]
            last = s.last_click_rank
            skipped = [(i, r) for i, r in s.shown if i not in s.clicked and i in self.items]
            weighted = sorted(
                (
                    (conf(rank) * (skip_above_weight if rank < last else 1.0), neg)
                    for neg, rank in skipped
                ),
                key=lambda x: -x[0],
            )[:max_negatives]
            for pos, _ in positives:
                if not weighted:
                    out.append(Pair(s.query, pos, "", 1.0))
                out.extend(Pair(s.query, pos, neg, weight) for weight, neg in weighted)
        return out


def _split_bucket(batch_id: str, query: str) -> float:
    digest = hashlib.blake2b(
        f"{batch_id}\x1f{query.strip().lower()}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") / 2**64


def is_held_out(batch_id: str, query: str, test_fraction: float) -> bool:
    """Whether a batch's sessions of ``query`` are held out of training (for evaluation)."""
    return _split_bucket(batch_id, query) < test_fraction


def split_by_query(
    batch_id: str, sessions: list[Session], test_fraction: float
) -> tuple[list[Session], list[Session]]:
    train, test = [], []
    for s in sessions:
        (test if is_held_out(batch_id, s.query, test_fraction) else train).append(s)
    return train, test


async def load_ranking_data(
    client: aioredis.Redis, prefix: str, batch_id: str, *, test_fraction: float = 0.2
) -> RankingData:
    """Read a frozen batch's sessions and their items' texts from Redis."""
    keys = Keys(prefix)
    session_ids = sorted(m.decode() for m in await client.smembers(keys.batch_sessions(batch_id)))
    sessions: list[Session] = []
    stats = {"sessions": len(session_ids), "no_query": 0, "no_feedback": 0}
    for start in range(0, len(session_ids), 500):
        chunk = session_ids[start : start + 500]
        pipe = client.pipeline(transaction=False)
        for sid in chunk:
            pipe.hmget(keys.session(sid), "query", "results", "irrelevant")
            pipe.lrange(keys.session_clicks(sid), 0, -1)
        replies = await pipe.execute()
        for sid, (fields, clicks) in zip(
            chunk, zip(replies[::2], replies[1::2], strict=True), strict=True
        ):
            query, results, irrelevant = fields
            if query is None or results is None:
                stats["no_query"] += 1  # clicks whose search never arrived
                continue
            clicked = frozenset(json.loads(c)["item_id"] for c in clicks)
            shown = tuple((item, int(rank)) for item, rank in json.loads(results))
            is_irrelevant = irrelevant == b"1"
            if not clicked and not is_irrelevant:
                stats["no_feedback"] += 1
                continue
            sessions.append(Session(sid, query.decode(), shown, clicked, is_irrelevant))
    item_ids = sorted({i for s in sessions for i, _ in s.shown})
    items: dict[str, str] = {}
    for start in range(0, len(item_ids), 1000):
        chunk = item_ids[start : start + 1000]
        texts = await client.hmget(keys.catalog, chunk)
        items.update({i: t.decode() for i, t in zip(chunk, texts, strict=True) if t is not None})
    stats["items_without_text"] = len(item_ids) - len(items)
    train, test = split_by_query(batch_id, sessions, test_fraction)
    stats.update(train_sessions=len(train), test_sessions=len(test))
    return RankingData(batch_id, train, test, items, stats)
