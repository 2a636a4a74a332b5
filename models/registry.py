"""Name -> builder registry with a model card per name (after timm's, without the side doors)."""

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import replace

from torch import nn

from models.card import ModelCard
from models.published import published_accuracy


class UnknownModelError(LookupError):
    """A name that is not in the registry; the message lists the close matches."""


_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_CARDS: dict[str, ModelCard] = {}


def register_model(**card_fields) -> Callable:
    """Decorator: register a builder under its function name, with a card built from `card_fields`."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = builder.__name__
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} is already registered")
        accuracy = published_accuracy(card_fields.get("weights_url"))
        _CARDS[name] = ModelCard(name=name, **{"published_accuracy": accuracy, **card_fields})
        _BUILDERS[name] = builder
        return builder

    return wrap


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style pattern, sorted."""
    return sorted(name for name in _BUILDERS if fnmatch.fnmatchcase(name, pattern))


def _check_known(name: str) -> None:
    if name not in _BUILDERS:
        close = difflib.get_close_matches(name, _BUILDERS, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(list_models())}"
        raise UnknownModelError(f"unknown model {name!r}{hint}")


def get_model(name: str, **kwargs) -> nn.Module:
    """Build a registered network; kwargs go to its builder (num_classes, in_chans, ...)."""
    _check_known(name)
    return _BUILDERS[name](**kwargs)


def get_card(name: str, **overrides) -> ModelCard:
    """The card of a registered name, with fields such as num_classes overridden for a retrained model."""
    _check_known(name)
    return replace(_CARDS[name], **overrides) if overrides else _CARDS[name]
