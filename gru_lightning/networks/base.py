"""The network contract: what `model.TextClassifier` trains and `predict` runs.

A network is described by its settings, a dataclass that checks its values when it is made
(so a bad setting fails before any data work) and builds the `nn.Module` once the data gives
the number of classes:

    @dataclass(frozen=True)
    class MyNetwork(NetworkSettings):
        vocab_size: int = 10000
        \"\"\"Embedding rows: the data's max_features.\"\"\"

        def build(self, num_classes: int) -> nn.Module:
            return MyModule(self, num_classes)  # forward(ids [batch, time]) -> logits

The module's logits are `[batch]` for two classes (one logit: the second class's), else
`[batch, classes]`. A config `conf/model/net/my_network.yaml` with `_target_` naming the
settings class selects it (`model/net=my_network`). The settings travel in every checkpoint
(`to_dict`), so a checkpoint alone rebuilds the network.

Adversarial training (`model.adversarial`) needs two more methods, the seam it perturbs at:
`embed(ids) -> [batch, time, dim]` (the embedded words, after any dropout) and
`classify(embedded, ids) -> logits` (`ids` mark the padding); `forward(ids)` is then
`classify(embed(ids), ids)` in effect.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import torch
from torch import nn


@dataclasses.dataclass(frozen=True)
class NetworkSettings:
    """A network's settings; subclasses add theirs as fields and implement `build`."""

    def build(self, num_classes: int) -> nn.Module:
        """The network for `num_classes` classes."""
        raise NotImplementedError

    def with_vocabulary(self, size: int) -> NetworkSettings:
        """These settings with a `vocab_size` of "auto" (the data's vocabulary,
        `data.max_features=auto`) set to `size`; unchanged for any other."""
        if getattr(self, "vocab_size", None) == "auto":
            return dataclasses.replace(self, vocab_size=size)
        return self

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain types, with the class that reads them back (`from_dict`)."""
        kind = type(self)
        return {"class": f"{kind.__module__}.{kind.__qualname__}",
                "settings": dataclasses.asdict(self)}

    @staticmethod
    def from_dict(state: dict[str, Any]) -> NetworkSettings:
        """The settings `to_dict` wrote. The class must be a `NetworkSettings`: a checkpoint
        names what to import, never arbitrary code to run."""
        module, _, name = state["class"].rpartition(".")
        try:
            kind = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as error:
            raise ValueError(f"network {state['class']!r} cannot be imported ({error})") from None
        if not (isinstance(kind, type) and issubclass(kind, NetworkSettings)):
            raise ValueError(f"{state['class']!r} is not a network's settings class")
        return kind(**state["settings"])


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """The contract's logits as probabilities, in float32 (a bf16 sigmoid reads logits in
    (0, 0.008) as 0.5): `[batch]` logits (two classes) -> P(second class), `[batch, classes]`
    -> every class's."""
    logits = logits.float()
    return torch.sigmoid(logits) if logits.dim() == 1 else torch.softmax(logits, dim=-1)


def predicted_classes(probs: torch.Tensor) -> torch.Tensor:
    """The class ids `probabilities` points to: two classes the second where P >= 0.5 (as the
    metrics threshold it), more the most probable."""
    return (probs >= 0.5).long() if probs.dim() == 1 else probs.argmax(-1)


def share(name: str, value: Any) -> None:
    """A dropout-like share in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ValueError(f"model.net.{name} must be in [0, 1), got {value!r}")
