"""The interface of a ranking metric over one query's ranked list."""

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence


class MetricCalculator(ABC):
    """Scores a ranked list of item ids against the set of relevant (clicked) ids."""

    def __init__(self, k: int) -> None:
        if k < 1:
            raise ValueError("k must be at least 1")
        self.k = k

    @property
    @abstractmethod
    def name(self) -> str: ...

    @abstractmethod
    def __call__(
        self,
        ranked: Sequence[str],
        relevant: set[str],
        gains: Mapping[str, float] | None = None,
    ) -> float:
        """``gains`` optionally weighs relevant items (metrics that grade use it)."""
