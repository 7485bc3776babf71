"""The classifier: Embedding -> GRU (or LSTM) -> Linear, trained with BCE-with-logits."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryF1Score,
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassF1Score,
)

from gru_lightning.fused_gru import FusedGRU
from gru_lightning.preprocessing import PAD_ID, UNK_ID, TextEncoder

Cell = Literal["gru", "lstm"]
Init = Literal["torch", "keras"]
Pooling = Literal["last", "max", "mean", "max_mean"]
Schedule = Literal["constant", "cosine"]
_POOLING_WIDTH = {"last": 1, "max": 1, "mean": 1, "max_mean": 2}
_RNN = {"gru": nn.GRU, "lstm": nn.LSTM}


class CheckpointError(RuntimeError):
    """A file that is not a usable checkpoint of this project."""


def read_checkpoint(path: str | Path, setting: str = "checkpoint ",
                    weights_only: bool = True) -> dict[str, Any]:
    """A checkpoint written by `python train.py`, read on the CPU; `CheckpointError` with one
    line naming `setting` and the file when it is missing, truncated or not a checkpoint.
    `weights_only=False` also reads what resuming needs (callback states), and so may run
    code from the file: for a run's own checkpoints only."""
    path = Path(path)
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
    return checkpoint


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"model.{name} must be a positive integer, got {value!r}")


def keras_init_(module: nn.Module) -> None:
    """Keras' default initializers, which matter at 3 epochs: embedding uniform(-0.05, 0.05),
    Glorot-uniform input kernels and orthogonal recurrent kernels per gate, zero biases,
    Glorot-uniform dense kernel."""
    for name, param in module.named_parameters():
        if name.startswith("embedding"):
            nn.init.uniform_(param, -0.05, 0.05)
        elif "bias" in name:
            nn.init.zeros_(param)
        elif "weight_ih" in name or "weight_hh" in name:
            init = nn.init.xavier_uniform_ if "weight_ih" in name else nn.init.orthogonal_
            # PyTorch stacks the gates' matrices as [gates * hidden, in]: one per gate.
            for gate in param.data.chunk(_gates(module), dim=0):
                init(gate)
        else:
            nn.init.xavier_uniform_(param)


def _gates(module: nn.Module) -> int:
    return 4 if isinstance(getattr(module, "rnn", None), nn.LSTM) else 3


class SentimentRNN(L.LightningModule):
    """Text classes from token ids: the Keras notebook's sentiment model, generalised.

    Two classes keep the notebook's model exactly: one logit, sigmoid, binary cross-entropy.
    More classes get one logit per class and cross-entropy. Accuracy, F1 (macro over the
    classes when there are more than two) and AUROC follow the task.

    Args:
        vocab_size: embedding rows (the data's `max_features`).
        embedding_dim: embedding width.
        hidden_size: recurrent state size per direction.
        num_layers: stacked recurrent layers.
        bidirectional: also read the review backwards; the two directions are concatenated.
        pooling: what the classifier sees of the last layer's outputs: "last" (the final
            state of each direction, as the notebook), or over the review's time steps,
            padding excluded: "max", "mean", or both concatenated ("max_mean").
        dropout: dropout on the pooled features before the classifier, and between stacked
            layers.
        embedding_dropout: spatial dropout on the embeddings (Keras' SpatialDropout1D): drops
            whole embedding channels of a review, the same ones at every step.
        word_dropout: in training, the share of a review's words replaced by the unknown word
            (Iyyer et al. 2015): the model cannot lean on any single word.
        cell: "gru" or "lstm".
        init: "keras" (Keras' default initializers) or "torch" (PyTorch's).
        lr: Adam learning rate.
        lr_schedule: "constant" (the notebook), or "cosine": from `lr` down to 0 over the
            run's steps (`trainer.max_epochs`), updated every step.
        adam_eps: Adam's epsilon: PyTorch's default 1e-8 (Keras uses 1e-7).
        weight_decay: decoupled weight decay (AdamW's); 0 is plain Adam, as the notebook.
        fused_adam: Adam's fused kernel (one op for all parameters): the same update rule,
            ~3 ms less per step on a 2-core CPU; rounding may differ from the for-each one.
        fused_gru: run the GRU on CPU with this project's fused kernel (`fused_gru.py`):
            nn.GRU's parameters and math, ~2x faster forward + backward. It is compiled on
            first use. On a GPU, and for the LSTM, PyTorch's own kernels run either way.
        num_classes: classes of the task; `train.py` takes it from the data.
    """

    def __init__(
        self,
        vocab_size: int = 10000,
        embedding_dim: int = 128,
        hidden_size: int = 64,
        num_layers: int = 1,
        bidirectional: bool = False,
        pooling: Pooling = "last",
        dropout: float = 0.0,
        embedding_dropout: float = 0.0,
        word_dropout: float = 0.0,
        cell: Cell = "gru",
        init: Init = "keras",
        lr: float = 1e-3,
        lr_schedule: Schedule = "constant",
        adam_eps: float = 1e-8,
        weight_decay: float = 0.0,
        fused_adam: bool = True,
        fused_gru: bool = True,
        num_classes: int = 2,
    ) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("embedding_dim", embedding_dim),
                            ("hidden_size", hidden_size), ("num_layers", num_layers)):
            _positive_int(name, value)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"model.num_classes must be an integer >= 2, got {num_classes!r}")
        for name, value in (("dropout", dropout), ("embedding_dropout", embedding_dropout),
                            ("word_dropout", word_dropout)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"model.{name} must be in [0, 1), got {value!r}")
        if cell not in _RNN:
            raise ValueError(f"model.cell must be one of {sorted(_RNN)}, got {cell!r}")
        if pooling not in _POOLING_WIDTH:
            raise ValueError(
                f"model.pooling must be one of {sorted(_POOLING_WIDTH)}, got {pooling!r}")
        if init not in ("torch", "keras"):
            raise ValueError(f"model.init must be 'torch' or 'keras', got {init!r}")
        if not lr > 0:
            raise ValueError(f"model.lr must be positive, got {lr!r}")
        if lr_schedule not in ("constant", "cosine"):
            raise ValueError(
                f"model.lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")
        if not adam_eps > 0:
            raise ValueError(f"model.adam_eps must be positive, got {adam_eps!r}")
        if not weight_decay >= 0:
            raise ValueError(f"model.weight_decay must be >= 0, got {weight_decay!r}")
        self.save_hyperparameters()
        self.num_directions = 2 if bidirectional else 1
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.embedding_dropout = nn.Dropout1d(embedding_dropout)  # over [batch, channel, time]
        rnn_class = FusedGRU if cell == "gru" and fused_gru else _RNN[cell]
        self.rnn = rnn_class(embedding_dim, hidden_size, num_layers=num_layers, batch_first=True,
                              bidirectional=bidirectional,
                              dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        # Two classes: one logit (the notebook's Dense(1, sigmoid)); more: one per class.
        outputs = 1 if num_classes == 2 else num_classes
        self.head = nn.Linear(hidden_size * self.num_directions * _POOLING_WIDTH[pooling],
                              outputs)
        if init == "keras":
            keras_init_(self)
        self.binary = num_classes == 2
        self.loss_fn = nn.BCEWithLogitsLoss() if self.binary else nn.CrossEntropyLoss()
        # Set from the datamodule (fit) or the checkpoint (load): how text becomes ids, and
        # what the classes are called.
        self.text_encoder: TextEncoder | None = None
        self.class_names: list[str] = ["neg", "pos"] if self.binary else [
            str(i) for i in range(num_classes)]

        def metrics(prefix: str) -> MetricCollection:
            if self.binary:
                return MetricCollection({"acc": BinaryAccuracy(), "f1": BinaryF1Score(),
                                         "auroc": BinaryAUROC()}, prefix=prefix)
            k = num_classes
            return MetricCollection(
                {"acc": MulticlassAccuracy(k, average="micro"),
                 "f1": MulticlassF1Score(k, average="macro"),
                 "auroc": MulticlassAUROC(k, average="macro")}, prefix=prefix)

        # Each stage accumulates its metrics and mean loss with cheap updates, and logs them
        # once per epoch (torchmetrics syncs them across DDP processes). Training also logs
        # per step, but only on the steps the logger writes: on a 2-core CPU each self.log
        # call costs ~0.4 ms and a Metric's forward more, together ~8% of a 25 ms step.
        for stage in ("train", "val", "test"):
            setattr(self, f"{stage}_metrics", metrics(f"{stage}/"))
            setattr(self, f"{stage}_loss", MeanMetric())
        self.val_acc_best = MaxMetric()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids `[batch, time]` -> logits: `[batch]` for two classes, else
        `[batch, classes]`."""
        if self.hparams.word_dropout and self.training:
            dropped = torch.rand(ids.shape, device=ids.device) < self.hparams.word_dropout
            ids = ids.masked_fill(dropped & (ids != PAD_ID), UNK_ID)
        if isinstance(self.rnn, FusedGRU) and not (self.hparams.embedding_dropout
                                                   and self.training):
            # The first projection per distinct word, not per token (fused_gru.py).
            outputs, state = self.rnn.forward_ids(ids, self.embedding.weight)
        else:
            embedded = self.embedding(ids)
            if self.hparams.embedding_dropout and self.training:
                embedded = self.embedding_dropout(embedded.transpose(1, 2)).transpose(1, 2)
            outputs, state = self.rnn(embedded)
        pooling = self.hparams.pooling
        if pooling == "last":
            hidden = state[0] if isinstance(state, tuple) else state  # LSTM: (h, c)
            # Final state of the last layer, one per direction: [directions, batch, hidden].
            features = torch.cat(hidden[-self.num_directions:].unbind(0), dim=-1)
        else:
            features = self._pool(outputs, (ids != PAD_ID).unsqueeze(-1), pooling)
        logits = self.head(self.dropout(features))
        return logits.squeeze(-1) if self.binary else logits

    @staticmethod
    def _pool(outputs: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
        """Max and/or mean over the time steps where `mask` is set; an all-padding review
        pools to zeros."""
        pooled = []
        if pooling in ("max", "max_mean"):
            highest = outputs.masked_fill(~mask, float("-inf")).amax(dim=1)
            pooled.append(highest.masked_fill(~mask.any(dim=1), 0.0))
        if pooling in ("mean", "max_mean"):
            total = (outputs * mask).sum(dim=1)
            pooled.append(total / mask.sum(dim=1).clamp(min=1))
        return torch.cat(pooled, dim=-1)

    # ---- steps ----------------------------------------------------------------------------

    def _update(self, stage: str,
                batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Loss and probabilities of a batch, accumulated into the stage's epoch metrics."""
        ids, labels = batch
        logits = self(ids)
        loss = self.loss_fn(logits, labels)
        probs = self.probabilities(logits.detach())
        getattr(self, f"{stage}_metrics").update(probs, labels.long())
        getattr(self, f"{stage}_loss").update(loss.detach(), weight=len(labels))
        return loss, probs, labels

    def _epoch_values(self, stage: str) -> dict[str, torch.Tensor]:
        metrics, loss = getattr(self, f"{stage}_metrics"), getattr(self, f"{stage}_loss")
        values = {**metrics.compute(), f"{stage}/loss": loss.compute()}
        metrics.reset()
        loss.reset()
        return values

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor],
                      batch_idx: int) -> torch.Tensor:
        loss, probs, labels = self._update("train", batch)
        # global_step counts finished steps: this step is number global_step + 1.
        if (self.trainer.global_step + 1) % self.trainer.log_every_n_steps == 0:
            predicted = (probs >= 0.5) if self.binary else probs.argmax(-1)
            batch_acc = (predicted == labels).float().mean()
            self.log_dict({"train/loss_step": loss, "train/acc_step": batch_acc},
                          on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def on_train_epoch_end(self) -> None:
        values = self._epoch_values("train")
        values["train/acc_epoch"] = values.pop("train/acc")
        values["train/loss_epoch"] = values.pop("train/loss")
        self.log_dict(values, prog_bar=True)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._update("val", batch)

    def on_validation_epoch_end(self) -> None:
        values = self._epoch_values("val")
        if not self.trainer.sanity_checking:
            self.val_acc_best(values["val/acc"])
            values["val/acc_best"] = self.val_acc_best.compute()
        self.log_dict(values, prog_bar=True)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._update("test", batch)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self._epoch_values("test"))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Two classes: P(second class) `[batch]`; more: every class's `[batch, classes]`."""
        return torch.sigmoid(logits) if self.binary else torch.softmax(logits, dim=-1)

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Probabilities (`probabilities`) for a batch of ids (or `(ids, labels)`)."""
        ids = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.probabilities(self(ids))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr,
                                     eps=self.hparams.adam_eps,
                                     weight_decay=self.hparams.weight_decay,
                                     decoupled_weight_decay=True,
                                     fused=self.hparams.fused_adam or None)
        if self.hparams.lr_schedule == "constant":
            return optimizer
        # Steps of the whole run (all epochs), so a resumed run continues the same curve.
        steps = self.trainer.estimated_stepping_batches
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- preprocessing travels with the checkpoint ----------------------------------------

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        encoder = getattr(datamodule, "text_encoder", None)
        if encoder is not None:
            if encoder.vocab_size > self.hparams.vocab_size:
                raise ValueError(
                    f"the data's vocabulary has {encoder.vocab_size} ids but "
                    f"model.vocab_size={self.hparams.vocab_size}; keep model.vocab_size at "
                    "${data.max_features}"
                )
            self.text_encoder = encoder
        names = getattr(datamodule, "class_names", None)
        if names:
            if len(names) != self.hparams.num_classes:
                raise ValueError(
                    f"the data has {len(names)} classes ({', '.join(names)}) but the model "
                    f"{self.hparams.num_classes}; resume with the data it was trained on")
            self.class_names = list(names)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["class_names"] = list(self.class_names)
        if self.text_encoder is not None:
            checkpoint["text_encoder"] = self.text_encoder.to_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if names := checkpoint.get("class_names"):  # older checkpoints: IMDB's neg/pos
            self.class_names = list(names)
        saved = checkpoint.get("text_encoder")
        if saved is None:
            return
        if self.text_encoder is not None and self.text_encoder.to_dict() != saved:
            raise ValueError(
                "the checkpoint was trained with other preprocessing (vocabulary, maxlen or "
                "padding) than this run's data; resume with the data settings it was trained with"
            )
        self.text_encoder = TextEncoder.from_dict(saved)
