"""In-batch contrastive loss (MultipleNegativesRanking style) with hard negatives.

Row i's query is scored against every candidate of the batch: all positives p_j and all
explicit negatives n_j, with scaled cosine similarity S_ij = scale * s(q_i, c_j). The loss is
the confidence-weighted cross-entropy of picking p_i:

    l_i = -log( exp(S_ii) / sum_j exp(S_ij) )

Two kinds of candidate are masked out of row i's softmax, because they are not negatives of
q_i (false negatives only teach the model to push relevant items away):
- the *same item* as p_i (a clicked item repeated in the batch);
- the positive p_j of another row j with the *same query* (two clicks of one session, or
  the same query clicked on by several users): an item clicked for q_i is relevant to q_i.
Rows without a positive are skipped.
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
        if batch.query_ids is not None:
            same_query = batch.query_ids.unsqueeze(0) == batch.query_ids.unsqueeze(1)
            mask[:, :size] |= same_query
        mask[target, target] = False  # the row's own positive stays
        scores = scores.masked_fill(mask, float("-inf"))
        losses = torch.nn.functional.cross_entropy(scores, target, reduction="none")
        rows = batch.has_positive
        losses = torch.where(rows, losses, torch.zeros_like(losses))
        return weighted_mean(losses, batch.weight * rows.to(batch.weight.dtype))
