"""MRR@k: the reciprocal rank of the first relevant item within the top k.

RR@k = 1 / min{ r <= k : rel(r) }      (0 if none in the top k)
"""

from collections.abc import Mapping, Sequence

from trainer.metrics.base import MetricCalculator


class MRR(MetricCalculator):
    label = "mrr"

    def __call__(
        self,
        ranked: Sequence[str],
        relevant: set[str],
        gains: Mapping[str, float] | None = None,
    ) -> float:
        for r, item in enumerate(ranked[: self.k], 1):
            if item in relevant:
                return 1.0 / r
        return 0.0
