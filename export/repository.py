"""What export knows of a model's repository entry (labels, preprocessing and batching from its card), and
writing one exported version of it."""

import functools
from datetime import UTC, datetime
from pathlib import Path

import torch

import modelrepo.write
from modelrepo.schema import (
    DEFAULT_LATENCY_SLO_MS,
    Batching,
    ModelSpec,
    Parity,
    Preprocessing,
    Quantization,
    TensorSpec,
    Version,
    Weights,
)
from models import ModelCard

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
    measured: dict | None = None,
) -> Path:
    """The exported file as a new version of the card's model (modelrepo/write.py: written atomically). `measured`:
    what export measured for the card (export/complexity.py: parameters and GFLOPs)."""
    channels, height, width = card.input_size
    spec = ModelSpec(
        name=card.name,
        card={**card.to_dict(), **(measured or {})},
        input=TensorSpec(name="input", dtype="uint8" if uint8 else "float32", shape=(-1, channels, height, width)),
        output=TensorSpec(name="logits", dtype="float32", shape=(-1, card.num_classes), layout="NC"),
        preprocessing=preprocessing_for(card).model_copy(update={"fused": uint8}),
        batching=default_batching(card),
    )
    entry = functools.partial(
        Version,
        precision=precision,
        weights=weights,
        parity=parity,
        quantization=quantization,
        opset=opset,
        exporter=f"torch {torch.__version__}",
        exported_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    return modelrepo.write.write_version(repository, spec, onnx_path, labels_for(card, labels), entry, version)
