"""The recurrent network: token ids -> Embedding -> GRU (or LSTM) -> pooling -> Linear ->
logits. Its defaults are the Keras notebook's: Embedding(10000, 128) -> GRU(64) -> Dense(1),
1,317,313 parameters, Keras' initializers."""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import nn

from gru_lightning.networks.base import NetworkSettings, share
from gru_lightning.preprocessing import PAD_ID, UNK_ID
from gru_lightning.runtime.fused_gru import FusedGRU
from gru_lightning.settings import positive_int

Cell = Literal["gru", "lstm"]
Init = Literal["torch", "keras"]
Pooling = Literal["last", "max", "mean", "max_mean"]
POOLING_WIDTH = {"last": 1, "max": 1, "mean": 1, "max_mean": 2}
CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}


@dataclasses.dataclass(frozen=True)
class RNN(NetworkSettings):
    """A GRU or LSTM text classifier's settings (`conf/model/net/rnn.yaml`)."""

    vocab_size: int | str = 10000
    """Embedding rows: the data's max_features ("auto": the data's vocabulary, filled in by
    `with_vocabulary` once the data is read)."""
    embedding_dim: int = 128
    """Embedding width."""
    hidden_size: int = 64
    """Recurrent state size per direction."""
    num_layers: int = 1
    """Stacked recurrent layers."""
    bidirectional: bool = False
    """Also read the text backwards; the two directions are concatenated."""
    pooling: Pooling = "last"
    """What the classifier sees: the final state of each direction ("last", the notebook),
    or "max", "mean" or both ("max_mean") over the time steps, padding excluded."""
    dropout: float = 0.0
    """Dropout on the pooled features before the classifier, and between stacked layers."""
    embedding_dropout: float = 0.0
    """Spatial dropout on the embeddings (Keras' SpatialDropout1D): whole channels of a text."""
    word_dropout: float = 0.0
    """In training, the share of words replaced by the unknown word (Iyyer et al. 2015)."""
    cell: Cell = "gru"
    """"gru" or "lstm"."""
    init: Init = "keras"
    """"keras" (Keras' default initializers, which matter at 3 epochs) or "torch"."""
    freeze_embedding: bool = False
    """Keep the embedding as initialised (word vectors, `vectors=`), not trained."""
    fused_gru: bool = True
    """The GRU on the CPU with this project's fused kernel (runtime/fused_gru.py): nn.GRU's
    parameters and math, ~2x faster. On a GPU, and for the LSTM, PyTorch's kernels run."""

    def __post_init__(self) -> None:
        for name in ("vocab_size", "embedding_dim", "hidden_size", "num_layers"):
            if not (name == "vocab_size" and self.vocab_size == "auto"):
                positive_int(f"model.net.{name}", getattr(self, name))
        for name in ("dropout", "embedding_dropout", "word_dropout"):
            share(name, getattr(self, name))
        if self.cell not in CELLS:
            raise ValueError(f"model.net.cell must be one of {sorted(CELLS)}, got {self.cell!r}")
        if self.pooling not in POOLING_WIDTH:
            raise ValueError(f"model.net.pooling must be one of {sorted(POOLING_WIDTH)}, got "
                             f"{self.pooling!r}")
        if self.init not in ("torch", "keras"):
            raise ValueError(f"model.net.init must be 'torch' or 'keras', got {self.init!r}")

    def build(self, num_classes: int) -> RNNClassifier:
        if self.vocab_size == "auto":
            raise ValueError("model.net.vocab_size is auto: with_vocabulary(size) sets it from "
                             "the data first")
        return RNNClassifier(self, num_classes)


def keras_init_(network: RNNClassifier) -> None:
    """Keras' default initializers: embedding uniform(-0.05, 0.05), Glorot-uniform input
    kernels and orthogonal recurrent kernels per gate, zero biases, Glorot-uniform dense
    kernel."""
    gates = 4 if isinstance(network.rnn, nn.LSTM) else 3
    for name, param in network.named_parameters():
        if name.startswith("embedding"):
            nn.init.uniform_(param, -0.05, 0.05)
        elif "bias" in name:
            nn.init.zeros_(param)
        elif "weight_ih" in name or "weight_hh" in name:
            init = nn.init.xavier_uniform_ if "weight_ih" in name else nn.init.orthogonal_
            # PyTorch stacks the gates' matrices as [gates * hidden, in]: one per gate.
            for gate in param.data.chunk(gates, dim=0):
                init(gate)
        else:
            nn.init.xavier_uniform_(param)


class RNNClassifier(nn.Module):
    """Text classes from token ids, built from `RNN` settings. Two classes: one logit (the
    notebook's Dense(1, sigmoid)); more: one logit per class."""

    def __init__(self, settings: RNN, num_classes: int) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        s = settings
        self.settings = settings
        self.num_classes = num_classes
        self.pooling = s.pooling
        self.word_dropout = s.word_dropout
        self.num_directions = 2 if s.bidirectional else 1
        self.embedding = nn.Embedding(s.vocab_size, s.embedding_dim)
        self.embedding.weight.requires_grad_(not s.freeze_embedding)
        self.embedding_dropout = nn.Dropout1d(s.embedding_dropout)  # over [batch, channel, time]
        rnn_class = FusedGRU if s.cell == "gru" and s.fused_gru else CELLS[s.cell]
        self.rnn = rnn_class(s.embedding_dim, s.hidden_size, num_layers=s.num_layers,
                             batch_first=True, bidirectional=s.bidirectional,
                             dropout=s.dropout if s.num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(s.dropout)
        self.head = nn.Linear(s.hidden_size * self.num_directions * POOLING_WIDTH[s.pooling],
                              1 if num_classes == 2 else num_classes)
        if s.init == "keras":
            keras_init_(self)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids `[batch, time]` -> logits: `[batch]` for two classes, else
        `[batch, classes]`."""
        return self._head(ids, *self._recurrence(ids))

    def drop_words(self, ids: torch.Tensor) -> torch.Tensor:
        """In training, `word_dropout` of the words replaced by the unknown word."""
        if self.word_dropout and self.training:
            dropped = torch.rand(ids.shape, device=ids.device) < self.word_dropout
            ids = ids.masked_fill(dropped & (ids != PAD_ID), UNK_ID)
        return ids

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """The embedded words `[batch, time, embedding_dim]`, after word and spatial dropout:
        what adversarial training (`model.adversarial`) perturbs."""
        embedded = self.embedding(self.drop_words(ids))
        if self.embedding_dropout.p and self.training:
            embedded = self.embedding_dropout(embedded.transpose(1, 2)).transpose(1, 2)
        return embedded

    def classify(self, embedded: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Logits from embedded words (`embed`, perturbed or not); `ids` mark the padding."""
        return self._head(ids, *self._recurrence(ids, embedded))

    def _recurrence(self, ids: torch.Tensor, embedded: torch.Tensor | None = None,
                    ) -> tuple[torch.Tensor, torch.Tensor | tuple]:
        # The recurrence in float32 whatever the precision: CUDA autocast runs cuDNN's RNN in
        # float16 even under bf16-mixed (which has no gradient scaler), and the fused CPU
        # kernel takes float32 and float64 only.
        with torch.autocast(ids.device.type, enabled=False):
            if embedded is not None:
                return self.rnn(embedded)
            if isinstance(self.rnn, FusedGRU) and not (self.embedding_dropout.p and self.training):
                # The first projection per distinct word, not per token (fused_gru.py).
                return self.rnn.forward_ids(self.drop_words(ids), self.embedding.weight)
            return self.rnn(self.embed(ids))

    def _head(self, ids: torch.Tensor, outputs: torch.Tensor,
              state: torch.Tensor | tuple) -> torch.Tensor:
        if self.pooling == "last":
            hidden = state[0] if isinstance(state, tuple) else state  # LSTM: (h, c)
            # Final state of the last layer, one per direction: [directions, batch, hidden].
            features = torch.cat(hidden[-self.num_directions:].unbind(0), dim=-1)
        else:
            features = masked_pool(outputs, (ids != PAD_ID).unsqueeze(-1), self.pooling)
        logits = self.head(self.dropout(features))
        return logits.squeeze(-1) if self.num_classes == 2 else logits


def masked_pool(outputs: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Max and/or mean over the time steps where `mask` is set; an all-padding text pools to
    zeros."""
    pooled = []
    if pooling in ("max", "max_mean"):
        highest = outputs.masked_fill(~mask, float("-inf")).amax(dim=1)
        pooled.append(highest.masked_fill(~mask.any(dim=1), 0.0))
    if pooling in ("mean", "max_mean"):
        total = (outputs * mask).sum(dim=1)
        pooled.append(total / mask.sum(dim=1).clamp(min=1))
    return torch.cat(pooled, dim=-1)
