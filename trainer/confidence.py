"""Position-bias confidence: how much a (query, item) pair is trusted, by the item's rank.

Users look at top results more, so a skip at rank 1 says more than a skip at rank 30, and a
click at rank 30 says more than one at rank 1. A calculator maps a 1-based rank to a weight.
"""

from abc import ABC, abstractmethod


class ConfidenceCalculator(ABC):
    @abstractmethod
    def __call__(self, rank: int) -> float:
        """Weight of evidence observed at ``rank`` (1-based); positive."""


class ConstantConfidence(ConfidenceCalculator):
    """Every position is trusted the same: w(r) = c."""

    def __init__(self, value: float = 1.0) -> None:
        if value <= 0:
            raise ValueError("confidence must be positive")
        self.value = value

    def __call__(self, rank: int) -> float:
        return self.value


class ExaminationConfidence(ConfidenceCalculator):
    """Probability that a user examined rank r under a power-law examination model:
    w(r) = max(r^-eta, floor). Used for *skips*: a skipped item high up was probably seen and
    rejected (strong negative); far down it may simply not have been seen."""

    def __init__(self, eta: float = 0.8, floor: float = 0.05) -> None:
        self.eta = eta
        self.floor = floor

    def __call__(self, rank: int) -> float:
        return max(rank**-self.eta, self.floor)
