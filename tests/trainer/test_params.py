"""Fine-tuning hyperparameters: validation, and the search's candidates."""

import pytest
from pydantic import ValidationError

from trainer.params import DEFAULT_GRID, FineTuningParams, warm_start


def test_the_margin_loss_needs_hard_negatives() -> None:
    with pytest.raises(ValidationError, match="margin loss needs hard_negatives"):
        FineTuningParams(loss="margin", hard_negatives=0)
    assert FineTuningParams(loss="contrastive", hard_negatives=0).hard_negatives == 0


def test_a_batch_size_in_the_params_names_a_different_run() -> None:
    assert FineTuningParams(batch_size=32).digest() != FineTuningParams(batch_size=8).digest()
    assert FineTuningParams(batch_size=32).digest() == FineTuningParams(batch_size=32).digest()


def test_the_search_starts_from_the_defaults_when_the_grid_holds_them() -> None:
    [point] = warm_start(DEFAULT_GRID)
    chosen = {name: DEFAULT_GRID[name][index] for name, index in point.items()}
    assert FineTuningParams(**chosen) == FineTuningParams()
    # A custom grid that leaves a default out gets its own candidates only.
    assert warm_start({"learning_rate": [1e-6, 2e-6]}) == []


def test_every_default_candidate_is_valid() -> None:
    for name, values in DEFAULT_GRID.items():
        for value in values:
            FineTuningParams(**{name: value})


@pytest.mark.parametrize("evals", [1, 2, 4])
def test_the_search_really_evaluates_the_defaults_first(evals: int) -> None:
    import numpy as np

    from trainer.search import run_search

    seen: list[dict] = []

    def objective(params: dict) -> float:
        seen.append(params)
        return 0.0

    run_search(objective, DEFAULT_GRID, evals, np.random.default_rng(0))
    assert len(seen) == evals  # the budget, the defaults included
    assert FineTuningParams(**seen[0]) == FineTuningParams()
    seen.clear()
    run_search(objective, DEFAULT_GRID, 2, np.random.default_rng(0), warm=False)
    assert len(seen) == 2
