"""The interface every ranking loss implements."""

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class PairBatch:
    """Embeddings and bookkeeping of one training batch of :class:`trainer.ranking_data.Pair`.

    ``query``, ``positive``, ``negative``: (B, d) embeddings (rows without a positive or a
    negative hold zeros, see the masks). ``weight``: (B,) confidences. ``positive_ids``,
    ``negative_ids``: (B,) integer item ids, -1 where absent, so a loss can tell that two rows
    share an item. ``query_ids``: (B,) integer ids of the rows' queries (None: unknown), so
    a loss can tell that two rows are the same query.
    """

    query: Tensor
    positive: Tensor
    negative: Tensor
    weight: Tensor
    positive_ids: Tensor
    negative_ids: Tensor
    query_ids: Tensor | None = None

    @property
    def has_positive(self) -> Tensor:
        return self.positive_ids >= 0

    @property
    def has_negative(self) -> Tensor:
        return self.negative_ids >= 0


class RankingLoss(nn.Module, ABC):
    """Maps a :class:`PairBatch` to a scalar loss (lower is better)."""

    @abstractmethod
    def forward(self, batch: PairBatch) -> Tensor: ...


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise cosine similarity of two (B, d) tensors."""
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


def weighted_mean(values: Tensor, weights: Tensor) -> Tensor:
    total = weights.sum()
    if total <= 0:
        return values.sum() * 0.0  # keeps the graph, contributes nothing
    return (values * weights).sum() / total
