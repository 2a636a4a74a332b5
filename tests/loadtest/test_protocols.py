import pytest

from loadtest.protocols import bytes_tensor, measure, table, variants
from loadtest.server import free_port, running_service, tree_cpu_seconds
from tests.service.conftest import image_bytes, write_rgb


def point(run: str, variant: str, images_per_s: float, cpu: float = 1.0) -> dict:
    return {
        "model": "m",
        "run": run,
        "variant": variant,
        "images_per_s": images_per_s,
        "p50_ms": 1.0,
        "p99_ms": 2.0,
        "errors": {"429": 2},
        "server_cpu_cores": cpu,
        "loadgen_cpu_cores": 0.5,
    }


def test_table_compares_with_v1_of_the_same_run():
    rows = table(
        [
            point("as exported", "v1 classify, JPEG", 100),
            point("as exported", "gRPC, FP32 tensor", 250, cpu=0.5),
            point("uint8 export", "v1 classify, JPEG", 200),
            point("uint8 export", "gRPC, UINT8 tensor", 300),
        ]
    ).splitlines()
    assert "| gRPC, FP32 tensor | 250.0 | 2.50 |" in rows[3] and "| 2.00 |" in rows[3]  # 0.5 cores / 250 images/s
    assert "| gRPC, UINT8 tensor | 300.0 | 1.50 |" in rows[5]
    assert "| 2 |" in rows[5]  # errors counted


def test_bytes_tensor_is_length_prefixed():
    assert bytes_tensor([b"ab", b""]) == b"\x02\x00\x00\x00ab\x00\x00\x00\x00"


@pytest.mark.parametrize("uint8", [False, True])
def test_every_variant_gets_answers(tmp_path, uint8):
    write_rgb(tmp_path, uint8=uint8)
    grpc_port = free_port()
    env = {"SERVE_GRPC_PORT": str(grpc_port), "SERVE_PROVIDERS": "cpu", "SERVE_WORKERS": "1"}
    jpegs = [image_bytes((200, 10, 10), fmt="JPEG"), image_bytes((10, 10, 200), fmt="JPEG")]
    with running_service(tmp_path, [], env=env, timeout=120) as (url, proc):
        found = variants(url, f"127.0.0.1:{grpc_port}", "tiny_rgb", jpegs, tmp_path, tensors=uint8)
        tensors = (
            {"V2 binary, UINT8 tensor", "gRPC, UINT8 tensor"}
            if uint8
            else {"V2 binary, FP32 tensor", "gRPC, FP32 tensor"}
        )
        images = set() if uint8 else {"V2 JSON, BYTES (base64 JPEG)", "V2 binary, BYTES (JPEG)", "gRPC, BYTES (JPEG)"}
        assert set(found) == {"v1 classify, JPEG"} | images | tensors
        for name, connect in found.items():
            result = measure(name, connect, concurrency=2, seconds=0.3, server_cpu=lambda: tree_cpu_seconds(proc.pid))
            assert result["requests"] >= 2 and result["errors"] == {}, (name, result)
