"""The classifier in training: `network.TextRNN` with Lightning's loop, the loss, the
metrics and the optimizer."""

from __future__ import annotations

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

from gru_lightning.network import Cell, CheckpointError, Init, Pooling, TextRNN, read_checkpoint
from gru_lightning.ngrams import NGramModel, fit_stacking
from gru_lightning.preprocessing import TextEncoder

Schedule = Literal["constant", "cosine"]
__all__ = ["CheckpointError", "SentimentRNN", "read_checkpoint"]


class EpochRows:
    """One stage's per-sample rows of an epoch in one tensor that doubles when full: adding
    a batch is one copy, and nothing allocated by a step outlives it."""

    def __init__(self) -> None:
        self.rows: torch.Tensor | None = None
        self.count = 0

    def add(self, rows: torch.Tensor) -> None:
        rows = rows.float()
        end = self.count + len(rows)
        if self.rows is None or end > len(self.rows):
            grown = rows.new_empty((max(1024, 2 * end), rows.shape[1]))
            if self.rows is not None and self.count:
                grown[: self.count] = self.rows[: self.count]
            self.rows = grown
        self.rows[self.count : end] = rows
        self.count = end

    def take(self) -> torch.Tensor:
        """The epoch's rows (a view, valid until the next `add`); the buffer starts over."""
        rows = self.rows[: self.count] if self.rows is not None else torch.empty(0)
        self.count = 0
        return rows


class SentimentRNN(TextRNN, L.LightningModule):
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
        if not lr > 0:
            raise ValueError(f"model.lr must be positive, got {lr!r}")
        if lr_schedule not in ("constant", "cosine"):
            raise ValueError(
                f"model.lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")
        if not adam_eps > 0:
            raise ValueError(f"model.adam_eps must be positive, got {adam_eps!r}")
        if not weight_decay >= 0:
            raise ValueError(f"model.weight_decay must be >= 0, got {weight_decay!r}")
        super().__init__(vocab_size=vocab_size, embedding_dim=embedding_dim,
                         hidden_size=hidden_size, num_layers=num_layers,
                         bidirectional=bidirectional, pooling=pooling, dropout=dropout,
                         embedding_dropout=embedding_dropout, word_dropout=word_dropout,
                         cell=cell, init=init, fused_gru=fused_gru, num_classes=num_classes)
        self.save_hyperparameters()
        self.loss_fn = nn.BCEWithLogitsLoss() if self.binary else nn.CrossEntropyLoss()

        def metrics(prefix: str) -> MetricCollection:
            if self.binary:
                return MetricCollection({"acc": BinaryAccuracy(), "f1": BinaryF1Score(),
                                         "auroc": BinaryAUROC()}, prefix=prefix)
            k = num_classes
            return MetricCollection(
                {"acc": MulticlassAccuracy(k, average="micro"),
                 "f1": MulticlassF1Score(k, average="macro"),
                 "auroc": MulticlassAUROC(k, average="macro")}, prefix=prefix)

        # Each stage keeps its steps' probabilities, labels and losses in one growing tensor
        # (EpochRows) and feeds them to torchmetrics once per epoch, which computes and syncs
        # them across DDP processes. Updating the metrics every step cost ~0.5 ms a step on a
        # 2-core CPU (bench/profile_epoch.py), and AUROC's per-step tensors, kept all epoch,
        # fragmented glibc's heap. Training also logs per step, but only on the steps the
        # logger writes: each self.log call costs ~0.4 ms.
        for stage in ("train", "val", "test"):
            setattr(self, f"{stage}_metrics", metrics(f"{stage}/"))
            setattr(self, f"{stage}_loss", MeanMetric())
        self._rows = {stage: EpochRows() for stage in ("train", "val", "test")}
        self.val_acc_best = MaxMetric()
        # With an n-gram model: validation's rows of (logit, n-gram scores, label), for the
        # stacking fit.
        self._val_logits = EpochRows()

    # ---- steps ----------------------------------------------------------------------------

    def _update(self, stage: str,
                batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """Loss and probabilities of a batch, accumulated into the stage's epoch metrics.

        A batch with n-gram scores (the n-gram stage ran): training fits the network on top
        of the n-gram model's out-of-fold logits (`ngram.folds`; without them the training
        batches carry none and the network trains alone); validation keeps the network's
        logits and the scores to fit the stacking weights at its end; testing scores the
        stack."""
        ids, labels, *ngram_scores = batch  # scores: [batch, 2], see NGramModel.scores
        logits = self(ids)
        if ngram_scores and stage == "train":
            logits = logits + ngram_scores[0][:, 0]
        if ngram_scores and stage == "val":
            self._val_logits.add(torch.cat(
                [logits.detach()[:, None], ngram_scores[0], labels[:, None]], 1))
            return ()
        if ngram_scores and stage == "test":
            logits = self.stacked_logits(logits, ngram_scores[0])
        return self._accumulate(stage, logits, labels)

    def _accumulate(self, stage: str, logits: torch.Tensor,
                    labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        loss = self.loss_fn(logits, labels)
        probs = self.probabilities(logits.detach())
        n = len(labels)
        self._rows[stage].add(torch.cat(
            [probs.reshape(n, -1), labels.reshape(n, 1), loss.detach().expand(n, 1)], 1))
        return loss, probs, labels

    def _epoch_values(self, stage: str) -> dict[str, torch.Tensor]:
        metrics, loss = getattr(self, f"{stage}_metrics"), getattr(self, f"{stage}_loss")
        rows = self._rows[stage].take()
        if len(rows):
            probs = rows[:, 0] if self.binary else rows[:, :-2]
            metrics.update(probs, rows[:, -2].long())
            loss.update(rows[:, -1])  # each sample weighs its batch's mean loss once
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
        stacked = {}
        if self._val_logits.count:
            # All processes' texts (DDP), so every process fits the same stacking weights.
            rows = self.all_gather(self._val_logits.take()).reshape(-1, 4)
            rnn, ngram, labels = rows[:, 0], rows[:, 1:3], rows[:, 3]
            self.stacking = fit_stacking(rnn, ngram, labels)
            stacked["val/rnn_acc"] = ((rnn > 0).float() == labels).float().mean()
            self._accumulate("val", self.stacked_logits(rnn, ngram), labels)
        values = {**self._epoch_values("val"), **stacked}
        if not self.trainer.sanity_checking:
            self.val_acc_best(values["val/acc"])
            values["val/acc_best"] = self.val_acc_best.compute()
        self.log_dict(values, prog_bar=True)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._update("test", batch)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self._epoch_values("test"))

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Probabilities (`probabilities`) for a batch of ids, or `(ids, labels)`, or
        `(ids, labels, ngram_scores)` (the stack's)."""
        batch = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
        logits = self(batch[0])
        if len(batch) == 3:
            logits = self.stacked_logits(logits, batch[2])
        return self.probabilities(logits)

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
        if self.ngram is not None:
            checkpoint["ngram"] = self.ngram.to_dict()
            checkpoint["stacking"] = self.stacking

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if names := checkpoint.get("class_names"):  # older checkpoints: IMDB's neg/pos
            self.class_names = list(names)
        if "ngram" in checkpoint:
            self.ngram = NGramModel.from_dict(checkpoint["ngram"])
            self.stacking = checkpoint["stacking"]
        saved = checkpoint.get("text_encoder")
        if saved is None:
            return
        if self.text_encoder is not None and self.text_encoder.to_dict() != saved:
            raise ValueError(
                "the checkpoint was trained with other preprocessing (vocabulary, maxlen or "
                "padding) than this run's data; resume with the data settings it was trained with"
            )
        self.text_encoder = TextEncoder.from_dict(saved)
