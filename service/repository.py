"""Finding models in the repository and reading what the service needs from disk.

Nothing here touches ONNX Runtime: a `ModelSource` is the checked description of one model
version (config, ONNX path, labels); `app.py` turns it into an engine and a batcher.
"""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from service.model_config import ModelConfig

CONFIG_FILE = "config.json"


class RepositoryError(Exception):
    """A model cannot be served as found on disk; the message says why."""


@dataclass(frozen=True)
class ModelSource:
    name: str
    config: ModelConfig
    version: int
    onnx_path: Path
    labels: tuple[str, ...]


def list_models(root: Path) -> list[str]:
    """Every folder in the repository is a model; one without a config.json will fail to load, visibly."""
    if not root.is_dir():
        raise RepositoryError(f"model repository {str(root)!r} is not a directory")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def configured_models(root: Path, names: Sequence[str]) -> list[str]:
    """The models a service serves: `names` (SERVE_MODELS) if any, else every model in the repository."""
    return list(names) or list_models(root)


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def read_config(model_dir: Path) -> ModelConfig:
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        raise RepositoryError(f"{path} is missing")
    try:
        return ModelConfig.model_validate_json(path.read_bytes())
    except ValidationError as e:
        raise RepositoryError(f"{path} is invalid: {e}") from e


def read_labels(path: Path, num_classes: int) -> tuple[str, ...]:
    if not path.is_file():
        raise RepositoryError(f"{path} is missing")
    labels = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    if len(labels) != num_classes:
        raise RepositoryError(f"{path} has {len(labels)} labels, the model outputs {num_classes} classes")
    return labels


def load_source(root: Path, name: str) -> ModelSource:
    """Read and check the latest version of `name`: config, sha256 of the ONNX file, labels, shapes."""
    model_dir = root / name
    if not model_dir.is_dir():
        raise RepositoryError(f"model {name!r} is not in the repository {str(root)!r}")
    config = read_config(model_dir)
    if config.name != name:
        raise RepositoryError(f"{model_dir / CONFIG_FILE} names the model {config.name!r}, its folder is {name!r}")
    if not config.versions:
        raise RepositoryError(f"{model_dir / CONFIG_FILE} lists no versions")
    version = config.latest_version
    entry = config.versions[version]
    onnx_path = model_dir / entry.file
    if not onnx_path.is_file():
        raise RepositoryError(f"{onnx_path} is missing")
    actual = sha256_file(onnx_path)
    if actual != entry.sha256:
        raise RepositoryError(f"{onnx_path} has sha256 {actual}, config.json expects {entry.sha256}")

    pre, spec = config.preprocessing, config.input
    channels = 3 if pre.color_mode == "RGB" else 1
    expected = (channels, *pre.crop_size)
    if len(spec.shape) != 4 or tuple(spec.shape[1:]) != expected:
        raise RepositoryError(f"input shape {spec.shape} does not match preprocessing (N, {expected})")
    if pre.fused != (spec.dtype == "uint8"):
        raise RepositoryError(f"preprocessing fused={pre.fused} does not match input dtype {spec.dtype}")
    if len(config.output.shape) != 2 or config.output.shape[1] < 1:
        raise RepositoryError(f"output shape {config.output.shape} is not (N, num_classes)")
    labels = read_labels(model_dir / config.labels_file, config.output.shape[1])
    return ModelSource(name=name, config=config, version=version, onnx_path=onnx_path, labels=labels)
