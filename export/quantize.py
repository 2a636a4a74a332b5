"""Static INT8 for CPUs: ONNX Runtime's quantization in QDQ format, int8 weights per output channel and uint8
activations (what AVX-512 VNNI's integer dot products take), calibrated on real images and checked against the
fp32 graph on images held out from calibration.

Calibration images, by default: scikit-image's and scikit-learn's bundled photos for ImageNet-style models, the
training split of scikit-learn's digits for digit models (whose test split then gives fp32 and int8 accuracy);
or `--calibration DIR`, the user's own images, a third of them held out.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from modelrepo.schema import Quantization
from models import ModelCard
from models.data import EvalTransform, digits_split, digits_tensors

# Bundled with scikit-image (no download): colour photos, and grayscale ones used as RGB.
SKIMAGE_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "cat",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "colorwheel",
    "camera",
    "coins",
    "horse",
    "clock",
    "moon",
    "page",
    "text",
    "brick",
    "grass",
    "gravel",
)
HELD_OUT_EVERY = 3  # every third image is held out of calibration, to measure agreement on
DIGITS_CALIBRATION = 256  # training digits calibrated on
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif"}
METHOD = "static QDQ: int8 weights per channel, uint8 activations, MinMax calibration"


def bundled_photos() -> list[Image.Image]:
    from skimage import data
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(getattr(data, name)()) for name in SKIMAGE_PHOTOS]
    photos += [Image.fromarray(image) for image in load_sample_images().images]  # china, flower
    return photos


def folder_images(folder: Path) -> list[Image.Image]:
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(paths) < HELD_OUT_EVERY:
        raise SystemExit(
            f"error: --calibration {folder}: needs at least {HELD_OUT_EVERY} images (one in {HELD_OUT_EVERY} is held "
            f"out to measure agreement), found {len(paths)}"
        )
    return [Image.open(p) for p in paths]


def _preprocessed(images: list[Image.Image], card: ModelCard) -> np.ndarray:
    mode = "RGB" if card.input_size[0] == 3 else "L"
    transform = EvalTransform(card)
    return np.stack([transform(image.convert(mode)).numpy() for image in images]).astype(np.float32)


def calibration_set(card: ModelCard, folder: Path | None) -> tuple[str, np.ndarray, np.ndarray, np.ndarray | None]:
    """(what it is, calibration inputs, held-out inputs, held-out labels or None), each input (N, C, H, W)
    as the model takes it. Photos are also calibrated on mirrored, so that a few cover more activations."""
    if folder is None and card.label_set == "digits":
        x, y = digits_tensors(card)
        train, test = digits_split()
        return (
            "scikit-learn digits, training split",
            x[train[:DIGITS_CALIBRATION]].numpy(),
            x[test].numpy(),
            y[test].numpy(),
        )
    images = folder_images(folder) if folder is not None else bundled_photos()
    name = str(folder) if folder is not None else "scikit-image and scikit-learn bundled photos"
    inputs = _preprocessed(images, card)
    held = np.arange(len(inputs)) % HELD_OUT_EVERY == HELD_OUT_EVERY - 1
    calibration = inputs[~held]
    return name, np.concatenate([calibration, calibration[..., ::-1]]), inputs[held], None


def _ort_quantization():
    """onnxruntime.quantization, imported when first used: it imports onnxruntime.transformers, which appends its
    folder to sys.path, and the `models` package there would shadow this project's. sys.path is put back."""
    saved = list(sys.path)
    try:
        from onnxruntime import quantization
        from onnxruntime.quantization import shape_inference
    finally:
        sys.path[:] = saved
    return quantization, shape_inference


def quantize(fp32_path: Path, int8_path: Path, calibration: np.ndarray) -> None:
    """Write the INT8 graph of `fp32_path` to `int8_path`: shapes inferred and the graph optimized first, as ONNX
    Runtime's guide says, then quantized with activation ranges from `calibration`."""
    quantization, shape_inference = _ort_quantization()

    class Batches(quantization.CalibrationDataReader):
        def __init__(self, input_name: str):
            self._batches = iter({input_name: x[None]} for x in np.ascontiguousarray(calibration))

        def get_next(self) -> dict | None:
            return next(self._batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        shape_inference.quant_pre_process(str(fp32_path), str(prepared))
        input_name = ort.InferenceSession(str(prepared), providers=["CPUExecutionProvider"]).get_inputs()[0].name
        quantization.quantize_static(
            str(prepared),
            str(int8_path),
            Batches(input_name),
            quant_format=quantization.QuantFormat.QDQ,
            per_channel=True,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            calibrate_method=quantization.CalibrationMethod.MinMax,
        )


def _logits(path: Path, inputs: np.ndarray, batch: int = 16) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: inputs[i : i + batch]})[0] for i in range(0, len(inputs), batch)])


def agreement(
    fp32_path: Path,
    int8_path: Path,
    source: str,
    calibrated: int,
    held: np.ndarray,
    labels: np.ndarray | None,
) -> Quantization:
    """INT8 against fp32 on the held-out inputs: the same top class, the top 5 shared, the logits' relative
    error (the largest over the images), and accuracy of both where the inputs have labels."""
    reference, quantized = _logits(fp32_path, held).astype(np.float64), _logits(int8_path, held).astype(np.float64)
    k = min(5, reference.shape[1])
    top_ref, top_q = np.argsort(-reference, axis=1)[:, :k], np.argsort(-quantized, axis=1)[:, :k]
    shared = [len(set(a) & set(b)) / k for a, b in zip(top_ref, top_q, strict=True)]
    relative = np.linalg.norm(quantized - reference, axis=1) / np.maximum(np.linalg.norm(reference, axis=1), 1e-12)
    accuracy = {}
    if labels is not None:
        accuracy = {
            "test_fp32": float(np.mean(reference.argmax(1) == labels)),
            "test_int8": float(np.mean(quantized.argmax(1) == labels)),
        }
    return Quantization(
        method=METHOD,
        calibration=source,
        calibration_inputs=calibrated,
        held_out_inputs=len(held),
        top1_agreement=float(np.mean(top_ref[:, 0] == top_q[:, 0])),
        top5_agreement=float(np.mean(shared)),
        max_rel_diff_logits=float(relative.max()),
        accuracy=accuracy,
    )
