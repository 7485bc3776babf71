"""What a checkpoint of this project holds beside Lightning's own keys, read safely.

    network       the network's settings (networks/base.py `to_dict`): rebuilds it
    num_classes   classes of the task
    class_names   their names, in the order of the logits
    text_encoder  the exact preprocessing (preprocessing.TextEncoder `to_dict`)
    stack         the stacked model (its scorer's import path and state) and the stacking
                  weights (stack.py `Stack.to_dict`), or None
    format        CHECKPOINT_FORMAT and the release that wrote it

Checkpoints are read with `weights_only=True` (no pickled code runs); a stack's scorer is a
class the checkpoint names, imported by name (a module on the path) and refused unless it is
a `stack.TextScorer`. Older formats are
upgraded on reading (`upgrade`): release 0.1.0's (format 1: the network's settings among
Lightning's hyperparameters, no `net.` prefix) and those of releases up to 0.6.0 (format 2:
the stacked n-gram model under `ngram`, no scorer's path).
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from gru_lightning import __version__
from gru_lightning.networks.base import NetworkSettings

if TYPE_CHECKING:
    from gru_lightning.preprocessing import TextEncoder
    from gru_lightning.stack import Stack

CHECKPOINT_FORMAT = 3
NGRAM_SCORER = "gru_lightning.ngrams.model.NGramModel"  # the one scorer before format 3


class CheckpointError(RuntimeError):
    """A file that is not a usable checkpoint of this project."""


def read(path: str | Path, setting: str = "checkpoint ", weights_only: bool = True,
         ) -> dict[str, Any]:
    """A checkpoint written by `python train.py`, read on the CPU and upgraded to this
    format; `CheckpointError` with one line naming `setting` and the file when it is missing,
    truncated or not a checkpoint. `weights_only=False` also reads what resuming needs
    (callback states), and so may run code from the file: for a run's own checkpoints only."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{setting}{str(path)!r} is a folder, not a checkpoint file: give "
                              "a .ckpt inside it (a run's checkpoints/last.ckpt)")
    if not path.is_file():
        raise FileNotFoundError(f"{setting}{str(path)!r} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=weights_only)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError,
            zipfile.BadZipFile) as error:
        reason = str(error).splitlines()[0] if str(error) else ""
        raise CheckpointError(
            f"{setting}{str(path)!r} is not a readable checkpoint ({type(error).__name__}: "
            f"{reason}); the file is damaged or was cut short. Use another checkpoint of the run "
            "(checkpoints/ holds the best epoch and last.ckpt) or start afresh."
        ) from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{setting}{str(path)!r} is not a Lightning checkpoint")
    try:
        upgrade(checkpoint)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{setting}{str(path)!r} was not written by gru-lightning's "
                              f"train.py, or by a release this one cannot read ({error})"
                              ) from error
    return checkpoint


def contents(network: NetworkSettings, num_classes: int, class_names: list[str],
             text_encoder: TextEncoder | None, stack: Stack | None,
             class_values: list[str] | None = None) -> dict[str, Any]:
    """This project's keys of a checkpoint (see the module docstring)."""
    return {"format": {"checkpoint": CHECKPOINT_FORMAT, "release": __version__},
            "network": network.to_dict(), "num_classes": num_classes,
            "class_names": list(class_names), "class_values": class_values,
            "text_encoder": text_encoder.to_dict() if text_encoder is not None else None,
            "stack": stack.to_dict() if stack is not None else None}


def upgrade(checkpoint: dict[str, Any]) -> None:
    """An older format (see the module docstring) in this one, in place; newer ones refused."""
    written = checkpoint.get("format", {}).get("checkpoint", 1)
    if written > CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint format {written} is newer than this release reads "
                         f"({CHECKPOINT_FORMAT}): upgrade gru-lightning")
    if written == CHECKPOINT_FORMAT:
        return
    if written == 1:
        _upgrade_release_0_1(checkpoint)
    stack = checkpoint.get("stack")
    if stack is not None:  # format 2: the n-gram model was the only scorer
        stack["scorer"] = NGRAM_SCORER
        stack["model"] = stack.pop("ngram")
        stack.setdefault("stacking_l2", 1e-3)  # the fixed value of releases before the setting
        stack.setdefault("validation_folds", 0)
    checkpoint["format"] = {"checkpoint": CHECKPOINT_FORMAT,
                            "release": checkpoint.get("format", {}).get("release", "0.1.0")}


def _upgrade_release_0_1(checkpoint: dict[str, Any]) -> None:
    """Format 1 (release 0.1.0) in format 2's layout, in place."""
    from gru_lightning.networks.rnn import RNN

    hyper = checkpoint["hyper_parameters"]
    fields = RNN.__dataclass_fields__
    checkpoint["network"] = RNN(**{k: v for k, v in hyper.items() if k in fields}).to_dict()
    checkpoint["num_classes"] = hyper.get("num_classes", 2)
    checkpoint["hyper_parameters"] = {"num_classes": checkpoint["num_classes"],
                                      "lr_schedule": hyper.get("lr_schedule", "constant")}
    checkpoint.setdefault("class_names", ["neg", "pos"])
    checkpoint.setdefault("text_encoder", None)
    for key in ("state_dict", "current_model_state"):  # the latter: weight averaging's
        if key in checkpoint:
            checkpoint[key] = {f"net.{name}": value for name, value in checkpoint[key].items()}
    stacking = checkpoint.pop("stacking", None)
    if "ngram" in checkpoint:
        ngram = checkpoint.pop("ngram")
        renamed = {"rnn": "net", "rnn_by_length": "net_by_length"}
        checkpoint["stack"] = {
            "folds": ngram["settings"].get("folds", 0), "ngram": ngram,
            "stacking": {renamed.get(k, k): v for k, v in stacking.items()} if stacking else None}
    else:
        checkpoint["stack"] = None


def network_settings(checkpoint: dict[str, Any]) -> NetworkSettings:
    return NetworkSettings.from_dict(checkpoint["network"])


def stack(checkpoint: dict[str, Any]) -> Stack | None:
    if checkpoint.get("stack") is None:
        return None
    from gru_lightning.stack import Stack

    return Stack.from_dict(checkpoint["stack"])
