"""Each loss pulls positives towards the query and pushes negatives away."""

import pytest
import torch

from trainer.losses import InBatchContrastiveLoss, MarginRankingLoss, PairBatch
from trainer.losses.base import cosine


def _batch(
    q: torch.Tensor,
    p: torch.Tensor,
    n: torch.Tensor,
    pos_ids: list[int],
    neg_ids: list[int],
    weight: list[float] | None = None,
) -> PairBatch:
    return PairBatch(
        q,
        p,
        n,
        torch.tensor(weight or [1.0] * len(pos_ids)),
        torch.tensor(pos_ids),
        torch.tensor(neg_ids),
    )


@pytest.mark.parametrize("loss", [MarginRankingLoss(margin=0.5), InBatchContrastiveLoss()])
def test_one_gradient_step_ranks_positive_above_negative(loss) -> None:
    torch.manual_seed(0)
    q = torch.randn(4, 8)
    p = torch.randn(4, 8, requires_grad=True)
    n = torch.randn(4, 8, requires_grad=True)
    batch = _batch(q, p, n, [0, 1, 2, 3], [4, 5, 6, 7])
    before = (cosine(q, p) - cosine(q, n)).detach()
    value = loss(batch)
    value.backward()
    assert value.item() > 0
    with torch.no_grad():
        p2, n2 = p - 0.5 * p.grad, n - 0.5 * n.grad
    after = cosine(q, p2) - cosine(q, n2)
    assert (after > before).all()
    assert loss(_batch(q, p2, n2, [0, 1, 2, 3], [4, 5, 6, 7])) < value


def test_margin_loss_is_zero_beyond_the_margin_and_weighted() -> None:
    q = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    n = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    loss = MarginRankingLoss(margin=0.5)
    # Row 0: s_pos - s_neg = 1 -> 0. Row 1: -1 -> 1.5. Weights 3:1.
    assert loss(_batch(q, p, n, [0, 1], [2, 3], [3.0, 1.0])).item() == pytest.approx(1.5 / 4)


def test_irrelevant_rows_push_the_negative_below_the_threshold() -> None:
    q = torch.tensor([[1.0, 0.0]])
    n = torch.tensor([[1.0, 0.5]], requires_grad=True)
    loss = MarginRankingLoss(irrelevant_threshold=0.2)
    value = loss(_batch(q, torch.zeros(1, 2), n, [-1], [0]))
    assert value.item() == pytest.approx(cosine(q, n).item() - 0.2)
    value.backward()
    with torch.no_grad():
        assert cosine(q, n - 0.5 * n.grad) < cosine(q, n)


def test_a_repeated_clicked_item_is_never_its_own_negative() -> None:
    # Rows 0 and 1 share positive item 7: row 1's positive must not count against row 0.
    q = torch.tensor([[1.0, 0.0], [1.0, 0.1]])
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    n = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    loss = InBatchContrastiveLoss(scale=20.0)
    shared = loss(_batch(q, p, n, [7, 7], [8, 9])).item()
    distinct = loss(_batch(q, p, n, [7, 6], [8, 9])).item()
    assert shared < distinct  # with the mask, the twin is not a competing candidate
    assert shared < 1e-3


def test_another_click_for_the_same_query_is_not_a_negative() -> None:
    # Rows 0 and 1 are one query with two different clicked items (6 and 7): each must not
    # count against the other. Row 2 is another query: its click stays a negative of both.
    q = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    n = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    loss = InBatchContrastiveLoss(scale=20.0)
    batch = _batch(q, p, n, [6, 7, 8], [-1, -1, -1])
    unmasked = loss(batch).item()
    batch.query_ids = torch.tensor([0, 0, 1])
    masked = loss(batch).item()
    assert masked < unmasked
    # With the sibling masked, rows 0 and 1 only compete with row 2's click (cosine 0 vs 1).
    batch.positive = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    batch.positive_ids = torch.tensor([6, 7, 8])
    assert loss(batch).item() < 1e-6
