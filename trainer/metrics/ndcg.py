"""NDCG@k with binary gains.

DCG@k  = sum_{r=1..k} rel(r) / log2(r + 1)
IDCG@k = sum_{r=1..min(k, |R|)} 1 / log2(r + 1)
NDCG@k = DCG@k / IDCG@k          (0 when nothing is relevant)
"""

import math
from collections.abc import Sequence

from trainer.metrics.base import MetricCalculator


class NDCG(MetricCalculator):
    @property
    def name(self) -> str:
        return f"ndcg@{self.k}"

    def __call__(self, ranked: Sequence[str], relevant: set[str]) -> float:
        if not relevant:
            return 0.0
        dcg = sum(
            1 / math.log2(r + 1) for r, item in enumerate(ranked[: self.k], 1) if item in relevant
        )
        ideal = sum(1 / math.log2(r + 1) for r in range(1, min(self.k, len(relevant)) + 1))
        return dcg / ideal
