"""The network alone, a plain `nn.Module`: token ids -> Embedding -> GRU (or LSTM) ->
pooling -> Linear -> logits. `model.SentimentRNN` adds training to it (Lightning, losses,
metrics, optimizer); prediction needs only this, so `predict` starts without Lightning."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from gru_lightning.fused_gru import FusedGRU
from gru_lightning.ngrams import NGramModel, stack
from gru_lightning.preprocessing import PAD_ID, UNK_ID, TextEncoder

Cell = Literal["gru", "lstm"]
Init = Literal["torch", "keras"]
Pooling = Literal["last", "max", "mean", "max_mean"]
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


class TextRNN(nn.Module):
    """Text classes from token ids; the arguments are `SentimentRNN`'s of the same names.

    Two classes: one logit (the notebook's Dense(1, sigmoid)); more: one logit per class.
    `text_encoder` and `class_names` say how text becomes ids and what the classes are
    called; training and checkpoints set them.
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
        self.pooling = pooling
        self.word_dropout = word_dropout
        self.num_directions = 2 if bidirectional else 1
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.embedding_dropout = nn.Dropout1d(embedding_dropout)  # over [batch, channel, time]
        rnn_class = FusedGRU if cell == "gru" and fused_gru else _RNN[cell]
        self.rnn = rnn_class(embedding_dim, hidden_size, num_layers=num_layers, batch_first=True,
                              bidirectional=bidirectional,
                              dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.binary = num_classes == 2
        self.head = nn.Linear(hidden_size * self.num_directions * _POOLING_WIDTH[pooling],
                              1 if self.binary else num_classes)
        if init == "keras":
            keras_init_(self)
        self.text_encoder: TextEncoder | None = None
        self.class_names: list[str] = ["neg", "pos"] if self.binary else [
            str(i) for i in range(num_classes)]
        # Set where an n-gram model is stacked on the network (train.py's n-gram stage): its
        # logit joins this one with the weights of `ngrams.fit_stacking`. Plain attributes,
        # not buffers: weight averaging (callbacks=ema) leaves them alone.
        self.ngram: NGramModel | None = None
        self.stacking: dict[str, float] | None = None

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any]) -> TextRNN:
        """The network, its text encoder and class names from a checkpoint's contents."""
        import inspect

        arguments = inspect.signature(cls.__init__).parameters
        hyper = {k: v for k, v in checkpoint["hyper_parameters"].items() if k in arguments}
        network = cls(**hyper)
        network.load_state_dict(checkpoint["state_dict"])
        network.text_encoder = TextEncoder.from_dict(checkpoint["text_encoder"])
        network.class_names = list(checkpoint.get("class_names") or network.class_names)
        if "ngram" in checkpoint:
            network.ngram = NGramModel.from_dict(checkpoint["ngram"])
            network.stacking = dict(checkpoint["stacking"])
        return network

    def stacked_logits(self, rnn_logits: torch.Tensor,
                       ngram_scores: torch.Tensor) -> torch.Tensor:
        """The network's logits and the n-gram model's `scores` combined with the stacking
        weights fitted on the validation texts."""
        if self.stacking is None:
            raise RuntimeError("no stacking weights: they are fitted at the end of validation")
        return stack(self.stacking, rnn_logits, ngram_scores)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids `[batch, time]` -> logits: `[batch]` for two classes, else
        `[batch, classes]`."""
        if self.word_dropout and self.training:
            dropped = torch.rand(ids.shape, device=ids.device) < self.word_dropout
            ids = ids.masked_fill(dropped & (ids != PAD_ID), UNK_ID)
        if isinstance(self.rnn, FusedGRU) and not (self.embedding_dropout.p and self.training):
            # The first projection per distinct word, not per token (fused_gru.py).
            outputs, state = self.rnn.forward_ids(ids, self.embedding.weight)
        else:
            embedded = self.embedding(ids)
            if self.embedding_dropout.p and self.training:
                embedded = self.embedding_dropout(embedded.transpose(1, 2)).transpose(1, 2)
            outputs, state = self.rnn(embedded)
        pooling = self.pooling
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

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Two classes: P(second class) `[batch]`; more: every class's `[batch, classes]`."""
        return torch.sigmoid(logits) if self.binary else torch.softmax(logits, dim=-1)

