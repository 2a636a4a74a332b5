"""Reading models from the repository: a `ModelSource` is one checked version of one model (config, ONNX path,
labels), ready for the service to build a session from. Nothing here touches ONNX Runtime."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from modelrepo.checksum import sha256_file
from modelrepo.layout import CONFIG_FILE, RepositoryError, is_model_name, model_dir
from modelrepo.schema import ModelConfig


@dataclass(frozen=True)
class ModelSource:
    name: str
    config: ModelConfig
    version: int
    onnx_path: Path
    labels: tuple[str, ...]
    size_bytes: int = 0  # of the ONNX file, as it was read


def list_models(root: Path) -> list[str]:
    """Every folder of the repository with a valid model name is a model; one without a config.json will fail
    to load, visibly. Hidden folders (a write in progress) are not models."""
    if not root.is_dir():
        raise RepositoryError(f"model repository {str(root)!r} is not a directory")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and is_model_name(p.name))


def configured_models(root: Path, names: Sequence[str]) -> list[str]:
    """The models a service serves: `names` (SERVE_MODELS) if any, else every model in the repository. A name
    that is not a model name fails to load, visibly (load_source), like one that is not there."""
    return list(names) or list_models(root)


def read_config(folder: Path) -> ModelConfig:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise RepositoryError(f"{path} is missing")
    try:
        return ModelConfig.model_validate_json(path.read_bytes())
    except ValidationError as e:
        raise RepositoryError(f"{path} is invalid: {e}") from e
    except OSError as e:
        raise RepositoryError(f"{path} cannot be read: {e}") from e


def read_labels(path: Path, num_classes: int) -> tuple[str, ...]:
    if not path.is_file():
        raise RepositoryError(f"{path} is missing")
    labels = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    if len(labels) != num_classes:
        raise RepositoryError(f"{path} has {len(labels)} labels, the model outputs {num_classes} classes")
    return labels


def _model_config(root: Path, name: str) -> tuple[Path, ModelConfig]:
    folder = model_dir(root, name)
    if not folder.is_dir():
        raise RepositoryError(f"model {name!r} is not in the repository {str(root)!r}")
    return folder, read_config(folder)


def available_versions(root: Path, name: str) -> tuple[ModelConfig, dict[int, tuple]]:
    """config.json, and the versions it lists whose file is there, each with a fingerprint that changes when its
    entry or its file does (a service polling the repository reloads a version whose fingerprint changed).
    Removing a version's folder makes it unavailable."""
    folder, config = _model_config(root, name)
    available = {}
    for version, entry in config.versions.items():
        try:
            stat = (folder / entry.file).stat()
        except FileNotFoundError:
            continue
        available[version] = (entry.sha256, stat.st_size, stat.st_mtime_ns)
    return config, available


def load_source(root: Path, name: str, version: int | None = None) -> ModelSource:
    """Read and check `version` of `name` (default: the latest): config, sha256 of the ONNX file, labels."""
    folder, config = _model_config(root, name)
    if config.name != name:
        raise RepositoryError(f"{folder / CONFIG_FILE} names the model {config.name!r}, its folder is {name!r}")
    version = config.latest_version if version is None else version
    entry = config.versions.get(version)
    if entry is None:
        raise RepositoryError(f"model {name!r} has no version {version}; it has {sorted(config.versions)}")
    onnx_path = folder / entry.file
    if not onnx_path.is_file():
        raise RepositoryError(f"{onnx_path} is missing")
    size = onnx_path.stat().st_size
    actual = sha256_file(onnx_path)
    if actual != entry.sha256:
        raise RepositoryError(f"{onnx_path} has sha256 {actual}, config.json expects {entry.sha256}")
    labels = read_labels(folder / config.labels_file, config.output.shape[1])
    return ModelSource(name=name, config=config, version=version, onnx_path=onnx_path, labels=labels, size_bytes=size)
