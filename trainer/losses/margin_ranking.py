"""Confidence-weighted margin ranking loss.

For a row i with a positive p_i and a negative n_i, with cosine similarity s:

    l_i = max(0, m - (s(q_i, p_i) - s(q_i, n_i)))

For a row from a session marked irrelevant (no positive), the negative is pushed below a
threshold t:   l_i = max(0, s(q_i, n_i) - t).
Rows with a positive but no negative contribute nothing here. The loss is the mean of l_i
weighted by the rows' confidences w_i:   L = sum_i w_i l_i / sum_i w_i.
"""

import torch
from torch import Tensor

from trainer.losses.base import PairBatch, RankingLoss, cosine, weighted_mean


class MarginRankingLoss(RankingLoss):
    def __init__(self, margin: float = 0.2, irrelevant_threshold: float = 0.2) -> None:
        super().__init__()
        self.margin = margin
        self.irrelevant_threshold = irrelevant_threshold

    def forward(self, batch: PairBatch) -> Tensor:
        s_neg = cosine(batch.query, batch.negative)
        s_pos = cosine(batch.query, batch.positive)
        pair = batch.has_positive & batch.has_negative
        irrelevant = ~batch.has_positive & batch.has_negative
        hinge = torch.where(
            pair,
            torch.relu(self.margin - (s_pos - s_neg)),
            torch.relu(s_neg - self.irrelevant_threshold),
        )
        used = (pair | irrelevant).to(batch.weight.dtype)
        return weighted_mean(hinge, batch.weight * used)
