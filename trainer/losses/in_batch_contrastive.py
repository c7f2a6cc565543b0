"""In-batch contrastive loss (MultipleNegativesRanking style) with hard negatives.

Row i's query is scored against every candidate of the batch: all positives p_j and all
explicit negatives n_j, with scaled cosine similarity S_ij = scale * s(q_i, c_j). The loss is
the confidence-weighted cross-entropy of picking p_i:

    l_i = -log( exp(S_ii) / sum_j exp(S_ij) )

Candidates that are the *same item* as p_i (a clicked item repeated in the batch) are masked
out, so an item is never its own negative; rows without a positive are skipped.
"""

import torch
from torch import Tensor

from trainer.losses.base import PairBatch, RankingLoss, weighted_mean


class InBatchContrastiveLoss(RankingLoss):
    def __init__(self, scale: float = 20.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, batch: PairBatch) -> Tensor:
        q = torch.nn.functional.normalize(batch.query, dim=-1)
        candidates = torch.cat([batch.positive, batch.negative], dim=0)
        c = torch.nn.functional.normalize(candidates, dim=-1)
        scores = self.scale * q @ c.T  # (B, 2B)
        ids = torch.cat([batch.positive_ids, batch.negative_ids])
        size = q.shape[0]
        target = torch.arange(size, device=q.device)
        same_item = ids.unsqueeze(0) == batch.positive_ids.unsqueeze(1)
        absent = (ids < 0).unsqueeze(0).expand_as(same_item)
        mask = same_item | absent
        mask[target, target] = False  # the row's own positive stays
        scores = scores.masked_fill(mask, float("-inf"))
        losses = torch.nn.functional.cross_entropy(scores, target, reduction="none")
        rows = batch.has_positive
        losses = torch.where(rows, losses, torch.zeros_like(losses))
        return weighted_mean(losses, batch.weight * rows.to(batch.weight.dtype))
