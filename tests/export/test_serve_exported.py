"""The whole pipeline: a zoo network exported, served, and asked about a real photo."""

import io

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from skimage import data

from export.to_onnx import main as export_main
from modelrepo.schema import ModelConfig
from models import get_model
from service.app import create_app
from service.config import Settings
from service.frontend.preprocess import ImageLimits, Preprocessor
from tests.models.deterministic import fill_state_dict
from tests.service.conftest import wait_ready


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """mobilenet_v2 with known weights, saved as a checkpoint and exported from it."""
    out = tmp_path_factory.mktemp("served")
    model = get_model("mobilenet_v2").eval()
    fill_state_dict(model)  # default init gives near-uniform softmax, which would hide a difference
    torch.save({"model": model.state_dict()}, out / "ckpt.pt")
    export_main(["--model", "mobilenet_v2", "--weights", str(out / "ckpt.pt"), "--output", str(out / "repo")])
    return model, out / "repo"


def test_served_probabilities_match_pytorch(exported):
    model, repo = exported
    buf = io.BytesIO()
    Image.fromarray(data.chelsea()).save(buf, "JPEG", quality=90)
    photo = buf.getvalue()
    config = ModelConfig.model_validate_json((repo / "mobilenet_v2" / "config.json").read_text())
    preprocess = Preprocessor(config.preprocessing, config.input, limits=ImageLimits.from_settings(Settings()))
    x = torch.from_numpy(preprocess(photo))
    with torch.no_grad():
        expected = model(x[None])[0].softmax(-1).topk(5)

    settings = Settings(model_repository=repo, providers=["cpu"], intra_op_threads=1)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        response = client.post(
            "/v1/classify?model=mobilenet_v2&top_k=5", content=photo, headers={"content-type": "image/jpeg"}
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["weights"]["source"] == "checkpoint"
    predictions = body["results"][0]["predictions"]
    assert [p["index"] for p in predictions] == expected.indices.tolist()
    got = np.array([p["probability"] for p in predictions])
    np.testing.assert_allclose(got, expected.values.numpy(), rtol=1e-4, atol=1e-6)
    labels = (repo / "mobilenet_v2" / "labels.txt").read_text().splitlines()
    assert [p["label"] for p in predictions] == [labels[i] for i in expected.indices]
