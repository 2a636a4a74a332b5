"""Where a network's weights come from: an ImageNet checkpoint, a training checkpoint, or random.

Every path returns the provenance with the weights, and export records it in
config.json, so a served model always says what it is.
"""

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from modelrepo.checksum import sha256_file
from modelrepo.schema import Weights
from models import ModelCard, get_card, get_model
from models.densenet import remap_checkpoint as remap_densenet

log = logging.getLogger(__name__)

CHECKPOINTS = Path("checkpoints")
TRAINABLE_HERE = {"digits"}  # label sets models.train has bundled data for


# Published checkpoints whose key names predate the current module names, by family.
CHECKPOINT_FILTERS = {"densenet": remap_densenet}


class RandomWeightsWarning(UserWarning):
    """Raised as a warning whenever a model is exported without trained weights."""


@dataclass(frozen=True)
class Loaded:
    model: nn.Module  # in eval mode
    card: ModelCard  # num_classes as trained
    weights: Weights  # provenance, recorded in config.json
    labels: list[str] | None = None  # a checkpoint's own class names


def load_weights(name: str, spec: str = "auto") -> Loaded:
    """Build `name` with weights from `spec`: auto | random | imagenet | PATH.

    auto: checkpoints/<name>/best.pt if there is one; else torchvision's ImageNet weights
    where published; else, for networks the project trains (the digits LeNets), train now;
    else random, with a loud warning.
    """
    card = get_card(name)
    if spec == "auto":
        spec = _auto_spec(card)
    if spec == "random":
        return _random(name, "requested")
    if spec == "imagenet":
        return _imagenet(name, card)
    return _checkpoint(name, Path(spec))


def _auto_spec(card: ModelCard) -> str:
    local = CHECKPOINTS / card.name / "best.pt"
    if local.exists():
        return str(local)
    if card.weights_url:
        return "imagenet"
    if card.label_set in TRAINABLE_HERE:
        from models.train import TrainConfig, train  # torch-only, but slow to import: only when needed

        log.info("%s: no checkpoint yet; training it on %s (about a minute on 2 cores)", card.name, card.label_set)
        train(TrainConfig(model=card.name, data=card.label_set, output=str(local.parent), progress=False, command=[]))
        return str(local)
    return "random"


RANDOM_SEED = 0


def _random(name: str, reason: str) -> Loaded:
    message = f"{name}: exporting RANDOM weights ({reason}); its predictions are meaningless"
    warnings.warn(message, RandomWeightsWarning, stacklevel=3)
    log.warning("%s %s %s", "!" * 20, message, "!" * 20)
    with torch.random.fork_rng():
        torch.manual_seed(RANDOM_SEED)  # the same weights every time: an fp16 export compares with the fp32 one
        model = get_model(name).eval()
    return Loaded(model, get_card(name), Weights(source="random"))


def _imagenet(name: str, card: ModelCard) -> Loaded:
    """torchvision's checkpoint through torch.hub: cached under $TORCH_HOME, hash-checked."""
    if not card.weights_url:
        raise ValueError(f"{name}: no ImageNet weights are published for it; use --weights random or a checkpoint")
    try:
        state = torch.hub.load_state_dict_from_url(card.weights_url, map_location="cpu", check_hash=True)
    except OSError as e:  # offline, or the host is unreachable: URLError is an OSError
        return _random(name, f"could not fetch {card.weights_url}: {e}")
    if card.family in CHECKPOINT_FILTERS:
        state = CHECKPOINT_FILTERS[card.family](state)
    model = get_model(name, **card.weights_kwargs)
    model.load_state_dict(state, strict=True)
    weights = Weights(
        source="imagenet", uri=card.weights_url, sha256=_hub_sha256(card), accuracy=card.published_accuracy
    )
    return Loaded(model.eval(), card, weights)


def _hub_sha256(card: ModelCard) -> str | None:
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(card.weights_url).name
    return sha256_file(cached) if cached.exists() else None


def _checkpoint(name: str, path: Path) -> Loaded:
    """A checkpoint from models.train ({"model", "card", "metrics", "labels", ...}) or a bare state dict."""
    if not path.exists():
        raise FileNotFoundError(f"{name}: weights file {path} does not exist")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt.get("model", ckpt)
    num_classes = ckpt.get("card", {}).get("num_classes", get_card(name).num_classes)
    model = get_model(name, num_classes=num_classes)
    model.load_state_dict(state, strict=True)
    accuracy = {k: float(v) for k, v in ckpt.get("metrics", {}).items() if isinstance(v, int | float)}
    weights = Weights(source="checkpoint", uri=str(path), sha256=sha256_file(path), accuracy=accuracy)
    return Loaded(model.eval(), get_card(name, num_classes=num_classes), weights, ckpt.get("labels"))
