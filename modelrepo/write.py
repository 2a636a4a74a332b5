"""Writing to the repository so that a reader never sees half of anything: a version's folder is filled under a
hidden name and renamed into place, then config.json (which lists it) is replaced in one rename. A service
polling the repository sees the version only once config.json lists it, and by then its file is whole."""

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from modelrepo.checksum import sha256_file
from modelrepo.layout import CONFIG_FILE, LABELS_FILE, MODEL_FILE, model_dir, version_file
from modelrepo.schema import ModelConfig, ModelSpec, Version

VersionEntry = Callable[..., Version]  # (file=..., sha256=...) -> the version's entry, the rest already bound


def _replace_file(path: Path, text: str) -> None:
    """`path` holds `text`, whole, from one instant to the next (a temporary file renamed over it)."""
    fd, partial = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def write_config(root: Path, config: ModelConfig) -> Path:
    """Replace `config.name`'s config.json in one step."""
    config = ModelConfig.model_validate(config.model_dump())  # model_copy skips the validators; this does not
    path = model_dir(root, config.name) / CONFIG_FILE
    _replace_file(path, config.model_dump_json(indent=2) + "\n")
    return path


def write_version(
    root: Path,
    spec: ModelSpec,
    onnx_file: Path,
    labels: Sequence[str],
    entry: VersionEntry,
    version: int | None = None,
) -> Path:
    """Add `onnx_file` as `version` of `spec.name` (default: one past the newest) and return where it landed.
    `spec` gives the card, tensors and preprocessing; the versions already there are kept, and so are the
    batching, instances, tuning and version policy that config.json already has (a user's or `make tune`'s choices
    outlive a re-export). Rewriting a version that exists replaces its folder (readers of that version may briefly
    find it missing, never half written)."""
    folder = model_dir(root, spec.name)
    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / CONFIG_FILE
    previous = ModelConfig.model_validate_json(config_path.read_bytes()) if config_path.exists() else None
    versions = dict(previous.versions) if previous else {}
    version = version or (max(versions) + 1 if versions else 1)
    relative = version_file(version)

    staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=folder))
    try:
        shutil.copyfile(onnx_file, staging / MODEL_FILE)
        with (staging / MODEL_FILE).open("rb") as f:
            os.fsync(f.fileno())
        sha256 = sha256_file(staging / MODEL_FILE)
        target = folder / str(version)
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{version}.old.", dir=folder))
            target.rename(retired / "version")
            try:
                staging.rename(target)
            except BaseException:
                (retired / "version").rename(target)  # the old version back where it was
                retired.rmdir()
                raise
            shutil.rmtree(retired)
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    if previous is not None:
        kept = {name: getattr(previous, name) for name in ("batching", "instances", "tuning", "version_policy")}
        spec = spec.model_copy(update=kept)
    versions[version] = entry(file=relative, sha256=sha256)
    labels_text = "\n".join(labels) + "\n"
    labels_path = folder / LABELS_FILE
    if not labels_path.exists() or labels_path.read_text(encoding="utf-8") != labels_text:
        _replace_file(labels_path, labels_text)
    write_config(root, ModelConfig.model_validate({**spec.model_dump(), "versions": versions}))
    return folder / relative
