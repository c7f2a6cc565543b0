"""Recall@k: the share of relevant items that appear in the top k.

Recall@k = |top_k ∩ R| / |R|        (0 when nothing is relevant)
"""

from collections.abc import Mapping, Sequence

from trainer.metrics.base import MetricCalculator


class Recall(MetricCalculator):
    label = "recall"

    def __call__(
        self,
        ranked: Sequence[str],
        relevant: set[str],
        gains: Mapping[str, float] | None = None,
    ) -> float:
        if not relevant:
            return 0.0
        return len(set(ranked[: self.k]) & relevant) / len(relevant)
