"""Ranking losses behind one interface (:class:`RankingLoss`)."""

from trainer.losses.base import PairBatch, RankingLoss
from trainer.losses.in_batch_contrastive import InBatchContrastiveLoss
from trainer.losses.margin_ranking import MarginRankingLoss

LOSSES: dict[str, type[RankingLoss]] = {
    "margin": MarginRankingLoss,
    "contrastive": InBatchContrastiveLoss,
}

__all__ = ["LOSSES", "InBatchContrastiveLoss", "MarginRankingLoss", "PairBatch", "RankingLoss"]
