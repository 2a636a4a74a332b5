"""Export registered networks to ONNX into a Triton-style model repository.

    python export/to_onnx.py                        # the default set, into model_repository/
    python export/to_onnx.py --model 'resnet*' --weights random --version 2
    python export/to_onnx.py --model lenet5 --weights checkpoints/lenet5/best.pt

Each export traces with torch.export (dynamic batch axis), checks the graph with
onnx.checker, compares ONNX Runtime's output with PyTorch's, and records everything
(card, I/O spec, preprocessing, weights provenance, parity, sha256) in config.json.
"""

import argparse
import copy
import difflib
import logging
import sys
import tempfile
from pathlib import Path

import onnx
import torch
from torch import nn
from tqdm import tqdm

from export.complexity import complexity
from export.parity import check_parity
from export.quantize import agreement, calibration_set, quantize
from export.repository import write_version
from export.weights import load_weights
from modelrepo.layout import CONFIG_FILE, MODEL_FILE, model_dir
from models import get_card, list_models

log = logging.getLogger("export")

# Small enough for a few minutes on 2 CPU cores; covers a 2015 ResNet, a mobile net and LeNet.
DEFAULT_MODELS = ("resnet50", "mobilenet_v2", "lenet5")


def resolve_names(patterns: list[str]) -> list[str]:
    """Expand names and globs ('all' = the whole zoo); an unknown name lists close matches."""
    names: list[str] = []
    for pattern in patterns:
        matched = list_models() if pattern == "all" else list_models(pattern)
        if not matched:
            close = difflib.get_close_matches(pattern, list_models(), n=5, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else " Run with --list to see the zoo."
            raise SystemExit(f"error: no model matches {pattern!r}.{hint}")
        names += [n for n in matched if n not in names]
    return names


def example_input(batch: int, input_shape: tuple[int, ...], uint8: bool, seed: int | None = None) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    if uint8:
        return torch.randint(0, 256, (batch, *input_shape), dtype=torch.uint8, generator=generator)
    return torch.randn(batch, *input_shape, generator=generator)


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: Path, opset: int | None, uint8: bool) -> None:
    """Trace with torch.export, batch dimension dynamic, weights inside the one file."""
    example = example_input(2, input_shape, uint8)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            opset_version=opset,
            verbose=False,
        )
    program.save(str(path), external_data=False)
    onnx.checker.check_model(str(path), full_check=True)


class Fp16(nn.Module):
    """fp16 weights and activations inside, fp32 input and output outside, so clients are unchanged."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.half()).float()


class Normalize(nn.Module):
    """uint8 pixels in, `(x / 255 - mean) / std` into the model: the service's preprocessing ends at
    pixels, and the host ships a quarter of the bytes float32 would take."""

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).reshape(1, -1, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std).reshape(1, -1, 1, 1) * 255)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x.float() - self.mean) / self.std)


def export_one(name: str, args: argparse.Namespace) -> Path:
    loaded = load_weights(name, args.weights)
    model, card = loaded.model, loaded.card
    precision = "fp16" if args.fp16 else "int8" if args.int8 else "fp32"
    exported = Fp16(copy.deepcopy(model)).eval() if args.fp16 else model
    if args.uint8:
        exported, model = Normalize(exported, card.mean, card.std).eval(), Normalize(model, card.mean, card.std).eval()
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / MODEL_FILE
        export_onnx(exported, card.input_size, onnx_path, args.opset, args.uint8)
        x = example_input(3, card.input_size, args.uint8, seed=0)
        graph_precision = (
            "fp16" if args.fp16 else "fp32"
        )  # an int8 version is checked as its fp32 graph, then quantized
        parity = check_parity(model, str(onnx_path), x, graph_precision) if args.check else None
        if parity and not parity.passed:
            raise SystemExit(
                f"error: {name}: ONNX Runtime disagrees with PyTorch (max softmax diff "
                f"{parity.max_abs_diff_softmax:.2e} > {parity.tolerance:.0e}); not written"
            )
        opset = onnx.load(str(onnx_path), load_external_data=False).opset_import[0].version
        quantization = None
        if args.int8:  # the fp32 graph, checked against PyTorch above, is what gets quantized
            source, calibration, held, labels = calibration_set(card, args.calibration)
            int8_path = Path(tmp) / "model.int8.onnx"
            quantize(onnx_path, int8_path, calibration)
            quantization = agreement(onnx_path, int8_path, source, len(calibration), held, labels)
            log.info("%s: int8 against fp32 on %d held-out inputs: %s", name, len(held), quantization)
            onnx_path, parity = int8_path, None
        return write_version(
            Path(args.output),
            card,
            onnx_path,
            loaded.weights,
            parity,
            precision,
            opset,
            loaded.labels,
            args.version,
            uint8=args.uint8,
            quantization=quantization,
            measured=complexity(model, card.input_size),
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", help="name or glob, repeatable; 'all' for the zoo")
    p.add_argument("--weights", default="auto", help="auto | random | imagenet | PATH to a checkpoint")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    p.add_argument("--fp16", action="store_true", help="export fp16 weights and activations (fp32 I/O)")
    p.add_argument("--uint8", action="store_true", help="uint8 pixel input, normalization inside the graph")
    p.add_argument(
        "--int8", action="store_true", help="static INT8 (QDQ) for CPUs, calibrated on real images (export/quantize.py)"
    )
    p.add_argument(
        "--calibration", type=Path, default=None, help="with --int8: a folder of your images to calibrate on"
    )
    p.add_argument("--output", default="model_repository", help="model repository folder")
    p.add_argument("--version", type=int, default=None, help="version number (default: latest + 1, or 1)")
    p.add_argument("--no-check", dest="check", action="store_false", help="skip the ONNX Runtime parity check")
    p.add_argument("--if-missing", action="store_true", help="skip models the repository already has")
    p.add_argument("--list", action="store_true", help="list the zoo and exit")
    args = p.parse_args(argv)
    if args.int8 and (args.fp16 or args.uint8):
        p.error("--int8 quantizes the fp32 graph with float input: not with --fp16 or --uint8")
    if args.calibration is not None and not args.int8:
        p.error("--calibration goes with --int8")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    # Without torchvision the exporter warns about each detection op it cannot register (nms, roi_align,
    # ...) on every export; no classifier here uses them.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    args = parse_args(argv)
    if args.list:
        for name in list_models():
            card = get_card(name)
            print(f"{name:16s} {card.year}  {card.paper}")
        return 0
    names = resolve_names(args.model or list(DEFAULT_MODELS))
    if args.if_missing:
        names = [n for n in names if not (model_dir(Path(args.output), n) / CONFIG_FILE).exists()]
    for name in tqdm(names, desc="export", unit="model", disable=len(names) == 1):
        path = export_one(name, args)
        log.info("%s -> %s", name, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
