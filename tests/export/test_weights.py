"""ImageNet loading goes through torch.hub with a file:// URL: the real code path, no network."""

import hashlib
import warnings
from dataclasses import replace

import pytest
import torch

from export.weights import RandomWeightsWarning, load_weights
from models import get_model, registry


@pytest.fixture
def published(tmp_path, monkeypatch):
    """Publish lenet5 weights at a file:// URL whose name carries the sha256 prefix, like torchvision's."""
    state = get_model("lenet5").state_dict()
    staging = tmp_path / "staging.pth"
    torch.save(state, staging)
    digest = hashlib.sha256(staging.read_bytes()).hexdigest()
    served = tmp_path / "srv" / f"lenet5-{digest[:8]}.pth"
    served.parent.mkdir()
    staging.rename(served)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setitem(registry._CARDS, "lenet5", replace(registry._CARDS["lenet5"], weights_url=served.as_uri()))
    monkeypatch.chdir(tmp_path)  # no checkpoints/ here
    return state, served


def test_imagenet_weights_load_through_the_hub_cache(published):
    state, served = published
    loaded = load_weights("lenet5", "imagenet")
    model, weights = loaded.model, loaded.weights
    assert weights.source == "imagenet" and weights.uri == served.as_uri()
    assert weights.sha256 == hashlib.sha256(served.read_bytes()).hexdigest()
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    served.unlink()  # the second load must come from the cache
    assert load_weights("lenet5", "imagenet").weights.source == "imagenet"


def test_auto_prefers_imagenet_when_published(published):
    assert load_weights("lenet5", "auto").weights.source == "imagenet"


def test_a_corrupted_download_is_rejected(published):
    _, served = published
    served.write_bytes(served.read_bytes() + b"tampered")
    with pytest.raises(RuntimeError, match="hash"):
        load_weights("lenet5", "imagenet")


def test_offline_falls_back_to_random_loudly(published):
    _, served = published
    served.unlink()
    with pytest.warns(RandomWeightsWarning, match="RANDOM"):
        loaded = load_weights("lenet5", "imagenet")
    assert loaded.weights.source == "random"


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_weights("lenet5", str(tmp_path / "nope.pt"))


def test_imagenet_for_an_unpublished_model_is_an_error():
    with warnings.catch_warnings(), pytest.raises(ValueError, match="no ImageNet weights"):
        load_weights("nin", "imagenet")


def test_auto_trains_a_digits_model_that_has_no_checkpoint(tmp_path, monkeypatch):
    import models.train

    monkeypatch.chdir(tmp_path)
    calls = []

    def fake_train(cfg):
        calls.append(cfg)
        out = tmp_path / cfg.output
        out.mkdir(parents=True)
        model = get_model(cfg.model)
        torch.save(
            {"model": model.state_dict(), "card": {"num_classes": 10}, "metrics": {"test_acc": 0.97}}, out / "best.pt"
        )

    monkeypatch.setattr(models.train, "train", fake_train)
    loaded = load_weights("lenet1989", "auto")
    assert [(c.model, c.data) for c in calls] == [("lenet1989", "digits")]
    assert loaded.weights.source == "checkpoint" and loaded.weights.accuracy == {"test_acc": 0.97}
    assert load_weights("lenet1989", "auto").weights.source == "checkpoint"  # the second time, no training
    assert len(calls) == 1


def test_random_weights_are_the_same_every_time_and_leave_the_global_generator_alone():
    state = torch.get_rng_state()
    first, second = load_weights("lenet5", "random"), load_weights("lenet5", "random")
    assert torch.equal(torch.get_rng_state(), state)
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
