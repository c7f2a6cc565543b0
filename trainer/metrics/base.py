"""The interface of a ranking metric over one query's ranked list."""

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import ClassVar


class MetricCalculator(ABC):
    """Scores a ranked list of item ids against the set of relevant (clicked) ids."""

    def __init__(self, k: int) -> None:
        if k < 1:
            raise ValueError("k must be at least 1")
        self.k = k

    #: Short name of the metric; ``name`` adds the cut-off, e.g. ``ndcg@10``.
    label: ClassVar[str]

    @property
    def name(self) -> str:
        return f"{self.label}@{self.k}"

    @abstractmethod
    def __call__(
        self,
        ranked: Sequence[str],
        relevant: set[str],
        gains: Mapping[str, float] | None = None,
    ) -> float:
        """``gains`` optionally weighs relevant items (metrics that grade use it)."""
