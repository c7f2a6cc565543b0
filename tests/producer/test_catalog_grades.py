"""The demo's score on hidden grades: whole-catalog NDCG@10 per judged query."""

import math

import numpy as np
import pytest

from producer.catalog_grades import base_and_published, graded_ndcg
from producer.sample_catalog import build_catalog
from tests.producer.conftest import Registered
from trainer.ranking_data import Session, is_held_out, split_by_query


class TableEncoder:
    """sentence-transformers' ``encode`` over a fixed table of unit vectors."""

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.vectors = vectors

    def encode(self, texts: list[str], **kwargs: object) -> np.ndarray:
        rows = np.array([self.vectors[t] for t in texts], dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


CATALOG = {"a": "red shoe", "b": "blue shoe", "c": "red hat"}
VECTORS = {
    "red shoe": [1.0, 0.0],
    "blue shoe": [0.0, 1.0],
    "red hat": [0.8, 0.6],
    "q shoe": [1.0, 0.05],  # ranks a, c, b
    "q hat": [0.0, 1.0],  # ranks b, c, a
}


def test_whole_catalog_ndcg_with_the_grades_as_gains() -> None:
    judgments = {"q shoe": {"a": 3, "b": 1, "c": 0}, "q hat": {"c": 2}}
    got = graded_ndcg(TableEncoder(VECTORS), CATALOG, judgments, lambda q: q == "q hat")
    # q shoe: a (3) at rank 1, b (1) at rank 3; ideal a then b at ranks 1, 2.
    shoe = (3 + 1 / math.log2(4)) / (3 + 1 / math.log2(3))
    # q hat: c (2) at rank 2 of 3; ideal rank 1.
    hat = (2 / math.log2(3)) / 2
    assert got.ndcg == pytest.approx((shoe + hat) / 2)
    assert got.ndcg_held_out == pytest.approx(hat)
    assert (got.queries, got.held_out) == (2, 1)


def test_only_positive_grades_count_and_none_held_out_is_nan() -> None:
    judgments = {"q hat": {"a": 0, "b": 0}}
    got = graded_ndcg(TableEncoder(VECTORS), CATALOG, judgments, lambda q: False)
    assert got.ndcg == 0.0
    assert math.isnan(got.ndcg_held_out) and got.held_out == 0


def test_held_out_queries_are_the_ones_the_trainer_splits_off() -> None:
    sessions = [Session(f"s{n}", f"query {n}", (), frozenset()) for n in range(200)]
    train, test = split_by_query("b000007", sessions, 0.2)
    assert test and train
    assert all(is_held_out("b000007", s.query, 0.2) for s in test)
    assert not any(is_held_out("b000007", s.query, 0.2) for s in train)


def test_the_published_model_is_fetched_checked_and_scored_beside_the_base(
    registered: Registered,
) -> None:
    # The registered model holds the base model's weights: both must score the same, and
    # the real model must rank the generated catalog's right products well above chance.
    catalog, judgments = build_catalog()
    queries = sorted(judgments)[:4]
    judged = {i for q in queries for i in judgments[q]}
    small = {i: t for n, (i, t) in enumerate(catalog.items()) if i in judged or n % 10 == 0}
    event = registered.event.model_copy(update={"batch_id": "b000001"})
    base, published = base_and_published(
        registered.settings, event, small, {q: judgments[q] for q in queries}
    )
    assert base == published
    assert base.queries == 4 and 0.5 < base.ndcg <= 1.0
    held = [q for q in queries if is_held_out("b000001", q, registered.settings.test_fraction)]
    assert base.held_out == len(held)
