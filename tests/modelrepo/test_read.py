import json
import shutil

import pytest

from modelrepo.read import RepositoryError, list_models, load_source
from tests.service.conftest import RGB_LABELS, write_gray, write_rgb


def test_loads_the_latest_version(tmp_path):
    write_rgb(tmp_path, versions=(1, 3, 2))
    source = load_source(tmp_path, "tiny_rgb")
    assert source.version == 3
    assert source.onnx_path == tmp_path / "tiny_rgb" / "3" / "model.onnx"
    assert source.labels == RGB_LABELS
    assert source.config.name == "tiny_rgb"


def test_lists_every_model_folder(tmp_path):
    write_rgb(tmp_path)
    write_gray(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / ".cache").mkdir()
    assert list_models(tmp_path) == ["empty", "tiny_gray", "tiny_rgb"]
    with pytest.raises(RepositoryError, match="not a directory"):
        list_models(tmp_path / "nowhere")


def test_sha256_mismatch_is_refused(tmp_path):
    model_dir = write_rgb(tmp_path)
    with (model_dir / "1" / "model.onnx").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(RepositoryError, match="sha256"):
        load_source(tmp_path, "tiny_rgb")


def test_missing_config_is_refused(tmp_path):
    model_dir = write_rgb(tmp_path)
    (model_dir / "config.json").unlink()
    with pytest.raises(RepositoryError, match=r"config\.json is missing"):
        load_source(tmp_path, "tiny_rgb")


def test_invalid_config_is_refused(tmp_path):
    model_dir = write_rgb(tmp_path)
    config = json.loads((model_dir / "config.json").read_text())
    config["surprise"] = 1
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(RepositoryError, match="invalid"):
        load_source(tmp_path, "tiny_rgb")


def test_missing_model_file_and_unknown_model(tmp_path):
    model_dir = write_rgb(tmp_path)
    shutil.rmtree(model_dir / "1")
    with pytest.raises(RepositoryError, match=r"model\.onnx is missing"):
        load_source(tmp_path, "tiny_rgb")
    with pytest.raises(RepositoryError, match="not in the repository"):
        load_source(tmp_path, "resnet50")


def test_labels_must_match_the_output(tmp_path):
    model_dir = write_rgb(tmp_path)
    (model_dir / "labels.txt").write_text("red\ngreen\n")
    with pytest.raises(RepositoryError, match="2 labels"):
        load_source(tmp_path, "tiny_rgb")


def test_input_shape_must_match_preprocessing(tmp_path):
    model_dir = write_rgb(tmp_path)
    config = json.loads((model_dir / "config.json").read_text())
    config["input"]["shape"] = [-1, 3, 32, 32]
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(RepositoryError, match="does not match preprocessing"):
        load_source(tmp_path, "tiny_rgb")
