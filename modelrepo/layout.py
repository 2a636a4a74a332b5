"""Where each file of a model lives, and which names may become paths."""

import re
from pathlib import Path

CONFIG_FILE = "config.json"
LABELS_FILE = "labels.txt"
MODEL_FILE = "model.onnx"

# A letter or digit first, then letters, digits, "_", "-" and ".": no separators, no "..", no hidden folders.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class RepositoryError(Exception):
    """A model cannot be read or written as asked; the message says why."""


def is_model_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name)) and ".." not in name


def model_dir(root: Path, name: str) -> Path:
    """`root/name`, for a name that is a valid model name (never a path a client could steer elsewhere)."""
    if not is_model_name(name):
        shown = name if len(name) <= 64 else name[:61] + "..."
        raise RepositoryError(f"{shown!r} is not a valid model name (letters, digits, '_', '-', '.')")
    return root / name


def version_file(version: int) -> str:
    """A version's ONNX file, relative to its model's folder, as config.json records it."""
    if version < 1:
        raise RepositoryError(f"versions are numbered from 1, got {version}")
    return f"{version}/{MODEL_FILE}"
