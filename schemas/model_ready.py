"""Model-ready: a fine-tuned model beat its baseline and is registered as champion."""

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.base import Event
from schemas.fields import Id, MethodName, Timestamp

MetricName = Annotated[str, Field(min_length=1, max_length=64)]


class ModelMetrics(BaseModel):
    """Evaluation on held-out sessions, e.g. ``{"ndcg@10": 0.61}``, before and after tuning."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)

    baseline: dict[MetricName, float]
    tuned: dict[MetricName, float]

    @field_validator("baseline", "tuned")
    @classmethod
    def _finite(cls, value: dict[str, float]) -> dict[str, float]:
        if any(not math.isfinite(v) for v in value.values()):
            raise ValueError("metric values must be finite")
        return value


class ModelReadyEvent(Event):
    """Published once per task whose tuned model became the method's champion."""

    event_type = "model_ready"
    type: Literal["model_ready"]
    task_id: Id
    batch_id: Id
    fine_tuning_method: MethodName
    model_name: Id = Field(description="Registered model name in MLflow.")
    model_version: Id = Field(description="Registered model version.")
    model_uri: Annotated[str, Field(min_length=1, max_length=2048)] = Field(
        description="Where to load the model, e.g. models:/clicktune-default/3."
    )
    artifact_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="sha256 over the model's weight files."
    )
    embedding_dim: int = Field(ge=1, le=65_536)
    base_model: Annotated[str, Field(min_length=1, max_length=2048)]
    metrics: ModelMetrics
    mlflow_run_id: Id
    created_at: Timestamp

    def kafka_key(self) -> str:
        return self.fine_tuning_method
