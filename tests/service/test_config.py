import pytest
from pydantic import ValidationError

from service.config import Settings


def test_environment_with_comma_lists(monkeypatch):
    monkeypatch.setenv("SERVE_MODELS", "resnet50, vgg16")
    monkeypatch.setenv("SERVE_PROVIDERS", "cuda,cpu")
    monkeypatch.setenv("SERVE_PREFERRED_BATCH_SIZES", "4,8")
    monkeypatch.setenv("SERVE_PORT", "9000")
    monkeypatch.setenv("SERVE_CORS_ORIGINS", "https://a.example, https://b.example")
    s = Settings()
    assert s.models == ["resnet50", "vgg16"]
    assert s.providers == ["cuda", "cpu"]
    assert s.preferred_batch_sizes == [4, 8]
    assert s.port == 9000
    assert s.cors_origins == ["https://a.example", "https://b.example"]


def test_defaults():
    s = Settings()
    assert s.models == [] and s.providers == ["tensorrt", "cuda", "cpu"]
    assert s.max_batch_size is None and s.preferred_batch_sizes is None  # config.json decides
    assert s.batches_in_flight is None and s.default_top_k == 5  # chosen by device


def test_every_setting_is_described():
    assert all(field.description for field in Settings.model_fields.values())


def test_bad_values_are_refused():
    with pytest.raises(ValidationError):
        Settings(preferred_batch_sizes=[0])
    with pytest.raises(ValidationError):
        Settings(port=0)


@pytest.mark.parametrize(
    "bad",
    [
        {"trt_builder_optimization_level": 6},
        {"trt_workspace_mb": 0},
        {"cudnn_conv_algo_search": "FASTEST"},
        {"cuda_arena_extend_strategy": "grow"},
        {"gpu_mem_limit_mb": -1},
    ],
)
def test_bad_gpu_options_are_refused(bad):
    with pytest.raises(ValidationError):
        Settings(**bad)


def test_readme_documents_every_setting():
    from pathlib import Path

    from service.config import settings_markdown

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert settings_markdown() in readme, "README's settings table is stale: paste `python -m service.config`"
