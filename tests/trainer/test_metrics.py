"""Metric values on hand-computed cases."""

import math

import pytest
import torch

from trainer.evaluation import evaluate
from trainer.metrics import MRR, NDCG, Recall
from trainer.ranking_data import Session


def test_ndcg_hand_computed() -> None:
    # Relevant at ranks 2 and 3 of 4; two relevant items in all.
    dcg = 1 / math.log2(3) + 1 / math.log2(4)
    idcg = 1 / math.log2(2) + 1 / math.log2(3)
    assert NDCG(10)(["a", "b", "c", "d"], {"b", "c"}) == pytest.approx(dcg / idcg)
    assert NDCG(1)(["a", "b"], {"b"}) == 0.0
    assert NDCG(10)(["b", "a"], {"b"}) == 1.0
    assert NDCG(10)(["a"], set()) == 0.0


def test_mrr_and_recall_hand_computed() -> None:
    assert MRR(10)(["a", "b", "c"], {"c"}) == pytest.approx(1 / 3)
    assert MRR(2)(["a", "b", "c"], {"c"}) == 0.0
    assert Recall(2)(["a", "b", "c"], {"b", "c"}) == 0.5
    assert Recall(3)(["a", "b", "c"], {"b", "c"}) == 1.0
    with pytest.raises(ValueError):
        NDCG(0)


def test_evaluate_with_a_known_embedding() -> None:
    # 2-d embeddings chosen by hand: "q" is closest to "x", then "y", then "z".
    vectors = {"q": [1.0, 0.0], "x": [0.9, 0.1], "y": [0.5, 0.5], "z": [0.0, 1.0]}

    def encode(texts: list[str]) -> torch.Tensor:
        return torch.nn.functional.normalize(torch.tensor([vectors[t] for t in texts]), dim=1)

    items = {"ix": "x", "iy": "y", "iz": "z"}
    sessions = [
        Session("s1", "q", (("iz", 1), ("iy", 2), ("ix", 3)), frozenset({"iy"})),
        Session("s2", "q", (("ix", 1),), frozenset(), irrelevant=True),  # not judged
    ]
    got = evaluate(encode, sessions, items)
    # Re-ranked shown list: ix, iy, iz -> the click (iy) at rank 2.
    assert got["rerank_mrr@10"] == pytest.approx(0.5)
    assert got["rerank_ndcg@10"] == pytest.approx(1 / math.log2(3))
    assert got["ndcg@10"] == pytest.approx(1 / math.log2(3))
    assert got["recall@100"] == 1.0


def test_evaluate_with_a_distance_ranker_and_custom_metrics() -> None:
    vectors = {"q": [1.0, 0.0], "x": [0.9, 0.1], "y": [0.0, 1.0]}

    def encode(texts: list[str]) -> torch.Tensor:
        return torch.nn.functional.normalize(torch.tensor([vectors[t] for t in texts]), dim=1)

    sessions = [Session("s1", "q", (("iy", 1), ("ix", 2)), frozenset({"ix"}))]
    items = {"ix": "x", "iy": "y"}
    got = evaluate(
        encode, sessions, items, pool_metrics=(MRR(1),), ranker=torch.cdist, is_similarity=False
    )
    assert set(got) == {
        "rerank_ips_dcg@10",
        "rerank_ndcg@10",
        "rerank_mrr@10",
        "rerank_recall@10",
        "mrr@1",
    }
    assert got["mrr@1"] == 1.0  # the nearest item by distance is the clicked one


def test_ndcg_with_gains_hand_computed() -> None:
    dcg = 1 / math.log2(2) + 3 / math.log2(3)
    idcg = 3 / math.log2(2) + 1 / math.log2(3)
    assert NDCG(10)(["b", "a"], {"a", "b"}, {"a": 3.0, "b": 1.0}) == pytest.approx(dcg / idcg)


def test_debiased_evaluation_credits_clicks_found_deep() -> None:
    # Two clicks: "top" shown at rank 1, "deep" at rank 9. Binary NDCG cannot tell a model
    # that keeps the served order from one that puts "deep" first; inverse-propensity gains
    # credit the latter, since a click that deep is the stronger evidence.
    def model(top: list[float], deep: list[float]):
        vectors = {"q": [1.0, 0.0], "top": top, "deep": deep, "x": [0.0, 1.0]}

        def encode(texts: list[str]) -> torch.Tensor:
            return torch.nn.functional.normalize(torch.tensor([vectors[t] for t in texts]), dim=1)

        return encode

    served = model(top=[0.8, 0.6], deep=[0.6, 0.8])
    reordered = model(top=[0.6, 0.8], deep=[0.8, 0.6])
    shown = (("itop", 1), ("ix", 2), *((f"f{r}", r) for r in range(3, 9)), ("ideep", 9))
    session = Session("s", "q", shown, frozenset({"itop", "ideep"}))
    items = {"itop": "top", "ideep": "deep", "ix": "x"} | {f"f{r}": "x" for r in range(3, 9)}
    key = "rerank_ndcg@10"
    assert evaluate(served, [session], items, debias=False)[key] == pytest.approx(
        evaluate(reordered, [session], items, debias=False)[key]
    )
    assert evaluate(reordered, [session], items)[key] > evaluate(served, [session], items)[key]


def test_the_main_metric_weighs_each_click_by_its_propensity_across_sessions() -> None:
    # Two one-click sessions of the same query: one click served at rank 1, one at rank 9.
    vectors = {"q": [1.0, 0.0], "a": [0.9, 0.1], "b": [0.8, 0.2]}
    vectors |= {f"f{r}": [0.1 * r, 1.0] for r in range(2, 10)}

    def encode(texts: list[str]) -> torch.Tensor:
        return torch.nn.functional.normalize(torch.tensor([vectors[t] for t in texts]), dim=1)

    fillers = tuple((f"i{r}", r) for r in range(2, 9))
    s1 = Session("s1", "q", (("ia", 1), *fillers, ("ib", 9)), frozenset({"ia"}))
    s2 = Session("s2", "q", (("ia", 1), *fillers, ("ib", 9)), frozenset({"ib"}))
    items = {"ia": "a", "ib": "b"} | {f"i{r}": f"f{r}" for r in range(2, 9)}
    got = evaluate(encode, [s1, s2], items)
    # The model puts a first and b second: discounts 1 and 1/log2(3); weights 1 and 9^0.8.
    w = 9**0.8
    expected = (1.0 + w / math.log2(3)) / (1.0 + w)
    assert got["rerank_ips_dcg@10"] == pytest.approx(expected)
    # The per-session mean gives the rank-1 click as much say as the deep one.
    assert got["rerank_ndcg@10"] == pytest.approx((1.0 + 1 / math.log2(3)) / 2)
