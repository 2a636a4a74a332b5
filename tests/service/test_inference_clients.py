"""The Open Inference Protocol with clients this project did not write: tritonclient's HTTP and gRPC clients, and
the KServe SDK's V2 REST client, against `python -m service` in each process layout. Tiny models whose logits
are computable by hand (tests/service/conftest.py) check every answer; a real photo checks that V2's BYTES
input and /v1/classify decode alike."""

import base64
import io
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from loadtest.images import photo_jpegs
from loadtest.server import ROOT, free_port, running_service
from tests.service.conftest import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    expected_rgb_logits,
    image_bytes,
    write_model,
    write_rgb,
)

TEN_LABELS = tuple(f"class {i}" for i in range(10))
TEN_WEIGHT = np.random.default_rng(0).normal(size=(3, 10)).astype(np.float32)
TEN_BIAS = np.zeros(10, dtype=np.float32)
COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (0, 0, 0), (200, 100, 50), (10, 200, 220), (128, 128, 128)]


class Service:
    def __init__(self, url: str, grpc_port: int):
        self.url = url
        self.http = httpclient.InferenceServerClient(url.removeprefix("http://"), concurrency=8)
        self.grpc_address = f"127.0.0.1:{grpc_port}"
        self.grpc = grpcclient.InferenceServerClient(self.grpc_address)

    def close(self) -> None:
        self.http.close()
        self.grpc.close()


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("v2_repository")
    write_rgb(root)
    write_rgb(root, "tiny_uint8", uint8=True)
    write_model(root, "tiny_ten", weight=TEN_WEIGHT, bias=TEN_BIAS, labels=TEN_LABELS, crop=64, resize=72)
    return root


@pytest.fixture(scope="module", params=["one process", "workers"])
def service(request, repo):
    grpc_port = free_port()
    env = {
        "SERVE_WORKERS": "1" if request.param == "one process" else "2",
        "SERVE_GRPC_PORT": str(grpc_port),
        "SERVE_PROVIDERS": "cpu",
        "SERVE_INTRA_OP_THREADS": "1",
    }
    with running_service(repo, [], env=env, timeout=120) as (url, _):
        service = Service(url, grpc_port)
        yield service
        service.close()


def solid_tensor(color, size: int = 16, dtype=np.float32) -> np.ndarray:
    """What a client preprocesses itself: (1, 3, size, size), normalized float32 or raw uint8 pixels."""
    pixels = np.broadcast_to(np.array(color, np.uint8).reshape(1, 3, 1, 1), (1, 3, size, size))
    if dtype == np.uint8:
        return np.ascontiguousarray(pixels)
    mean = np.array(IMAGENET_MEAN, np.float32).reshape(1, 3, 1, 1)
    std = np.array(IMAGENET_STD, np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray(((pixels / np.float32(255) - mean) / std).astype(np.float32))


def http_input(array: np.ndarray, datatype: str, binary: bool = True) -> httpclient.InferInput:
    tensor = httpclient.InferInput("input", list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def grpc_input(array: np.ndarray, datatype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("input", list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def parse_classes(strings: np.ndarray) -> list[tuple[float, int, str]]:
    """Triton's classification extension: "score:index:label" per class, highest first."""
    out = []
    for item in strings:
        text = item.decode() if isinstance(item, bytes) else item  # tritonclient gives JSON's strings as str
        score, index, label = text.split(":", 2)
        out.append((float(score), int(index), label))
    return out


def test_health_and_metadata(service):
    for client in (service.http, service.grpc):
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("tiny_rgb") and client.is_model_ready("tiny_rgb", "1")
        assert not client.is_model_ready("tiny_rgb", "2")  # only version 1 is served
    metadata = service.http.get_server_metadata()
    assert metadata["name"] == "cnn-serve"
    assert {"classification", "binary_tensor_data", "model_configuration"} <= set(metadata["extensions"])
    model = service.http.get_model_metadata("tiny_rgb")
    assert model["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 16, 16]}]
    assert model["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 4]}]
    grpc_model = service.grpc.get_model_metadata("tiny_uint8", as_json=True)
    assert grpc_model["inputs"] == [{"name": "input", "datatype": "UINT8", "shape": ["-1", "3", "16", "16"]}]
    assert service.grpc.get_server_metadata().name == "cnn-serve"


def image_client_inputs(config: dict, metadata: dict, image: Image.Image) -> tuple[str, str, np.ndarray]:
    """What Triton's image client does with a model it is pointed at: input and output names, layout and size
    from the metadata and config; the image resized to that size and scaled (here with ImageNet's statistics)."""
    assert len(metadata["inputs"]) == 1 and len(metadata["outputs"]) == 1
    assert metadata["outputs"][0]["datatype"] == "FP32"
    batched = config["max_batch_size"] > 0
    shape = metadata["inputs"][0]["shape"][1:] if batched else metadata["inputs"][0]["shape"]
    assert config["input"][0]["format"] == "FORMAT_NCHW"
    c, h, w = (int(d) for d in shape)
    pixels = np.asarray(image.convert("RGB").resize((w, h), Image.Resampling.BILINEAR), np.float32) / 255
    scaled = (pixels - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    batch = np.ascontiguousarray(scaled.transpose(2, 0, 1)[None].astype(np.float32))
    assert batch.shape == (1, c, h, w)
    return metadata["inputs"][0]["name"], metadata["outputs"][0]["name"], batch


def test_a_triton_image_client_works_unchanged(service):
    """Over HTTP and gRPC: metadata and config as the image client reads them, an FP32 batch it preprocessed,
    and the top 3 classes from the classification extension, scored with the model's own outputs."""
    image = Image.open(io.BytesIO(photo_jpegs(("chelsea",), (224,))["chelsea@224"]))
    http_config = service.http.get_model_config("tiny_ten")
    grpc_config = service.grpc.get_model_config("tiny_ten", as_json=True)["config"]
    assert grpc_config["input"][0]["format"] == http_config["input"][0]["format"] == "FORMAT_NCHW"
    assert int(grpc_config["max_batch_size"]) == http_config["max_batch_size"] >= 1
    name, output, batch = image_client_inputs(http_config, service.http.get_model_metadata("tiny_ten"), image)
    logits = batch.mean(axis=(2, 3)) @ TEN_WEIGHT + TEN_BIAS
    expected = np.argsort(-logits[0], kind="stable")[:3].tolist()

    tensor = httpclient.InferInput(name, list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=True)
    result = service.http.infer("tiny_ten", [tensor], outputs=[httpclient.InferRequestedOutput(output, class_count=3)])
    http_classes = parse_classes(result.as_numpy(output)[0])
    result = service.grpc.infer(
        "tiny_ten", [grpc_input(batch, "FP32")], outputs=[grpcclient.InferRequestedOutput(output, class_count=3)]
    )
    grpc_classes = parse_classes(result.as_numpy(output)[0])
    for classes in (http_classes, grpc_classes):
        assert [index for _, index, _ in classes] == expected
        assert [label for _, _, label in classes] == [TEN_LABELS[i] for i in expected]
        np.testing.assert_allclose([score for score, _, _ in classes], logits[0][expected], rtol=1e-4, atol=1e-4)


def test_bytes_of_a_real_jpeg_answer_as_v1_classify(service):
    jpeg = photo_jpegs(("chelsea",), (320,))["chelsea@320"]
    v1 = httpx.post(f"{service.url}/v1/classify?model=tiny_ten&top_k=5", content=jpeg, timeout=30).json()
    top5 = [(p["index"], p["label"]) for p in v1["results"][0]["predictions"]]
    images = np.array([jpeg], dtype=object)

    answers = []
    for binary in (True, False):  # JSON carries BYTES as base64 text
        tensor = httpclient.InferInput("input", [1], "BYTES")
        if binary:
            tensor.set_data_from_numpy(images, binary_data=True)
        else:
            tensor.set_data_from_numpy(np.array([base64.b64encode(jpeg)], dtype=object), binary_data=False)
        output = httpclient.InferRequestedOutput("logits", binary_data=binary, class_count=5)
        answers.append(service.http.infer("tiny_ten", [tensor], outputs=[output]).as_numpy("logits")[0])
    output = grpcclient.InferRequestedOutput("logits", class_count=5)
    answers.append(
        service.grpc.infer("tiny_ten", [grpc_input(images, "BYTES")], outputs=[output]).as_numpy("logits")[0]
    )
    for strings in answers:
        assert [(index, label) for _, index, label in parse_classes(strings)] == top5

    logits = service.grpc.infer("tiny_ten", [grpc_input(images, "BYTES")]).as_numpy("logits")[0]
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(
        [p["probability"] for p in v1["results"][0]["predictions"]], np.sort(probabilities)[::-1][:5], rtol=1e-4
    )


@pytest.mark.parametrize("model,dtype,datatype", [("tiny_rgb", np.float32, "FP32"), ("tiny_uint8", np.uint8, "UINT8")])
def test_tensors_in_json_binary_and_grpc_agree(service, model, dtype, datatype):
    colors = COLORS[:3]
    batch = np.concatenate([solid_tensor(c, dtype=dtype) for c in colors])
    expected = np.stack([expected_rgb_logits(c) for c in colors])
    answers = [
        service.http.infer(model, [http_input(batch, datatype, binary=False)]).as_numpy("logits"),
        service.http.infer(model, [http_input(batch, datatype, binary=True)]).as_numpy("logits"),
        service.grpc.infer(model, [grpc_input(batch, datatype)]).as_numpy("logits"),
    ]
    for logits in answers:
        np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_errors_are_clear_and_leave_the_service_serving(service):
    batch = solid_tensor(COLORS[0])
    with pytest.raises(InferenceServerException, match="no model named 'nope'") as error:
        service.http.infer("nope", [http_input(batch, "FP32")])
    assert error.value.status() == "404"
    with pytest.raises(InferenceServerException, match="no model named 'nope'") as error:
        service.grpc.infer("nope", [grpc_input(batch, "FP32")])
    assert error.value.status() == "StatusCode.NOT_FOUND"

    wrong = np.zeros((1, 3, 8, 8), np.float32)
    with pytest.raises(InferenceServerException, match=r"has shape \[-1, 3, 16, 16\], got \[1, 3, 8, 8\]") as error:
        service.http.infer("tiny_rgb", [http_input(wrong, "FP32")])
    assert error.value.status() == "400"
    with pytest.raises(InferenceServerException, match=r"got \[1, 3, 8, 8\]") as error:
        service.grpc.infer("tiny_rgb", [grpc_input(wrong, "FP32")])
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException, match="is UINT8") as error:
        service.grpc.infer("tiny_uint8", [grpc_input(batch, "FP32")])
    with pytest.raises(InferenceServerException, match="image 0: not a supported image") as error:
        service.grpc.infer("tiny_rgb", [grpc_input(np.array([b"not an image"], dtype=object), "BYTES")])
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"

    logits = service.grpc.infer("tiny_rgb", [grpc_input(batch, "FP32")]).as_numpy("logits")
    np.testing.assert_allclose(logits[0], expected_rgb_logits(COLORS[0]), rtol=1e-4, atol=1e-4)


def test_64_concurrent_inferences_answer_as_alone(service):
    """64 at once over each protocol, each its own color, BYTES and tensors mixed: each answer is its own."""
    jobs = [(i, COLORS[i % len(COLORS)]) for i in range(64)]

    def over_grpc(job):
        i, color = job
        if i % 2:
            tensor = grpc_input(np.array([image_bytes(color, fmt="JPEG", quality=100)], dtype=object), "BYTES")
        else:
            tensor = grpc_input(solid_tensor(color), "FP32")
        return service.grpc.infer("tiny_rgb", [tensor]).as_numpy("logits")[0]

    with ThreadPoolExecutor(64) as pool:
        grpc_answers = list(pool.map(over_grpc, jobs))
    http_requests = [
        service.http.async_infer("tiny_rgb", [http_input(solid_tensor(color), "FP32", binary=bool(i % 2))])
        for i, color in jobs
    ]
    http_answers = [r.get_result().as_numpy("logits")[0] for r in http_requests]
    for (i, color), got_grpc, got_http in zip(jobs, grpc_answers, http_answers, strict=True):
        tolerance = 0.05 if i % 2 else 1e-4  # a JPEG of a solid color is off by a level or two
        np.testing.assert_allclose(got_grpc, expected_rgb_logits(color), atol=tolerance)
        np.testing.assert_allclose(got_http, expected_rgb_logits(color), atol=1e-4)


def test_an_overloaded_model_answers_unavailable_with_retry_pushback(repo):
    grpc_port = free_port()
    env = {
        "SERVE_WORKERS": "1",
        "SERVE_GRPC_PORT": str(grpc_port),
        "SERVE_MAX_QUEUE_SIZE": "1",
        "SERVE_PROVIDERS": "cpu",
    }
    with running_service(repo, ["tiny_rgb"], env=env, timeout=120) as (url, _):
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        batch = np.concatenate([solid_tensor(COLORS[0])] * 2)
        with pytest.raises(InferenceServerException, match="queued") as error:
            client.infer("tiny_rgb", [grpc_input(batch, "FP32")])
        assert error.value.status() == "StatusCode.UNAVAILABLE"
        http = httpclient.InferenceServerClient(url.removeprefix("http://"))
        with pytest.raises(InferenceServerException, match="queued") as error:
            http.infer("tiny_rgb", [http_input(batch, "FP32")])
        assert error.value.status() == "429"
        client.close()
        http.close()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_tritons_repository_calls_load_and_unload_with_the_token(tmp_path, workers):
    write_rgb(tmp_path, versions=(1, 2))
    grpc_port = free_port()
    env = {
        "SERVE_WORKERS": workers,
        "SERVE_GRPC_PORT": str(grpc_port),
        "SERVE_PROVIDERS": "cpu",
        "SERVE_MODEL_CONTROL": "explicit",
        "SERVE_REPOSITORY_TOKEN": "t0ken",
    }
    with running_service(tmp_path, [], env=env, timeout=120) as (url, _):
        http = httpclient.InferenceServerClient(url.removeprefix("http://"))
        grpc_client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        try:
            (entry,) = http.get_model_repository_index()
            assert (entry["name"], entry["version"], entry["state"]) == ("tiny_rgb", "", "UNAVAILABLE")
            assert "not loaded" in entry["reason"]
            with pytest.raises(InferenceServerException, match="SERVE_REPOSITORY_TOKEN"):
                http.load_model("tiny_rgb")
            with pytest.raises(InferenceServerException, match="SERVE_REPOSITORY_TOKEN") as error:
                grpc_client.load_model("tiny_rgb")
            assert error.value.status() == "StatusCode.UNAUTHENTICATED"
            http.load_model("tiny_rgb", headers={"Authorization": "Bearer t0ken"})
            assert http.is_model_ready("tiny_rgb") and http.is_model_ready("tiny_rgb", "2")
            assert not http.is_model_ready("tiny_rgb", "1")  # the policy serves the latest only
            index = grpc_client.get_model_repository_index(as_json=True)["models"]
            assert {"name": "tiny_rgb", "version": "2", "state": "READY"} in index
            result = http.infer("tiny_rgb", [http_input(solid_tensor(COLORS[0]), "FP32")])
            assert result.get_response()["model_version"] == "2"
            grpc_client.unload_model("tiny_rgb", headers={"authorization": "Bearer t0ken"})
            assert not http.is_model_ready("tiny_rgb")
            with pytest.raises(InferenceServerException, match="unavailable: unloaded"):
                grpc_client.infer("tiny_rgb", [grpc_input(solid_tensor(COLORS[0]), "FP32")])
        finally:
            http.close()
            grpc_client.close()


def test_the_kserve_sdk_v2_rest_client(service):
    """In its own process: KServe's SDK and tritonclient both register the `inference` protobuf package, and one
    process cannot hold both (the service's gRPC uses tritonclient's)."""
    tensor = solid_tensor(COLORS[4])
    run = subprocess.run(
        [sys.executable, "-m", "tests.service.kserve_client", service.url, "tiny_rgb", json.dumps(tensor.tolist())],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    answers = json.loads(run.stdout)
    assert answers["ready"] == [True, True] and len(answers["logits"]) == 2  # JSON, then binary
    for logits in answers["logits"]:
        np.testing.assert_allclose(logits[0], expected_rgb_logits(COLORS[4]), rtol=1e-4, atol=1e-4)


def test_grpc_typed_contents_as_well_as_raw(service):
    """Clients other than tritonclient may send `contents` instead of raw_input_contents."""
    with grpc.insecure_channel(service.grpc_address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

        def infer(model: str, datatype: str, field: str, values, shape) -> np.ndarray:
            request = service_pb2.ModelInferRequest(model_name=model)
            tensor = request.inputs.add(name="input", datatype=datatype, shape=shape)
            getattr(tensor.contents, field).extend(values)
            response = stub.ModelInfer(request, timeout=30)
            assert response.outputs[0].name == "logits"
            return np.frombuffer(response.raw_output_contents[0], "<f4").reshape(response.outputs[0].shape)

        color = COLORS[5]
        expected = expected_rgb_logits(color)
        np.testing.assert_allclose(
            infer("tiny_rgb", "FP32", "fp32_contents", solid_tensor(color).ravel(), [1, 3, 16, 16])[0],
            expected,
            atol=1e-4,
        )
        pixels = solid_tensor(color, dtype=np.uint8).ravel().tolist()
        np.testing.assert_allclose(
            infer("tiny_uint8", "UINT8", "uint_contents", pixels, [1, 3, 16, 16])[0], expected, atol=1e-4
        )
        jpeg = image_bytes(color, fmt="JPEG", quality=100)
        np.testing.assert_allclose(infer("tiny_rgb", "BYTES", "bytes_contents", [jpeg], [1])[0], expected, atol=0.05)
        batch = np.random.default_rng(1).normal(size=(6, 3, 64, 64)).astype(np.float32)  # over 65,536 values:
        logits = infer("tiny_ten", "FP32", "fp32_contents", batch.ravel(), list(batch.shape))  # read in a lane
        np.testing.assert_allclose(logits, batch.mean(axis=(2, 3)) @ TEN_WEIGHT + TEN_BIAS, rtol=1e-4, atol=1e-4)
        with pytest.raises(grpc.RpcError) as error:
            infer("tiny_uint8", "UINT8", "uint_contents", [300] * 768, [1, 3, 16, 16])
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "not all UINT8" in error.value.details()
