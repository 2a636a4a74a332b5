"""Write one exported version into the model repository and keep config.json current."""

import hashlib
import shutil
from datetime import UTC, datetime
from pathlib import Path

import torch

from models import ModelCard
from service.model_config import (
    Batching,
    ModelConfig,
    Parity,
    Preprocessing,
    Quantization,
    TensorSpec,
    Version,
    Weights,
)

LABELS = Path(__file__).resolve().parents[1] / "models" / "labels"


def labels_for(card: ModelCard, labels: list[str] | None) -> list[str]:
    """Class names: a checkpoint's own, else the card's label set; always num_classes of them."""
    names = labels or (LABELS / f"{card.label_set}.txt").read_text().splitlines()
    if len(names) != card.num_classes:
        raise ValueError(f"{card.name}: {len(names)} labels for {card.num_classes} classes")
    return names


def preprocessing_for(card: ModelCard) -> Preprocessing:
    channels, height, width = card.input_size
    return Preprocessing(
        color_mode="RGB" if channels == 3 else "L",
        resize_size=card.resize_size,
        crop_size=(height, width),
        interpolation=card.interpolation,
        mean=card.mean,
        std=card.std,
    )


# Each image's time from queued to answered that the service keeps under, batching and refusing accordingly: an
# interactive answer with room to batch; SERVE_LATENCY_SLO_MS or config.json's latency_slo_ms change it.
DEFAULT_LATENCY_SLO_MS = 250.0


def default_batching(card: ModelCard) -> Batching:
    """Tiny nets batch wide; big ones batch less so one batch doesn't hold a request for long."""
    pixels = card.input_size[1] * card.input_size[2]
    max_batch = 64 if pixels <= 64 * 64 else 32
    return Batching(
        max_batch_size=max_batch,
        preferred_batch_sizes=tuple(2**i for i in range(max_batch.bit_length())),
        max_queue_delay_ms=2.0,
        max_queue_size=8 * max_batch,
        latency_slo_ms=DEFAULT_LATENCY_SLO_MS,
    )


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_version(
    repository: Path,
    card: ModelCard,
    onnx_path: Path,
    weights: Weights,
    parity: Parity | None,
    precision: str,
    opset: int,
    labels: list[str] | None = None,
    version: int | None = None,
    *,
    uint8: bool = False,
    quantization: Quantization | None = None,
) -> Path:
    """Copy the ONNX file to <repo>/<name>/<version>/model.onnx and merge its entry into config.json."""
    folder = repository / card.name
    config_path = folder / "config.json"
    previous = ModelConfig.model_validate_json(config_path.read_text()) if config_path.exists() else None
    versions = dict(previous.versions) if previous else {}
    version = version or (max(versions) + 1 if versions else 1)
    target = folder / str(version) / "model.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, target)
    (folder / "labels.txt").write_text("\n".join(labels_for(card, labels)) + "\n")
    channels, height, width = card.input_size
    versions[version] = Version(
        file=f"{version}/model.onnx",
        sha256=sha256_of(target),
        precision=precision,
        weights=weights,
        parity=parity,
        quantization=quantization,
        opset=opset,
        exporter=f"torch {torch.__version__}",
        exported_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    config = ModelConfig(
        name=card.name,
        card=card.to_dict(),
        input=TensorSpec(name="input", dtype="uint8" if uint8 else "float32", shape=(-1, channels, height, width)),
        output=TensorSpec(name="logits", dtype="float32", shape=(-1, card.num_classes), layout="NC"),
        preprocessing=preprocessing_for(card).model_copy(update={"fused": uint8}),
        batching=previous.batching if previous else default_batching(card),
        versions=versions,
    )
    config_path.write_text(config.model_dump_json(indent=2) + "\n")
    return target
