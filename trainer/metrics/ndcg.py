"""NDCG@k with binary gains.

DCG@k  = sum_{r=1..k} rel(r) / log2(r + 1)
IDCG@k = sum_{r=1..min(k, |R|)} 1 / log2(r + 1)
NDCG@k = DCG@k / IDCG@k          (0 when nothing is relevant)
"""

import math
from collections.abc import Mapping, Sequence

from trainer.metrics.base import MetricCalculator


class NDCG(MetricCalculator):
    label = "ndcg"

    def __call__(
        self,
        ranked: Sequence[str],
        relevant: set[str],
        gains: Mapping[str, float] | None = None,
    ) -> float:
        if not relevant:
            return 0.0
        gain = {i: (gains or {}).get(i, 1.0) for i in relevant}
        dcg = sum(
            gain[item] / math.log2(r + 1)
            for r, item in enumerate(ranked[: self.k], 1)
            if item in gain
        )
        ideal = sum(
            g / math.log2(r + 1)
            for r, g in enumerate(sorted(gain.values(), reverse=True)[: self.k], 1)
        )
        return dcg / ideal if ideal > 0 else 0.0
