"""The indexer-side helper: a model handed out only if its weights match ``model_ready``, and
safetensors only everywhere a model is loaded.

Exercised for real: the offline all-MiniLM-L6-v2 logged with MLflow's sentence_transformers
flavor and registered in an MLflow store on sqlite (artifacts in a temporary directory); the
digest computed as the trainer computes it; the stored weights then tampered with on disk.
Pickle-only model folders are made with ``torch.save`` from the real weights.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from producer.model_fetch import ModelIntegrityError, UnsafeModelError, fetch_model, load_model
from schemas import ModelReadyEvent
from tests.factories import fresh
from tests.producer.conftest import MODEL, Registered
from trainer.model_source import (
    base_model_path,
    load_sentence_transformer,
    require_safetensors,
    weights_sha256,
)


def test_matching_weights_are_handed_out(registered: Registered, tmp_path: Path) -> None:
    path = fetch_model(registered.event, tmp_path / "models", settings=registered.settings)
    assert path == tmp_path / "models" / f"{MODEL}-v{registered.event.model_version}"
    assert weights_sha256(path) == registered.event.artifact_sha256
    assert [p.name for p in (tmp_path / "models").iterdir()] == [path.name]  # no leftovers
    model = load_model(path, device="cpu")  # the flavor's folder inside the MLflow model
    assert model.encode(["lamp"]).shape == (1, registered.event.embedding_dim)


def test_tampered_weights_are_refused(registered: Registered, tmp_path: Path) -> None:
    stored = sorted(registered.artifacts.rglob("*.safetensors"))
    assert stored, "the registered model keeps safetensors weights"
    target = stored[0]
    original = target.read_bytes()
    tampered = bytearray(original)
    tampered[-1] ^= 0x01  # one bit of one weight
    target.write_bytes(bytes(tampered))
    try:
        with pytest.raises(ModelIntegrityError, match="refusing the model") as err:
            fetch_model(registered.event, tmp_path / "models", settings=registered.settings)
        assert registered.event.artifact_sha256 in str(err.value)
    finally:
        target.write_bytes(original)
    assert list((tmp_path / "models").iterdir()) == []  # nothing handed out, nothing left


def test_an_event_with_another_digest_is_refused(registered: Registered, tmp_path: Path) -> None:
    forged = registered.event.model_copy(update={"artifact_sha256": "0" * 64})
    with pytest.raises(ModelIntegrityError):
        fetch_model(forged, tmp_path / "models", settings=registered.settings)


def _pickle_only(tmp_path: Path, keep_safetensors: bool = False) -> Path:
    """The base model's folder with its weights as a pickle (pytorch_model.bin)."""
    folder = tmp_path / "pickled"
    shutil.copytree(base_model_path("all-MiniLM-L6-v2"), folder)
    weights = folder / "model.safetensors"
    torch.save(load_file(weights), folder / "pytorch_model.bin")
    if not keep_safetensors:
        weights.unlink()
    return folder


def test_a_model_whose_weights_are_only_a_pickle_is_refused_everywhere(tmp_path: Path) -> None:
    folder = _pickle_only(tmp_path)
    for load in (require_safetensors, base_model_path, load_sentence_transformer):
        with pytest.raises(UnsafeModelError, match=r"pytorch_model\.bin"):
            load(folder)  # type: ignore[operator]
    event = fresh(ModelReadyEvent, model_uri=str(folder), artifact_sha256="a" * 64)
    with pytest.raises(UnsafeModelError, match="only as safetensors"):
        fetch_model(event, tmp_path / "models")
    # A pickle in a module folder (a Dense layer's weights) is refused the same way.
    dense = _pickle_only(tmp_path / "dense", keep_safetensors=True)
    (dense / "2_Dense").mkdir()
    torch.save({"linear.weight": torch.zeros(2, 2)}, dense / "2_Dense" / "pytorch_model.bin")
    with pytest.raises(UnsafeModelError, match=r"2_Dense/pytorch_model\.bin"):
        require_safetensors(dense)


def test_a_pickle_beside_safetensors_is_never_read(tmp_path: Path) -> None:
    """Hugging Face folders often ship both; transformers reads the safetensors one, and
    clicktune tells it not to fall back."""
    folder = _pickle_only(tmp_path, keep_safetensors=True)
    (folder / "pytorch_model.bin").write_bytes(b"not even a pickle")  # would fail if read
    model = load_sentence_transformer(folder, device="cpu")
    assert model.encode(["lamp"]).shape == (1, 384)
    event = fresh(ModelReadyEvent, model_uri=str(folder), artifact_sha256=weights_sha256(folder))
    path = fetch_model(event, tmp_path / "models")
    assert json.loads((path / "config.json").read_text())["hidden_size"] == 384
