"""Indexer side: fetch the model a ``model_ready`` event announces, and hand it out only if
its weights are the ones the trainer published.

>>> async with subscribe_model_ready(settings, group_id="indexer") as events:
...     async for event in events:
...         path = fetch_model(event, Path("/models") / event.model_version, settings=settings)
...         model = load_model(path)  # safetensors only
...         reembed_catalog(model)

The trainer puts ``artifact_sha256`` in the event: sha256 over the model's ``.safetensors``
files (``trainer.model_source.weights_sha256``: relative path, then content, in path order).
:func:`fetch_model` downloads the model (an MLflow ``models:/`` or ``runs:/`` URI, any other
MLflow artifact URI, or a local directory), refuses weights that are pickles, recomputes the
digest the same way and raises :class:`ModelIntegrityError` on a mismatch, before the caller
sees the path. Nothing it downloaded is left behind when it refuses.
"""

import hmac
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from producer.settings import Settings
from schemas.model_ready import ModelReadyEvent
from trainer.model_source import (
    UnsafeModelError,
    load_sentence_transformer,
    require_safetensors,
    weights_sha256,
)

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["ModelIntegrityError", "UnsafeModelError", "fetch_model", "load_model"]


class ModelIntegrityError(ValueError):
    """The downloaded weights are not the ones the ``model_ready`` event vouches for."""


def _download(uri: str, into: Path, tracking_uri: str | None) -> Path:
    if "://" not in uri or uri.startswith("file://"):
        local = Path(uri.removeprefix("file://"))
        if local.is_dir():
            return Path(shutil.copytree(local, into / "model"))
    import mlflow

    if tracking_uri is not None:
        mlflow.set_tracking_uri(tracking_uri)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(into)))


def fetch_model(event: ModelReadyEvent, dest: Path, *, settings: Settings | None = None) -> Path:
    """Download ``event.model_uri`` and return the model directory,
    ``dest/<model_name>-v<version>``, once its weights are safetensors whose sha256 equals
    ``event.artifact_sha256``.

    ``settings`` gives the MLflow tracking URI for ``models:/`` URIs (default: MLflow's own
    configuration, e.g. ``MLFLOW_TRACKING_URI``). Raises :class:`ModelIntegrityError` or
    :class:`UnsafeModelError` and removes what it downloaded.
    """
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=dest))
    try:
        model_dir = _download(
            event.model_uri, staging, settings.mlflow_tracking_uri if settings else None
        )
        require_safetensors(model_dir)
        digest = weights_sha256(model_dir)
        if not hmac.compare_digest(digest, event.artifact_sha256):
            raise ModelIntegrityError(
                f"{event.model_name} v{event.model_version} ({event.model_uri}): the weights' "
                f"sha256 is {digest}, the model_ready event says {event.artifact_sha256}; "
                "refusing the model"
            )
        final = dest / f"{event.model_name}-v{event.model_version}".replace("/", "_")
        if final.exists():
            shutil.rmtree(final)
        model_dir.rename(final)
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_model(path: Path, **kwargs: Any) -> "SentenceTransformer":
    """Load a model :func:`fetch_model` handed out (safetensors only, nothing pickled).
    ``path`` may be the MLflow model folder: the sentence-transformers folder in it (the one
    with ``modules.json``) is found."""
    require_safetensors(path)
    if not (path / "modules.json").is_file():
        found = sorted(path.rglob("modules.json"))
        if len(found) != 1:
            raise FileNotFoundError(f"{path}: no single sentence-transformers folder in it")
        path = found[0].parent
    return load_sentence_transformer(path, **kwargs)
