"""gpu_check's judgement, on made-up results (its runs need a GPU), and its honest failure on a CPU host."""

import json

import numpy as np

from loadtest import gpu_check
from tests.service.conftest import write_rgb


def mode(**changes) -> dict:
    good = {
        "providers_in_use": ["CUDAExecutionProvider", "CPUExecutionProvider"],
        "cuda_graph_batch_sizes": [1, 2, 4],
        "vs_cpu": {"relative_error": 2e-6, "top1_same": True, "top5_same": True},
        "padded_rows_max_diff": 1e-6,
        "in_flight_mismatches": 0,
    }
    return good | changes


def test_a_good_fp32_run_passes_and_each_defect_is_named():
    assert gpu_check.failures(mode(), "fp32", graphs=True) == []
    cpu = gpu_check.failures(mode(providers_in_use=["CPUExecutionProvider"]), "fp32", graphs=False)
    assert cpu == ["running on CPUExecutionProvider, not CUDA"]
    assert gpu_check.failures(mode(cuda_graph_batch_sizes=[]), "fp32", graphs=True) == ["no CUDA graph captured"]
    far = {"relative_error": 5e-3, "top1_same": True, "top5_same": True}
    assert "fp32 differs from CPU" in gpu_check.failures(mode(vs_cpu=far), "fp32", graphs=False)[0]
    assert gpu_check.failures(mode(vs_cpu=far), "fp16", graphs=False) == []  # fp16's error is recorded, not judged
    flipped = {"relative_error": 5e-3, "top1_same": False, "top5_same": False}
    assert gpu_check.failures(mode(vs_cpu=flipped), "fp16", graphs=False) == ["top-1 differs from CPU"]
    assert "in flight" in gpu_check.failures(mode(in_flight_mismatches=2), "fp32", graphs=False)[0]


def test_relative_error_against_all_zero_logits_is_absolute():
    assert gpu_check.relative_error(np.zeros((2, 3)), np.zeros((2, 3))) == 0.0
    assert gpu_check.relative_error(np.full((1, 4), 0.5), np.zeros((1, 4))) == 1.0
    assert gpu_check.relative_error(np.array([[1.0, 2.0]]), np.array([[1.0, 1.0]])) == 1 / np.sqrt(2)


def test_on_a_cpu_host_it_fails_saying_so(tmp_path):
    write_rgb(tmp_path / "repository")
    output = tmp_path / "check.json"
    args = ["--repository", str(tmp_path / "repository"), "--models", "tiny_rgb", "--output", str(output)]
    assert gpu_check.main(args) == 1
    (result,) = json.loads(output.read_text())["results"]
    assert [m["cuda_graphs_asked"] for m in result["modes"]] == [False, True]
    assert all("not CUDA" in m["failures"][0] for m in result["modes"])
