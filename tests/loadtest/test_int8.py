import pytest

from export.to_onnx import main
from export.weights import RandomWeightsWarning
from loadtest.int8 import int8_copy, table
from modelrepo.checksum import sha256_file
from modelrepo.read import load_source


def test_int8_copy_quantizes_the_served_version(tmp_path):
    repo, copy = tmp_path / "repo", tmp_path / "copy"
    with pytest.warns(RandomWeightsWarning):
        main(["--model", "lenet5", "--weights", "random", "--output", str(repo)])
    record = int8_copy(repo, "lenet5", copy)
    source = load_source(copy, "lenet5")  # checks the sha256 it records
    version = source.config.versions[source.version]
    assert version.precision == "int8" and version.quantization.model_dump() == record
    assert version.sha256 == sha256_file(source.onnx_path) != sha256_file(load_source(repo, "lenet5").onnx_path)
    assert set(record["accuracy"]) == {"test_fp32", "test_int8"}


def test_table_gives_ratios():
    def points(rates):
        return [{"batch_size": n, "images_per_s": r} for n, r in zip((1, 2), rates, strict=True)]

    result = {
        "model": "m",
        "quantization": {"top1_agreement": 1, "top5_agreement": 0.9, "max_rel_diff_logits": 0.01, "accuracy": {}},
        "raw": {"fp32": points([10, 12]), "int8": points([30, 48])},
        "service": {"fp32": {"images_per_s": 10, "p50_ms": 50}, "int8": {"images_per_s": 25, "p50_ms": 20}},
    }
    row = table([result]).splitlines()[2]
    assert "10.0 -> 30.0 (3.00x)" in row and "12.0 -> 48.0 (4.00x)" in row and "10.0 -> 25.0 (2.50x)" in row
    assert "(no labels)" in row
