import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from fastapi.testclient import TestClient

from export.complexity import complexity
from export.to_onnx import main, resolve_names
from export.weights import RandomWeightsWarning
from modelrepo.checksum import sha256_file
from modelrepo.schema import ModelConfig
from models import get_model
from service.app import create_app
from service.config import Settings
from service.frontend.preprocess import ImageLimits, Preprocessor
from tests.service.conftest import image_bytes, wait_ready


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    out = tmp_path_factory.mktemp("repo")
    with pytest.warns(RandomWeightsWarning):
        assert main(["--model", "lenet5", "--weights", "random", "--output", str(out)]) == 0
    return out


def test_layout_and_config(repo):
    config = ModelConfig.model_validate_json((repo / "lenet5" / "config.json").read_text())
    onnx_file = repo / "lenet5" / "1" / "model.onnx"
    assert config.latest_version == 1
    version = config.versions[1]
    assert version.sha256 == sha256_file(onnx_file)
    assert version.weights.source == "random"
    assert version.parity.passed and version.parity.max_abs_diff_softmax < 1e-4
    assert config.input.shape == (-1, 1, 32, 32) and config.preprocessing.color_mode == "L"
    assert (repo / "lenet5" / "labels.txt").read_text().split() == [str(i) for i in range(10)]
    onnx.checker.check_model(str(onnx_file), full_check=True)


def test_batch_axis_is_dynamic(repo):
    session = ort.InferenceSession(str(repo / "lenet5" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((7, 1, 32, 32), dtype=np.float32)
    (batched,) = session.run(None, {"input": x})
    singles = np.concatenate([session.run(None, {"input": x[i : i + 1]})[0] for i in range(7)])
    assert batched.shape == (7, 10)
    np.testing.assert_allclose(batched, singles, rtol=1e-5, atol=1e-5)


def test_second_export_adds_a_version(repo):
    with pytest.warns(RandomWeightsWarning):
        main(["--model", "lenet5", "--weights", "random", "--output", str(repo)])
    config = json.loads((repo / "lenet5" / "config.json").read_text())
    assert sorted(config["versions"]) == ["1", "2"]
    assert (repo / "lenet5" / "2" / "model.onnx").exists()


def test_the_card_records_parameters_and_gflops_measured_at_export(repo):
    card = json.loads((repo / "lenet5" / "config.json").read_text())["card"]
    measured = complexity(get_model("lenet5"), (1, 32, 32))
    assert card["params"] == measured["params"] > 0 and card["gflops"] == measured["gflops"] > 0
    assert card["year"] == 1998 and card["paper"]


def test_checkpoint_weights_and_labels(tmp_path):
    model = get_model("lenet5", num_classes=3)
    labels = ["cat", "dog", "fish"]
    ckpt = tmp_path / "best.pt"
    torch.save(
        {"model": model.state_dict(), "card": {"num_classes": 3}, "metrics": {"test_acc": 0.9}, "labels": labels}, ckpt
    )
    out = tmp_path / "repo"
    main(["--model", "lenet5", "--weights", str(ckpt), "--output", str(out), "--version", "4"])
    config = ModelConfig.model_validate_json((out / "lenet5" / "config.json").read_text())
    assert config.output.shape == (-1, 3)
    assert config.versions[4].weights.source == "checkpoint"
    assert config.versions[4].weights.accuracy == {"test_acc": 0.9}
    assert (out / "lenet5" / "labels.txt").read_text().split() == labels


def test_fp16_export_records_its_tolerance(tmp_path):
    main(["--model", "lenet1989", "--weights", "random", "--fp16", "--output", str(tmp_path)])
    version = ModelConfig.model_validate_json((tmp_path / "lenet1989" / "config.json").read_text()).versions[1]
    assert version.precision == "fp16"
    assert version.parity.tolerance == 1e-2 and version.parity.passed
    graph = onnx.load(str(tmp_path / "lenet1989" / "1" / "model.onnx"))
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in graph.graph.initializer)


def test_names_expand_globs_and_all():
    assert resolve_names(["resnet1*", "resnet18"]) == ["resnet101", "resnet152", "resnet18"]
    assert len(resolve_names(["all"])) >= 39


def test_unknown_name_lists_close_matches():
    with pytest.raises(SystemExit, match="resnet50"):
        resolve_names(["resnet5"])


def test_uint8_export_fuses_normalization_and_serves_the_same_answer(tmp_path):
    """Same checkpoint exported twice: float input vs uint8 with normalization in the graph."""
    model = get_model("lenet5").eval()
    ckpt = tmp_path / "best.pt"
    torch.save({"model": model.state_dict()}, ckpt)
    main(["--model", "lenet5", "--weights", str(ckpt), "--output", str(tmp_path / "float")])
    main(["--model", "lenet5", "--weights", str(ckpt), "--uint8", "--output", str(tmp_path / "uint8")])
    plain = ModelConfig.model_validate_json((tmp_path / "float" / "lenet5" / "config.json").read_text())
    fused = ModelConfig.model_validate_json((tmp_path / "uint8" / "lenet5" / "config.json").read_text())
    assert fused.input.dtype == "uint8" and fused.preprocessing.fused and not plain.preprocessing.fused
    assert fused.versions[1].parity.passed and fused.versions[1].parity.max_abs_diff_softmax < 1e-4

    def session(root):
        return ort.InferenceSession(str(root / "lenet5" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])

    assert session(tmp_path / "uint8").get_inputs()[0].type == "tensor(uint8)"
    photo = image_bytes(color=(200, 30, 90), size=(40, 36), fmt="PNG")
    pixels = Preprocessor(fused.preprocessing, fused.input, limits=ImageLimits.from_settings(Settings()))(photo)
    normalized = Preprocessor(plain.preprocessing, plain.input, limits=ImageLimits.from_settings(Settings()))(photo)
    assert pixels.dtype == np.uint8 and normalized.dtype == np.float32
    (from_pixels,) = session(tmp_path / "uint8").run(None, {"input": pixels[None]})
    (from_floats,) = session(tmp_path / "float").run(None, {"input": normalized[None]})
    np.testing.assert_allclose(from_pixels, from_floats, rtol=1e-4, atol=1e-4)


def test_int8_export_is_quantized_calibrated_on_digits_and_served(repo):
    """lenet5 (random weights: the digits still calibrate it) as version 2, int8 beside the fp32 version 1."""
    with pytest.warns(RandomWeightsWarning):
        main(["--model", "lenet5", "--weights", "random", "--int8", "--version", "3", "--output", str(repo)])
    config = ModelConfig.model_validate_json((repo / "lenet5" / "config.json").read_text())
    version = config.versions[3]
    assert version.precision == "int8" and version.parity is None
    q = version.quantization
    assert q.calibration == "scikit-learn digits, training split" and q.calibration_inputs == 256
    assert q.held_out_inputs == 360 and set(q.accuracy) == {"test_fp32", "test_int8"}
    assert q.top1_agreement > 0.9 and q.max_rel_diff_logits < 0.1
    graph = onnx.load(str(repo / "lenet5" / "3" / "model.onnx"))
    ops = {node.op_type for node in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert version.sha256 == sha256_file(repo / "lenet5" / "3" / "model.onnx")

    settings = Settings(model_repository=repo, providers=["cpu"], intra_op_threads=1)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        assert client.get("/v1/models/lenet5").json()["version"] == 3
        response = client.post("/v1/classify?model=lenet5", content=image_bytes((0, 0, 0), size=(32, 32)))
        assert response.status_code == 200 and response.json()["version"] == 3


def test_int8_calibrates_on_a_folder_of_the_users_images(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    for i in range(6):
        (folder / f"{i}.png").write_bytes(image_bytes((40 * i, 40 * i, 40 * i), size=(20 + i, 24)))
    with pytest.warns(RandomWeightsWarning):
        main(
            [
                "--model",
                "lenet5",
                "--weights",
                "random",
                "--int8",
                "--calibration",
                str(folder),
                "--output",
                str(tmp_path),
            ]
        )
    q = ModelConfig.model_validate_json((tmp_path / "lenet5" / "config.json").read_text()).versions[1].quantization
    assert q.calibration == str(folder)
    assert (q.calibration_inputs, q.held_out_inputs) == (8, 2)  # every third held out; the rest mirrored too
    assert q.accuracy == {}  # the user's images carry no labels


@pytest.mark.parametrize("flags", [["--int8", "--fp16"], ["--int8", "--uint8"], ["--calibration", "x"]])
def test_int8_flag_combinations_are_refused(flags):
    with pytest.raises(SystemExit):
        main(["--model", "lenet5", *flags])
