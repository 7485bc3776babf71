"""`TextClassifier`: a network (networks/) trained with Lightning, as lightning-hydra-template's
MNISTLitModule: a step that scores a batch, the loss (objectives.py), the metrics (metrics.py),
the optimizer, and what travels with every checkpoint (checkpoints.py). A stacked model
(stack.py) is called in `_scored_logits` and once per validation epoch."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import lightning as L
import torch
from torch import nn
from torchmetrics import MaxMetric, MeanMetric

from gru_lightning import checkpoints, finetuning
from gru_lightning.metrics import BEST, MONITOR, EpochOutputs, metric_collection
from gru_lightning.networks.base import NetworkSettings, predicted_classes, probabilities
from gru_lightning.objectives import (
    ClassWeights,
    adversarial_losses,
    class_weights,
    classification_loss,
)
from gru_lightning.preprocessing import TextEncoder

if TYPE_CHECKING:
    from gru_lightning.stack import Stack

Schedule = Literal["constant", "cosine", "slanted"]
STAGES = ("train", "val", "test")


class TextClassifier(L.LightningModule):
    """Text classes from token ids: the Keras notebook's model, generalised.

    Two classes keep the notebook's model exactly: one logit, sigmoid, binary cross-entropy.
    More classes get one logit per class and cross-entropy. The metrics of `metrics.METRICS`
    follow the task.

    Args:
        net: the network's settings (conf/model/net/); the network is built here, once.
        num_classes: classes of the task; train.py takes it from the data.
        optimizer: a partial optimizer that takes the parameters (`_partial_: true` in
            conf/model/); None for a classifier that only predicts.
        lr_schedule: "constant" (the notebook), "cosine": from the optimizer's lr down to 0
            over the run's steps (`trainer.max_epochs`), updated every step, or "slanted":
            linearly down to lr/32 (finetuning.py).
        warmup: the share of the run's steps over which the learning rate first rises
            linearly from lr/32 to lr (ULMFiT's slanted triangle: 0.1 with "slanted").
        lr_decay: discriminative learning rates: the head at the optimizer's lr, the layer
            group below it (the recurrent layers) at lr / lr_decay, the embedding at
            lr / lr_decay**2 (ULMFiT: 2.6); 1: one rate for all.
        stack: a model stacked on the network (stack.py, `ngram=nbsvm`), or None.
        class_weights: None (every text weighs the same: the notebook), "balanced" (each
            class weighs in the loss as much as any other: n / (classes * n_class) per text,
            for a macro-averaged metric), or "auto": balanced when the largest class has
            1.5x the texts of the smallest. From the training data's counts, in `setup`.
        adversarial: 0 (off), or adversarial training's perturbation size (Miyato et al.
            2017): each training text's loss is also taken with its embedded words moved
            along the loss's gradient by this share of their norm, and the two losses
            added (~2.3x the step's time on a CPU). The network needs `embed` and `classify`.
    """

    def __init__(self, net: NetworkSettings, num_classes: int = 2,
                 optimizer: Callable[..., torch.optim.Optimizer] | None = None,
                 lr_schedule: Schedule = "constant", stack: Stack | None = None,
                 class_weights: ClassWeights = None, adversarial: float = 0.0,
                 warmup: float = 0.0, lr_decay: float = 1.0) -> None:
        super().__init__()
        if lr_schedule not in finetuning.SCHEDULES:
            raise ValueError(f"model.lr_schedule must be one of {', '.join(finetuning.SCHEDULES)}"
                             f", got {lr_schedule!r}")
        if isinstance(warmup, bool) or not isinstance(warmup, int | float) or not (
                0 <= warmup < 1):
            raise ValueError(f"model.warmup must be a share of the steps in [0, 1), got "
                             f"{warmup!r}")
        if isinstance(lr_decay, bool) or not isinstance(lr_decay, int | float) or not (
                lr_decay > 0):
            raise ValueError(f"model.lr_decay must be a number > 0 (1: one learning rate), "
                             f"got {lr_decay!r}")
        if class_weights not in (None, "balanced", "auto"):
            raise ValueError(f"model.class_weights must be null, balanced or auto, got "
                             f"{class_weights!r}")
        if isinstance(adversarial, bool) or not isinstance(adversarial, int | float) or (
                adversarial < 0):
            raise ValueError(f"model.adversarial must be a number >= 0, got {adversarial!r}")
        self.save_hyperparameters(ignore=["net", "optimizer", "stack"])
        self.net_settings = net
        self.net = net.build(num_classes)
        if adversarial and not all(hasattr(self.net, m) for m in ("embed", "classify")):
            raise ValueError(f"model.adversarial needs a network with embed() and classify() "
                             f"methods; {type(self.net).__name__} has not both")
        self.make_optimizer = optimizer
        self.stack = stack
        self.binary = num_classes == 2
        # Per class; not in the state dict: a checkpoint loads whatever the weights were.
        self.register_buffer("class_weight", None, persistent=False)
        # Keyed "train_", ...: a ModuleDict key may not shadow nn.Module.train.
        self.metrics = nn.ModuleDict({f"{s}_": metric_collection(num_classes, f"{s}/")
                                      for s in STAGES})
        self.losses = nn.ModuleDict({f"{s}_": MeanMetric() for s in STAGES})
        self.test_net_acc = MeanMetric()  # a stack's network alone, synced as the losses are
        self.val_best = nn.ModuleDict({name: MaxMetric() for name in BEST})
        # Each stage keeps its steps' outputs in one growing tensor per column and feeds them
        # to torchmetrics once per epoch, which computes and syncs them across DDP processes:
        # updating the metrics every step cost ~0.5 ms a step on a 2-core CPU, and AUROC's
        # per-step tensors, kept all epoch, fragmented glibc's heap.
        self.outputs = {stage: EpochOutputs() for stage in STAGES}
        self.text_encoder: TextEncoder | None = None
        self.class_names: list[str] = (["neg", "pos"] if self.binary
                                       else [str(i) for i in range(num_classes)])
        self.class_values: list[str] | None = None  # the data's raw label of each class

    @classmethod
    def from_checkpoint(cls, path: str, map_location: str = "cpu") -> TextClassifier:
        """The trained classifier a checkpoint holds, ready to predict or test."""
        checkpoint = checkpoints.read(path)
        model = cls(checkpoints.network_settings(checkpoint), checkpoint["num_classes"],
                    stack=checkpoints.stack(checkpoint))
        model.restore(checkpoint)
        return model.to(map_location)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.net(ids)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Two classes: P(second class) `[batch]`; more: every class's `[batch, classes]`."""
        return probabilities(logits)

    # ---- steps ----------------------------------------------------------------------------

    def _scored_logits(self, stage: str, net_logits: torch.Tensor,
                       batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The logits a stage scores: the network's, or a stack's on top of them (in
        validation the network's: the stack is fitted on them at the epoch's end)."""
        if self.stack is None or stage == "val":
            return net_logits
        if stage == "train":
            return self.stack.train_logits(net_logits, batch)
        return self.stack.eval_logits(net_logits, batch)

    def model_step(self, stage: str, batch: dict[str, torch.Tensor]
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's scored logits and loss, kept for the epoch's metrics; in testing a
        stack's network's own logits too (`test/net_acc`)."""
        net_logits = self.net(batch["ids"])
        logits = self._scored_logits(stage, net_logits, batch)
        extra = ({"net_logits": net_logits.detach().float()}
                 if stage == "test" and self.stack is not None else {})
        loss = self.loss_fn(logits, batch["labels"])
        self._keep(stage, batch, logits, loss, **extra)
        return logits, loss

    def _keep(self, stage: str, batch: dict[str, torch.Tensor], logits: torch.Tensor,
              loss: torch.Tensor, **extra: torch.Tensor) -> None:
        """The step's outputs (and `extra` columns), for the epoch's metrics."""
        n = len(batch["labels"])
        features = {k: v for k, v in batch.items() if k != "ids"}
        self.outputs[stage].add(logits=logits.detach().float(), loss=loss.detach().expand(n),
                                **features, **extra)

    def _epoch_values(self, stage: str, outputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        metrics, loss = self.metrics[f"{stage}_"], self.losses[f"{stage}_"]
        if outputs and len(outputs["labels"]):
            metrics.update(self.probabilities(outputs["logits"]), outputs["labels"].long())
            loss.update(outputs["loss"])  # each text weighs its batch's mean loss once
        values = {**metrics.compute(), f"{stage}/loss": loss.compute()}
        metrics.reset()
        loss.reset()
        return values

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.hparams.adversarial:
            logits, loss, objective = adversarial_losses(
                self.net, batch["ids"], self.hparams.adversarial,
                lambda net_logits: self._scored_logits("train", net_logits, batch),
                lambda logits: self.loss_fn(logits, batch["labels"]))
            self._keep("train", batch, logits, loss)
        else:
            logits, loss = self.model_step("train", batch)
            objective = loss
        # global_step counts finished steps: this step is number global_step + 1; each
        # self.log call costs ~0.4 ms, so only the steps the logger writes log.
        if (self.trainer.global_step + 1) % self.trainer.log_every_n_steps == 0:
            predicted = predicted_classes(self.probabilities(logits.detach()))
            batch_acc = (predicted == batch["labels"]).float().mean()
            self.log_dict({"train/loss_step": loss, f"train/{MONITOR}_step": batch_acc},
                          on_step=True, on_epoch=False, prog_bar=True)
        return objective

    def on_train_epoch_end(self) -> None:
        values = self._epoch_values("train", self.outputs["train"].take())
        values[f"train/{MONITOR}_epoch"] = values.pop(f"train/{MONITOR}")
        values["train/loss_epoch"] = values.pop("train/loss")
        self.log_dict(values, prog_bar=True)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.model_step("val", batch)

    def on_validation_epoch_end(self) -> None:
        outputs, extra = self.outputs["val"].take(), {}
        if self.stack is not None and outputs:
            # The stack fits its weights on these outputs and scores them with the stack.
            logits, labels, extra = self.stack.fit_on_validation(
                outputs, self.all_gather, self.class_weight)
            outputs = {"logits": logits, "labels": labels,
                       "loss": self.loss_fn(logits, labels).expand(len(labels))}
        values = {**self._epoch_values("val", outputs), **extra}
        if not self.trainer.sanity_checking:
            for name, best in self.val_best.items():
                best(values[f"val/{name}"])
                values[f"val/{name}_best"] = best.compute()
        self.log_dict(values, prog_bar=True)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.model_step("test", batch)

    def on_test_epoch_end(self) -> None:
        outputs = self.outputs["test"].take()
        values = self._epoch_values("test", outputs)
        if self.stack is not None:  # beside the stack's: what the stacking adds
            values["test/net_acc"] = self._net_accuracy(outputs)
        self.log_dict(values)

    def _net_accuracy(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The network's own accuracy over every process's test texts."""
        if outputs and len(outputs["labels"]):
            predicted = predicted_classes(self.probabilities(outputs["net_logits"]))
            self.test_net_acc.update((predicted == outputs["labels"].long()).float())
        accuracy = self.test_net_acc.compute()
        self.test_net_acc.reset()
        return accuracy

    def predict_step(self, batch: dict[str, torch.Tensor] | torch.Tensor,
                     batch_idx: int = 0) -> torch.Tensor:
        """Probabilities (`probabilities`) for a batch, or for a tensor of ids."""
        batch = batch if isinstance(batch, dict) else {"ids": batch}
        return self.probabilities(self._scored_logits("predict", self.net(batch["ids"]), batch))

    def configure_optimizers(self) -> Any:
        if self.make_optimizer is None:
            raise RuntimeError("this classifier was built without an optimizer: it predicts only")
        params: Any = self.parameters()
        if self.hparams.lr_decay != 1:
            others = [p for name, p in self.named_parameters() if not name.startswith("net.")]
            params = finetuning.discriminative_param_groups(self.net, others,
                                                            self.hparams.lr_decay)
        optimizer = self.make_optimizer(params=params)
        for group in optimizer.param_groups:
            group["lr"] *= group.pop("lr_factor", 1.0)
        schedule, warmup = self.hparams.lr_schedule, self.hparams.warmup
        if schedule == "constant" and not warmup:
            return optimizer
        # Steps of the whole run (all epochs), so a resumed run continues the same curve.
        steps = self.trainer.estimated_stepping_batches
        if not math.isfinite(steps):
            raise ValueError(f"model.lr_schedule={schedule} with model.warmup={warmup} needs a "
                             "run of known length: set trainer.max_epochs or trainer.max_steps")
        scheduler = finetuning.scheduler(optimizer, schedule, warmup, steps)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- what travels with the checkpoint -------------------------------------------------

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        encoder = getattr(datamodule, "text_encoder", None)
        vocab_size = getattr(self.net_settings, "vocab_size", None)
        if encoder is not None:
            if vocab_size is not None and encoder.vocab_size > vocab_size:
                raise ValueError(
                    f"the data's vocabulary has {encoder.vocab_size} ids but "
                    f"model.net.vocab_size={vocab_size}; keep model.net.vocab_size at "
                    "${data.max_features}")
            self.text_encoder = encoder
        names = getattr(datamodule, "class_names", None)
        if names:
            if len(names) != self.hparams.num_classes:
                raise ValueError(
                    f"the data has {len(names)} classes ({', '.join(names)}) but the model "
                    f"{self.hparams.num_classes}; resume with the data it was trained on")
            self.class_names = list(names)
            self.class_values = getattr(datamodule, "class_values", None)
        if self.hparams.class_weights and hasattr(datamodule, "class_counts"):
            weights = class_weights(datamodule.class_counts(), self.hparams.class_weights,
                                    self.class_names)
            if weights is not None:
                self.class_weight = weights.to(self.device)

    def loss_fn(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """`objectives.classification_loss`, weighted by class where `class_weights` set
        weights."""
        return classification_loss(logits, labels, self.class_weight)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint.update(checkpoints.contents(
            self.net_settings, self.hparams.num_classes, self.class_names, self.text_encoder,
            self.stack, self.class_values))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoints.upgrade(checkpoint)
        self.class_names = list(checkpoint["class_names"])
        self.class_values = checkpoint.get("class_values")
        if self.stack is not None and checkpoint.get("stack") is not None:
            self.stack.load_state(checkpoint["stack"])
        saved = checkpoint.get("text_encoder")
        if saved is None:
            return
        if self.text_encoder is not None and self.text_encoder.to_dict() != saved:
            raise ValueError(
                "the checkpoint was trained with other preprocessing (vocabulary, maxlen or "
                "padding) than this run's data; resume with the data settings it was trained with"
            )
        self.text_encoder = TextEncoder.from_dict(saved)

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """The weights of `checkpoint` and what travels with them (class names, text encoder,
        the stack's state), without the training state."""
        self.on_load_checkpoint(checkpoint)
        self.load_state_dict(checkpoint["state_dict"])
