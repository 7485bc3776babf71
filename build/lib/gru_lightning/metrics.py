"""The metrics every stage reports, by name, and the per-text outputs they are computed from.

`METRICS` is the one list: each entry reaches the logs (`train/`, `val/`, `test/` + name),
`metrics.json`, TensorBoard's HPARAMS tab and the sweep report. Adding a metric is a line.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from omegaconf import OmegaConf
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryF1Score,
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassF1Score,
)


class BinaryMacroF1Score(MulticlassF1Score):
    """The mean of both classes' F1 from P(second class): the official metric of benchmarks
    whose classes weigh alike (torchmetrics' binary F1 is the second class's alone)."""

    def __init__(self) -> None:
        super().__init__(2, average="macro")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        super().update((preds >= 0.5).long(), target)


# name: (the binary metric, the multi-class one for k classes: macro over the classes).
METRICS: dict[str, tuple[Callable[[], Metric], Callable[[int], Metric]]] = {
    "acc": (BinaryAccuracy, lambda k: MulticlassAccuracy(k, average="micro")),
    "f1": (BinaryF1Score, lambda k: MulticlassF1Score(k, average="macro")),
    "macro_f1": (BinaryMacroF1Score, lambda k: MulticlassF1Score(k, average="macro")),
    "auroc": (BinaryAUROC, lambda k: MulticlassAUROC(k, average="macro")),
}
MONITOR = "acc"  # the step-level metric of training (train/acc_step)
# Tracked at their best epoch so far (val/acc_best, val/macro_f1_best): what a sweep can
# optimise, by the same metric as the checkpoint (optimized_metric: ${monitor}_best).
BEST = ("acc", "macro_f1")


def mode_of(metric: str) -> str:
    """"min" for a loss (val/loss), "max" for a score (val/acc, val/macro_f1): how a checkpoint,
    early stopping or a sweep that follows `metric` compares epochs."""
    return "min" if metric.rsplit("/", 1)[-1].startswith("loss") else "max"


# The configs derive each monitor's mode (conf/callbacks), the checkpoint's file name
# (val/loss -> val_loss: a slash would make a folder) and Optuna's direction from its name.
OmegaConf.register_new_resolver("metric_mode", mode_of, replace=True)
OmegaConf.register_new_resolver("metric_file_name", lambda metric: metric.replace("/", "_"),
                                replace=True)
OmegaConf.register_new_resolver("metric_direction", lambda metric: f"{mode_of(metric)}imize",
                                replace=True)


def metric_collection(num_classes: int, prefix: str) -> MetricCollection:
    """Every metric of `METRICS` for the task, named `prefix + name`."""
    binary = num_classes == 2
    return MetricCollection({name: make() if binary else make_multi(num_classes)
                             for name, (make, make_multi) in METRICS.items()}, prefix=prefix)


def final_metric_keys() -> list[str]:
    """The run's final figures that the HPARAMS tab and the sweep report show."""
    return [*(f"val/{name}_best" for name in BEST), *(f"test/{name}" for name in METRICS),
            "test/loss"]


class EpochOutputs:
    """One stage's per-text outputs of an epoch (logits, labels, loss, features), each named
    column in one tensor that doubles when full: adding a batch is one copy per column, and
    nothing allocated by a step outlives it."""

    def __init__(self) -> None:
        self.columns: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, **columns: torch.Tensor) -> None:
        n = len(next(iter(columns.values())))
        end = self.count + n
        for name, values in columns.items():
            buffer = self.columns.get(name)
            if buffer is None or end > len(buffer):
                grown = values.new_empty((max(1024, 2 * end), *values.shape[1:]))
                if buffer is not None and self.count:
                    grown[: self.count] = buffer[: self.count]
                self.columns[name] = buffer = grown
            buffer[self.count : end] = values
        self.count = end

    def take(self) -> dict[str, torch.Tensor]:
        """The epoch's columns (views, valid until the next `add`); the store starts over."""
        taken = {name: buffer[: self.count] for name, buffer in self.columns.items()}
        self.count = 0
        return taken
