"""Our torchvision-backed networks against tests/fixtures/torchvision.json.

Same key names and shapes means a torchvision ImageNet checkpoint loads with
strict=True; same logits under the same deterministic weights means it computes the
same function. Logits, not softmax: with arbitrary weights the softmax is nearly
uniform and would hide a difference.
"""

import json
from pathlib import Path

import pytest
import torch

from models import get_card, get_model
from tests.models.deterministic import fill_state_dict, image_batch

FIXTURE = json.loads((Path(__file__).parents[1] / "fixtures" / "torchvision.json").read_text())["models"]


@pytest.mark.parametrize("name", sorted(FIXTURE))
def test_state_dict_matches_torchvision(name):
    with torch.device("meta"):
        ours = {k: list(v.shape) for k, v in get_model(name).state_dict().items()}
    theirs = FIXTURE[name]["state_dict"]
    assert sorted(set(theirs) - set(ours)) == [], "keys torchvision has and we lack"
    assert sorted(set(ours) - set(theirs)) == [], "keys we have and torchvision lacks"
    assert {k: v for k, v in ours.items() if theirs[k] != v} == {}, "shape mismatches"
    assert list(ours) == list(theirs), "same keys, different order"


@pytest.mark.parametrize("name", sorted(FIXTURE))
def test_card_matches_torchvision_weights(name):
    card, weights = get_card(name), FIXTURE[name]["weights"]
    assert card.weights_url == weights["url"]
    assert card.input_size == (3, weights["crop_size"], weights["crop_size"])
    assert card.resize_size == weights["resize_size"]
    assert card.interpolation == weights["interpolation"]
    assert card.mean == pytest.approx(weights["mean"]) and card.std == pytest.approx(weights["std"])


@pytest.mark.parametrize("name", sorted(FIXTURE))
def test_logits_match_torchvision(name):
    model = get_model(name).eval()
    fill_state_dict(model)
    with torch.no_grad():
        ours = model(image_batch(1, *FIXTURE[name]["input_size"]))[0].double()
    theirs = torch.tensor(FIXTURE[name]["logits"], dtype=torch.float64)
    rel = (ours - theirs).norm() / theirs.norm()
    assert rel < 1e-4, f"relative logit error {rel:.2e}"
    assert ours.topk(5).indices.tolist() == theirs.topk(5).indices.tolist()
