"""Fine-tuning hyperparameters: one set per run, a grid of candidates per search."""

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: Candidates searched on a method's first iteration (``CLICKTUNE_PARAMS_GRID_FILE`` replaces
#: it). Small learning rates, few epochs and frozen lower layers limit forgetting
#: (../shared/notes/learning-from-clicks.md).
DEFAULT_GRID: dict[str, list[Any]] = {
    "learning_rate": [5e-6, 1e-5, 2e-5, 5e-5],
    "weight_decay": [0.0, 0.01],
    "loss": ["contrastive", "margin"],
    "margin": [0.1, 0.2],
    "frozen_layers": [0, 2, 4],
    "skip_above_weight": [1.0, 2.0],
}


class FineTuningParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    learning_rate: float = Field(default=2e-5, gt=0, lt=1)
    weight_decay: float = Field(default=0.01, ge=0)
    loss: Literal["contrastive", "margin"] = "contrastive"
    margin: float = Field(default=0.2, gt=0)
    frozen_layers: int = Field(default=0, ge=0)
    skip_above_weight: float = Field(default=2.0, gt=0)
    step_size: int = 500
    gamma: float = 0.9

    def digest(self) -> str:
        """Stable id of this parameter set: names the run, so a retried task resumes."""
        canonical = json.dumps(self.model_dump(), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


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
