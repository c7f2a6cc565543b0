"""Fine-tuning hyperparameters: one set per run, a grid of candidates per search."""

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Candidates searched on a method's first iteration (``CLICKTUNE_PARAMS_GRID_FILE`` replaces
#: it). The search starts from :class:`FineTuningParams`' defaults (see
#: :func:`warm_start`), a recipe measured on real graded data (docs/benchmarks.md): in-batch
#: negatives only, small batches, a linear decay. Skipped results as hard negatives, bigger
#: batches, a smaller learning rate and frozen lower layers are the alternatives around it
#: (../shared/notes/learning-from-clicks.md).
DEFAULT_GRID: dict[str, list[Any]] = {
    "learning_rate": [1e-5, 2e-5, 5e-5],
    "batch_size": [8, 16, 32],
    "hard_negatives": [0, 1],
    "frozen_layers": [0, 2],
    "warmup_ratio": [0.0, 0.1],
}


class FineTuningParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    learning_rate: float = Field(default=2e-5, gt=0, lt=1)
    weight_decay: float = Field(default=0.01, ge=0)
    loss: Literal["contrastive", "margin"] = "contrastive"
    margin: float = Field(default=0.2, gt=0)
    frozen_layers: int = Field(default=0, ge=0)
    skip_above_weight: float = Field(default=2.0, gt=0)
    #: Shown-but-skipped results kept as explicit negatives per click (the strongest first);
    #: 0 trains on in-batch negatives alone (other rows' clicked items).
    hard_negatives: int = Field(default=0, ge=0, le=20)
    #: Pairs per optimizer step; None takes ``Settings.train_batch_size``. Small batches of
    #: in-batch negatives suit the few hundred to few thousand clicks of a weekly batch
    #: (more steps per epoch); the search tries bigger ones.
    batch_size: int | None = Field(default=16, ge=2, le=4096)
    #: "step": lr times ``gamma`` every ``step_size`` steps; "linear": a linear warm-up over
    #: ``warmup_ratio`` of the run, then a linear decay to 0 (sentence-transformers' default).
    schedule: Literal["step", "linear"] = "linear"
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    #: Gradients are clipped to this global L2 norm before each step (0: never), as the
    #: Hugging Face trainer does by default: one batch of near-duplicate clicks cannot throw
    #: the model far from where it was.
    max_grad_norm: float = Field(default=1.0, ge=0)
    step_size: int = 500
    gamma: float = 0.9

    @model_validator(mode="after")
    def _margin_needs_negatives(self) -> "FineTuningParams":
        if self.loss == "margin" and self.hard_negatives == 0:
            raise ValueError("the margin loss needs hard_negatives >= 1 (it ranks pairs)")
        return self

    def digest(self) -> str:
        """Stable id of this parameter set: names the run, so a retried task resumes."""
        canonical = json.dumps(self.model_dump(), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def warm_start(grid: dict[str, list[Any]]) -> list[dict[str, int]]:
    """The first point hyperopt evaluates: the defaults, as indexes into ``grid`` (how
    ``points_to_evaluate`` names ``hp.choice`` values). A search of a few trials then always
    includes the measured recipe instead of a random draw. Empty when a grid leaves a default
    out (a custom grid: its own candidates only)."""
    defaults = FineTuningParams().model_dump()
    point = {}
    for name, values in grid.items():
        if defaults[name] not in values:
            return []
        point[name] = values.index(defaults[name])
    return [point]


def load_grid(path: Path | None) -> dict[str, list[Any]]:
    if path is None:
        return DEFAULT_GRID
    grid = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise ValueError(f"{path}: expected an object of non-empty lists")
    unknown = set(grid) - set(FineTuningParams.model_fields)
    if unknown:
        raise ValueError(f"{path}: unknown hyperparameters {sorted(unknown)}")
    return grid
