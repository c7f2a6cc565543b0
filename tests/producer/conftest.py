"""A model registered for real in an MLflow store on sqlite, with its ``model_ready`` event:
the offline all-MiniLM-L6-v2 logged with MLflow's sentence_transformers flavor, the digest
computed as the trainer computes it."""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest

from producer.settings import Settings
from schemas import ModelReadyEvent
from tests.factories import fresh
from trainer.model_source import base_model_path, weights_sha256

MODEL = "clicktune-fetch-test"


@dataclass(frozen=True)
class Registered:
    settings: Settings
    event: ModelReadyEvent
    artifacts: Path  # where MLflow keeps the registered model's files


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registered]:
    from sentence_transformers import SentenceTransformer

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    experiment = client.create_experiment("fetch", artifact_location=str(root / "artifacts"))
    model = SentenceTransformer(base_model_path("all-MiniLM-L6-v2"), device="cpu")
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.sentence_transformers.log_model(model, name="model")
    version = mlflow.register_model(f"models:/{info.model_id}", MODEL)
    model_uri = f"models:/{MODEL}/{version.version}"
    # The digest as the trainer computes it (trainer/task_runner.py).
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=model_uri, dst_path=str(root / "trainer-side")
    )
    event = fresh(
        ModelReadyEvent,
        model_name=MODEL,
        model_version=str(version.version),
        model_uri=model_uri,
        artifact_sha256=weights_sha256(Path(local)),
        embedding_dim=384,
    )
    yield Registered(Settings.load(mlflow_tracking_uri=uri), event, root / "artifacts")
