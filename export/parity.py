"""Check an exported ONNX file against the PyTorch model it came from, on the same input."""

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from modelrepo.schema import Parity

# fp32: max |softmax difference|. fp16 weights round to 11 bits, so the bar is looser.
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}


def check_parity(model: nn.Module, onnx_path: str, x: torch.Tensor, precision: str) -> Parity:
    """Run `x` through both; give it a batch size other than the traced one, so the dynamic axis is exercised."""
    with torch.no_grad():
        expected = model(x).double()
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    got = torch.from_numpy(np.asarray(got, dtype=np.float64))
    softmax_diff = (got.softmax(-1) - expected.softmax(-1)).abs().max().item()
    rel_logits = ((got - expected).norm() / expected.norm().clamp_min(1e-12)).item()
    k = min(5, expected.shape[-1])
    top5 = (got.topk(k).indices == expected.topk(k).indices).float().mean().item()
    tolerance = TOLERANCE[precision]
    return Parity(
        max_abs_diff_softmax=softmax_diff,
        max_rel_diff_logits=rel_logits,
        top5_agreement=top5,
        tolerance=tolerance,
        passed=softmax_diff < tolerance,
    )
