"""A model repository of tiny real ONNX graphs, built with onnx.helper (no torch).

The graph: input (N, C, H, W) -> ReduceMean over H, W -> (N, C) -> MatMul W (C, K) -> Add b -> logits (N, K).
So a solid-color image's logits are computable by hand.
"""

import contextlib
import functools
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from loadtest.server import running_service
from modelrepo.schema import Batching, ModelSpec, Preprocessing, TensorSpec, Version, Weights
from modelrepo.write import write_version
from service.app import create_app
from service.config import Settings

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# RGB model: one class per channel mean, plus "dark" = -(R + G + B).
RGB_WEIGHT = np.array([[1, 0, 0, -1], [0, 1, 0, -1], [0, 0, 1, -1]], dtype=np.float32)
RGB_BIAS = np.zeros(4, dtype=np.float32)
RGB_LABELS = ("red", "green", "blue", "dark")
# Grayscale model: x in [-1, 1] after normalization; logits (-x, 0.5, x).
GRAY_WEIGHT = np.array([[-1, 0, 1]], dtype=np.float32)
GRAY_BIAS = np.array([0, 0.5, 0], dtype=np.float32)
GRAY_LABELS = ("dark", "mid", "light")


def onnx_bytes(
    weight: np.ndarray,
    bias: np.ndarray,
    *,
    input_name: str = "input",
    uint8: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
) -> bytes:
    """`uint8=(mean, std)`: the graph takes uint8 pixels and normalizes them itself, as `export --uint8` makes it."""
    channels, classes = weight.shape
    nodes, initializers, pixels = [], [], input_name
    if uint8 is not None:
        mean, std = (np.asarray(v, np.float32).reshape(1, channels, 1, 1) * 255 for v in uint8)
        nodes = [
            helper.make_node("Cast", [input_name], ["as_float"], to=TensorProto.FLOAT),
            helper.make_node("Sub", ["as_float", "mean"], ["centered"]),
            helper.make_node("Div", ["centered", "std"], ["normalized"]),
        ]
        initializers = [numpy_helper.from_array(mean, "mean"), numpy_helper.from_array(std, "std")]
        pixels = "normalized"
    nodes += [
        helper.make_node("ReduceMean", [pixels], ["pooled"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["pooled", "weight"], ["projected"]),
        helper.make_node("Add", ["projected", "bias"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [
            helper.make_tensor_value_info(
                input_name, TensorProto.UINT8 if uint8 else TensorProto.FLOAT, ["N", channels, "H", "W"]
            )
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        initializer=[*initializers, numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def write_model(
    root: Path,
    name: str,
    *,
    weight: np.ndarray,
    bias: np.ndarray,
    labels: tuple[str, ...],
    color_mode: str = "RGB",
    crop: int = 16,
    resize: int = 18,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    versions: tuple[int, ...] = (1,),
    batching: Batching | None = None,
    uint8: bool = False,
) -> Path:
    """Write `root/name/` as export does (modelrepo/write.py): config.json, labels.txt, <version>/model.onnx.
    `uint8`: as `export --uint8` writes it, the graph taking pixels and normalizing them itself."""
    channels = weight.shape[0]
    spec = ModelSpec(
        name=name,
        card={"family": "tiny", "year": 2025, "paper": "test fixture"},
        input=TensorSpec(name="input", dtype="uint8" if uint8 else "float32", shape=(-1, channels, crop, crop)),
        output=TensorSpec(name="logits", dtype="float32", shape=(-1, len(labels)), layout="NC"),
        preprocessing=Preprocessing(
            color_mode=color_mode,
            resize_size=resize,
            crop_size=(crop, crop),
            interpolation="bilinear",
            mean=mean,
            std=std,
            fused=uint8,
        ),
        batching=batching or Batching(max_batch_size=8, max_queue_delay_ms=5, max_queue_size=64),
    )
    entry = functools.partial(
        Version,
        precision="fp32",
        weights=Weights(source="random"),
        opset=17,
        exporter="onnx.helper",
        exported_at="2025-01-01T00:00:00Z",
    )
    with tempfile.TemporaryDirectory() as tmp:
        for v in versions:
            onnx_file = Path(tmp) / f"{v}.onnx"  # versions differ, so "latest" is observable
            onnx_file.write_bytes(onnx_bytes(weight * v, bias, uint8=(mean, std) if uint8 else None))
            written = write_version(root, spec, onnx_file, labels, entry, version=v)
    return written.parents[1]


def write_rgb(root: Path, name: str = "tiny_rgb", **kwargs) -> Path:
    return write_model(root, name, weight=RGB_WEIGHT, bias=RGB_BIAS, labels=RGB_LABELS, **kwargs)


def write_gray(root: Path, name: str = "tiny_gray", **kwargs) -> Path:
    kwargs.setdefault("crop", 8)
    kwargs.setdefault("resize", 8)
    return write_model(
        root,
        name,
        weight=GRAY_WEIGHT,
        bias=GRAY_BIAS,
        labels=GRAY_LABELS,
        color_mode="L",
        mean=(0.5,),
        std=(0.5,),
        **kwargs,
    )


def image_bytes(color=(255, 0, 0), size=(32, 24), fmt: str = "PNG", mode: str = "RGB", **save) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, fmt, **save)
    return buf.getvalue()


def expected_rgb_logits(color: tuple[int, int, int]) -> np.ndarray:
    """By hand: a solid image normalizes to one value per channel; the graph averages, projects, adds."""
    x = (np.array(color, dtype=np.float32) / 255 - np.array(IMAGENET_MEAN, np.float32)) / np.array(
        IMAGENET_STD, np.float32
    )
    return x @ RGB_WEIGHT + RGB_BIAS


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("model_repository")
    write_rgb(root)
    write_gray(root)
    return root


def wait_ready(client: TestClient, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get("/readyz")
        states = set(response.json()["models"].values())
        if "loading" not in states:
            return
        time.sleep(0.01)
    raise AssertionError(f"models still loading after {timeout} s: {response.json()}")


@pytest.fixture
def make_local_client(model_repo):
    """make_local_client(**settings) -> a started TestClient (one process) whose models have finished loading."""
    clients = []

    def make(repo: Path | None = None, *, raise_server_exceptions: bool = True, **overrides) -> TestClient:
        overrides.setdefault("providers", ["cpu"])
        overrides.setdefault("intra_op_threads", 1)
        settings = Settings(model_repository=repo or model_repo, **overrides)
        client = TestClient(create_app(settings), raise_server_exceptions=raise_server_exceptions)
        client.__enter__()
        clients.append(client)
        wait_ready(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def make_client(make_local_client):
    return make_local_client


@pytest.fixture
def client(make_client) -> TestClient:
    return make_client()


def settings_env(overrides: dict) -> dict[str, str]:
    """Settings keyword arguments as the SERVE_* variables a service process reads."""
    return {
        f"SERVE_{key.upper()}": ",".join(map(str, value)) if isinstance(value, list) else str(value)
        for key, value in overrides.items()
    }


@pytest.fixture(scope="module")
def worker_services():
    """worker_services(repo, overrides) -> the base URL of `python -m service` with SERVE_WORKERS=2 and those
    settings, started once per module and settings."""
    started: dict[tuple, str] = {}
    with contextlib.ExitStack() as stack:

        def get(repo: Path, overrides: dict) -> str:
            key = (str(repo), tuple(sorted((k, str(v)) for k, v in overrides.items())))
            if key not in started:
                env = {**settings_env(overrides), "SERVE_WORKERS": "2"}
                url, _ = stack.enter_context(running_service(repo, [], env=env, timeout=120, settled=True))
                started[key] = url
            return started[key]

        yield get
