"""Fine-tuning a pre-trained network as ULMFiT does (Howard & Ruder 2018, section 3.2), each
part a setting, all off by default:

- discriminative learning rates: the optimizer's lr for the top layer group, divided by
  `model.lr_decay` for each group below it (`layer_groups`; ULMFiT: 2.6);
- a warm-up, then a fall: `model.warmup` of the run's steps rising from lr/32 to lr, then
  `model.lr_schedule` (`lr_factor`; `slanted` with a warm-up of 0.1 is ULMFiT's slanted
  triangular rate);
- gradual unfreezing: the head trains alone, then the layer groups below join one at a time
  (`GradualUnfreezing`, a callback: `callbacks=gradual_unfreezing`).

A network's layer groups, bottom to top: its `embedding`, its `rnn` (where it has them), and
every other parameter (the classifier's head).
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn

# ULMFiT's ratio of the largest learning rate to the smallest of its slanted triangle.
SLANTED_RATIO = 32
SCHEDULES = ("constant", "cosine", "slanted")


def layer_groups(net: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The network's parameters by layer group, bottom to top: `embedding`, `rnn` (where the
    network has them), and `head`: every other one."""
    groups, seen = {}, set()
    for name in ("embedding", "rnn"):
        module = getattr(net, name, None)
        if isinstance(module, nn.Module):
            groups[name] = list(module.parameters())
            seen.update(id(p) for p in groups[name])
    groups["head"] = [p for p in net.parameters() if id(p) not in seen]
    return {name: params for name, params in groups.items() if params}


def discriminative_param_groups(net: nn.Module, others: list[nn.Parameter],
                                lr_decay: float) -> list[dict[str, Any]]:
    """The optimizer's parameter groups, bottom to top, each with its `lr_factor`: 1 for the
    top one (the head, plus `others`: parameters of the model outside the network), divided
    by `lr_decay` for each group below. Each is named (LearningRateMonitor's `lr-Adam/rnn`)."""
    groups = layer_groups(net)
    top = list(groups)[-1]
    groups[top] = groups[top] + others
    return [{"params": params, "name": name, "lr_factor": lr_decay ** -(len(groups) - 1 - depth)}
            for depth, (name, params) in enumerate(groups.items())]


def lr_factor(step: int, steps: int, schedule: str, warmup: float) -> float:
    """The learning rate's multiple at optimizer step `step` of `steps`: from 1/32 up to 1
    over the first `warmup` share of the steps, then 1 (`constant`), down to 0 along a cosine
    (`cosine`), or linearly back down to 1/32 (`slanted`)."""
    rise = round(warmup * steps)
    if step < rise:
        return (1 + (SLANTED_RATIO - 1) * step / rise) / SLANTED_RATIO
    done = min((step - rise) / max(steps - rise, 1), 1.0)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * done))
    if schedule == "slanted":
        return (1 + (SLANTED_RATIO - 1) * (1 - done)) / SLANTED_RATIO
    return 1.0


class GradualUnfreezing(L.Callback):
    """ULMFiT's gradual unfreezing: the network's top layer group (its head) trains alone for
    `every` epochs, then the group below it joins, and so on down to the embedding. A
    parameter frozen before training (`model.net.freeze_embedding`) stays frozen.

    Written here, not Lightning's BaseFinetuning: that one unfreezes at an epoch's start by
    adding parameter groups to the optimizer, which a learning-rate schedule set per group
    does not follow; here every group is in the optimizer from the start, and a frozen one has
    no gradient, which Adam skips. The groups open by optimizer step, so a resumed run
    continues where it stopped.

    Args:
        every: epochs (a fraction allowed) before the next group down joins.
    """

    def __init__(self, every: float = 1.0) -> None:
        if isinstance(every, bool) or not isinstance(every, int | float) or not every > 0:
            raise ValueError(f"callbacks.gradual_unfreezing.every must be a number of epochs "
                             f"> 0, got {every!r}")
        self.every = every
        self.groups: list[list[nn.Parameter]] = []
        self.trainable: dict[int, bool] = {}
        self.steps_per_group = 1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size > 1:
            # DDP's reducer expects a gradient for each parameter it was built with.
            raise ValueError("callbacks.gradual_unfreezing trains on one device only; drop it "
                             "(callbacks.gradual_unfreezing=null) for a multi-device run")
        self.groups = list(layer_groups(pl_module.net).values())
        self.trainable = {id(p): p.requires_grad for group in self.groups for p in group}
        steps_per_epoch = math.ceil(trainer.num_training_batches
                                    / trainer.accumulate_grad_batches)
        self.steps_per_group = max(1, round(self.every * steps_per_epoch))

    def open_groups(self, step: int) -> int:
        """How many layer groups, from the top, train at optimizer step `step`."""
        return 1 + step // self.steps_per_group

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        opened = self.open_groups(trainer.global_step)
        for depth, group in enumerate(reversed(self.groups)):
            for param in group:
                param.requires_grad_(self.trainable[id(param)] and depth < opened)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule,
                     exception: BaseException) -> None:
        self._restore()

    def _restore(self) -> None:
        for group in self.groups:
            for param in group:
                param.requires_grad_(self.trainable[id(param)])


def scheduler(optimizer: torch.optim.Optimizer, schedule: str, warmup: float,
              steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate scheduler of `lr_factor` over `steps` optimizer steps."""
    if schedule == "cosine" and not warmup:
        # The form the cosine runs of docs/experiments.md used.
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, _Factor(steps, schedule, warmup))


class _Factor:
    """`lr_factor` as LambdaLR's picklable multiplier."""

    def __init__(self, steps: int, schedule: str, warmup: float) -> None:
        self.steps, self.schedule, self.warmup = steps, schedule, warmup

    def __call__(self, step: int) -> float:
        return lr_factor(step, self.steps, self.schedule, self.warmup)
