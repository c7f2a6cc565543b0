"""Ranking metrics behind one interface (:class:`MetricCalculator`)."""

from trainer.metrics.base import MetricCalculator
from trainer.metrics.mrr import MRR
from trainer.metrics.ndcg import NDCG
from trainer.metrics.recall import Recall

__all__ = ["MRR", "NDCG", "MetricCalculator", "Recall"]
