"""The engine measured with inputs already bound (here on CPU memory: the path a GPU takes with "cuda"),
and the decode ceiling with the service's decoder."""

import numpy as np
import onnxruntime as ort

from loadtest.images import photo_jpegs
from loadtest.measure import decode_rates, device_points
from tests.service.conftest import write_rgb


def test_bound_points_cover_each_size(tmp_path):
    write_rgb(tmp_path)
    session = ort.InferenceSession(str(tmp_path / "tiny_rgb" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    tensors = list(np.random.default_rng(0).random((3, 3, 16, 16), dtype=np.float32))
    points = device_points(
        session,
        tensors,
        [1, 4],
        0.05,
        output_row_shape=(4,),
        output_dtype=np.dtype(np.float32),
        graphs=False,
        device="cpu",
    )
    assert [(p["batch_size"], p["cuda_graph"]) for p in points] == [(1, False), (4, False)]
    for p in points:
        assert p["runs"] >= 3 and p["images_per_s"] > 0 and p["p50_ms"] <= p["p99_ms"]


def test_decode_ceiling_on_one_core_and_on_all(tmp_path):
    write_rgb(tmp_path)
    jpegs = list(photo_jpegs(names=("chelsea",), sizes=(64,)).values())
    rates = decode_rates(tmp_path, "tiny_rgb", jpegs, cores=2, seconds=0.2)
    assert rates["cores"] == 2
    for key in (
        "one_core_images_per_s",
        "all_cores_processes_images_per_s",
        "all_cores_threads_one_process_images_per_s",
    ):
        assert rates[key] > 0
