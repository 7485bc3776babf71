"""`LanguageModelPretraining`: the network's embedding and recurrent layers pre-trained as a
language model on the training texts and unlabeled ones (`pretrain=lm`), a stage before
training, as ULMFiT's in-domain stage (Howard & Ruder 2018) at a CPU's scale.

    texts (training + pretrain.unlabeled_file) -> one stream of word ids (the data's
    vocabulary; each text ends with the padding id as its end marker) -> rows of `bptt`
    tokens, the state carried from one to the next (truncated back-propagation)
    -> the network's embedding and cell -> adaptive softmax (Grave et al. 2017: the frequent
    words a full softmax, the rare ones smaller clusters; ~3.5x a full softmax's speed at
    10,000 words on 2 cores, docs/experiments.md) -> next word's log-likelihood

It starts from the network's own initial weights (word vectors included, `vectors=`), and
copies its result back into them: the embedding and the recurrent weights, nothing of the
classifier's head. A bidirectional network gets a second model, trained on the reversed
stream, for its reverse direction. The result is cached beside the tokenized data, keyed by
everything that changes it; each pass over the texts ends with a checkpoint there, so a
stopped stage resumes from its last pass. `path=` reads a result file instead (a sweep
pre-trains once).

The loop is written here, not a Lightning Trainer: Lightning 2 has no truncated
back-propagation, and the stage is one loop whose state (the carried hidden state, the
position in the stream, the budget) is its own.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tokenizers import Tokenizer
from torch import nn

from gru_lightning.data import cache
from gru_lightning.data.base import file_signature
from gru_lightning.preprocessing import PAD_ID
from gru_lightning.runtime.fused_gru import FusedGRU
from gru_lightning.settings import positive_int

if TYPE_CHECKING:
    from gru_lightning.data.datamodule import TextDataModule

log = logging.getLogger(__name__)
FORMAT_VERSION = 1  # bump when the same settings pre-train differently
LOG_EVERY = 50  # steps between progress lines


class LanguageModel(nn.Module):
    """Next-word prediction with a network's embedding and cell (one direction)."""

    def __init__(self, embedding: nn.Embedding, rnn: nn.RNNBase, cutoffs: Sequence[int]
                 ) -> None:
        super().__init__()
        self.embedding = embedding
        self.rnn = rnn
        self.softmax = nn.AdaptiveLogSoftmaxWithLoss(rnn.hidden_size, embedding.num_embeddings,
                                                     list(cutoffs), div_value=4.0)

    def forward(self, ids: torch.Tensor, targets: torch.Tensor, state: Any = None
                ) -> tuple[torch.Tensor, Any]:
        """The mean negative log-likelihood of `targets` (the words after `ids`), and the
        state to carry into the next rows (detached)."""
        if isinstance(self.rnn, FusedGRU):  # the input projection once per distinct word
            outputs, state = self.rnn.forward_ids(ids, self.embedding.weight, state)
        else:
            outputs, state = self.rnn(self.embedding(ids), state)
        loss = self.softmax(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1)).loss
        state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        return loss, state


class LanguageModelPretraining:
    """The stage's settings (conf/pretrain/lm.yaml).

    Args:
        unlabeled_file: more texts (one per line, or .csv/.jsonl/.parquet with a `text`
            column) beside the training texts; never the validation or test texts.
        epochs: passes over the texts.
        max_minutes: a time budget for the stage (half for each model of a bidirectional
            network, the second getting what the first left): a model stops after the step
            that spends its share (None: no budget); a stopped stage is kept as it is.
        bptt: tokens per row between two updates (truncated back-propagation's length).
        batch_size: rows at once: the stream is cut into this many parallel parts.
        lr: Adam's learning rate.
        cutoffs: the adaptive softmax's clusters: the first cutoff's most frequent words get
            the full softmax, each further cluster a smaller one (those not below the
            vocabulary's size are left out).
        seed: the softmax's initial weights (the stream is read in order: nothing else is
            drawn).
        path: a result file of this stage (`<cache>/lm-*.pt`) to use instead of training.
    """

    def __init__(self, unlabeled_file: str | None = None, epochs: int = 1,
                 max_minutes: float | None = None, bptt: int = 70, batch_size: int = 64,
                 lr: float = 1e-3, cutoffs: Sequence[int] = (2000, 8000), seed: int = 42,
                 path: str | None = None) -> None:
        for name, value in (("epochs", epochs), ("bptt", bptt), ("batch_size", batch_size)):
            positive_int(f"pretrain.{name}", value)
        if max_minutes is not None and (isinstance(max_minutes, bool) or not isinstance(
                max_minutes, int | float) or not max_minutes > 0):
            raise ValueError(f"pretrain.max_minutes must be a positive number of minutes or "
                             f"null, got {max_minutes!r}")
        if not (isinstance(lr, int | float) and lr > 0):
            raise ValueError(f"pretrain.lr must be positive, got {lr!r}")
        cutoffs = list(cutoffs)
        if any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in cutoffs) or (
                cutoffs != sorted(set(cutoffs))):
            raise ValueError(f"pretrain.cutoffs must be increasing positive integers, got "
                             f"{cutoffs!r}")
        self.unlabeled_file = Path(unlabeled_file).expanduser() if unlabeled_file else None
        if self.unlabeled_file is not None and not self.unlabeled_file.is_file():
            raise FileNotFoundError(f"pretrain.unlabeled_file={unlabeled_file!r} does not exist")
        self.path = Path(path).expanduser() if path else None
        if self.path is not None and not self.path.is_file():
            raise FileNotFoundError(f"pretrain.path={path!r} does not exist")
        self.epochs, self.max_minutes, self.bptt = epochs, max_minutes, bptt
        self.batch_size, self.lr, self.cutoffs, self.seed = batch_size, lr, cutoffs, seed

    def settings(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "max_minutes": self.max_minutes, "bptt": self.bptt,
                "batch_size": self.batch_size, "lr": self.lr, "cutoffs": self.cutoffs,
                "seed": self.seed}

    # ---- the stage ------------------------------------------------------------------------

    def prepare(self, datamodule: TextDataModule, network: nn.Module) -> dict[str, torch.Tensor]:
        """The pre-trained weights for `network` (its parameter names), read from `path`,
        the cache, or trained now from the network's current weights. The stage draws from
        a random stream of its own (seeded by `seed`): the run's, seeded at its start, goes
        on as it was."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return self._prepare(datamodule, network)

    def _prepare(self, datamodule: TextDataModule, network: nn.Module
                 ) -> dict[str, torch.Tensor]:
        forward, backward = directions(network)
        if self.path is not None:
            weights = torch.load(self.path, map_location="cpu", weights_only=True)
            check_shapes(weights, network, f"pretrain.path={str(self.path)!r}")
            return weights
        vocab = forward[0].num_embeddings
        cutoffs = [c for c in self.cutoffs if c < vocab - 1]  # a small vocabulary: fewer
        path = self.cache_path(datamodule, network)

        def build() -> dict[str, torch.Tensor]:
            texts: list[Sequence[str]] = [datamodule.split_texts()["train"]]
            if self.unlabeled_file is not None:
                from gru_lightning.vectors import read_unlabeled

                texts.append(read_unlabeled(self.unlabeled_file))
            stream = token_stream(datamodule.text_encoder.tokenizer, texts)
            # One budget for the stage: a bidirectional network's two models share it.
            deadline = (time.monotonic() + 60 * self.max_minutes / (2 if backward[1] else 1)
                        if self.max_minutes else None)
            weights = {}
            for name, (embedding, rnn) in (("forward", forward), ("backward", backward)):
                if rnn is None:
                    continue
                part = stream if name == "forward" else stream.flip(0)
                model = LanguageModel(embedding, rnn, cutoffs)
                self.train(model, part, path.with_suffix(f".{name}"), deadline)
                if deadline is not None:  # the second model gets what the first left
                    deadline += 60 * self.max_minutes / 2
                weights.update(handed_over(model, name))
            return weights

        return cache.load_or_build(path, build, "Pre-trained language model")

    def cache_path(self, datamodule: TextDataModule, network: nn.Module) -> Path:
        """The result's cache file: named by the data, the unlabeled file, these settings and
        the weights the stage starts from (the run's seed, word vectors)."""
        start = _digest({k: v for k, v in network.state_dict().items()
                         if k.startswith(("embedding.", "rnn."))})
        return datamodule.derived_cache_path("lm", {
            "format": FORMAT_VERSION, "settings": self.settings(), "start": start,
            "unlabeled": file_signature([self.unlabeled_file]) if self.unlabeled_file
            else None})

    def train(self, model: LanguageModel, stream: torch.Tensor, checkpoints: Path,
              deadline: float | None = None) -> LanguageModel:
        """`epochs` passes over `stream`, each ending with a checkpoint in the folder
        `checkpoints` that a stopped stage resumes from; stops early at `deadline`
        (`time.monotonic()`'s)."""
        optimizer = torch.optim.Adam(model.parameters(), lr=self.lr)
        first_epoch = _resume(model, optimizer, checkpoints)
        width = (len(stream) - 1) // self.batch_size
        if width < 2:
            raise ValueError(f"the texts hold {len(stream)} words: too few for "
                             f"pretrain.batch_size={self.batch_size} rows")
        inputs = stream[: width * self.batch_size].view(self.batch_size, width).long()
        targets = stream[1 : width * self.batch_size + 1].view(self.batch_size, width).long()
        model.train()
        for epoch in range(first_epoch, self.epochs):
            if self._epoch(model, optimizer, inputs, targets, epoch, deadline):
                break
            checkpoints.mkdir(parents=True, exist_ok=True)
            cache.save_atomically({"model": model.state_dict(), "optimizer":
                                   optimizer.state_dict(), "epoch": epoch + 1},
                                  checkpoints / "last.pt")
        return model

    def _epoch(self, model: LanguageModel, optimizer: torch.optim.Optimizer,
               inputs: torch.Tensor, targets: torch.Tensor, epoch: int,
               deadline: float | None) -> bool:
        """One pass; True where the budget ran out."""
        state, started, total, steps = None, time.perf_counter(), 0.0, 0
        for position in range(0, inputs.shape[1], self.bptt):
            rows = slice(position, position + self.bptt)
            loss, state = model(inputs[:, rows], targets[:, rows], state)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # exploding recurrent gradients
            optimizer.step()
            total, steps = total + loss.item(), steps + 1
            if steps % LOG_EVERY == 0 or position + self.bptt >= inputs.shape[1]:
                seconds = time.perf_counter() - started
                log.info("pretrain=lm: epoch %d of %d, %s of %s tokens, %.0f tokens/s, "
                         "perplexity %.1f", epoch + 1, self.epochs,
                         f"{min(position + self.bptt, inputs.shape[1]) * inputs.shape[0]:,}",
                         f"{inputs.numel():,}", steps * inputs.shape[0] * self.bptt / seconds,
                         math.exp(min(total / steps, 50)))
            if deadline is not None and time.monotonic() > deadline:
                log.info("pretrain.max_minutes=%s spent: the stage stops here, in epoch %d",
                         self.max_minutes, epoch + 1)
                return True
        return False

    def initialise(self, network: nn.Module, weights: dict[str, torch.Tensor]) -> None:
        """Copy the pre-trained weights into the network's parameters of the same names."""
        check_shapes(weights, network, "the pre-trained weights")
        parameters = dict(network.named_parameters())
        with torch.no_grad():
            for name, value in weights.items():
                parameters[name].copy_(value)


def directions(network: nn.Module) -> tuple[tuple[nn.Embedding, nn.RNNBase],
                                             tuple[nn.Embedding, nn.RNNBase | None]]:
    """Copies of the network's embedding and cell, one unidirectional cell per direction
    (the backward one None for a one-way network), with the network's current weights."""
    embedding, rnn = getattr(network, "embedding", None), getattr(network, "rnn", None)
    if not isinstance(embedding, nn.Embedding) or not isinstance(rnn, nn.RNNBase):
        raise ValueError(f"pretrain=lm needs a network with an `embedding` (nn.Embedding) and "
                         f"an `rnn` (GRU or LSTM); {type(network).__name__} has not both")
    cells = []
    for suffix in ("", "_reverse") if rnn.bidirectional else ("",):
        cell = type(rnn)(rnn.input_size, rnn.hidden_size, num_layers=rnn.num_layers,
                         batch_first=True, dropout=rnn.dropout)
        cell.load_state_dict({name: rnn.state_dict()[name + suffix]
                              for name in cell.state_dict()})
        # A frozen embedding (model.net.freeze_embedding) stays as it is here too.
        copy = nn.Embedding.from_pretrained(embedding.weight.detach().clone(),
                                            freeze=not embedding.weight.requires_grad)
        cells.append((copy, cell))
    return cells[0], cells[1] if len(cells) > 1 else (cells[0][0], None)


def handed_over(model: LanguageModel, direction: str) -> dict[str, torch.Tensor]:
    """The language model's weights under the network's parameter names: the forward one's
    embedding and cell, the backward one's cell as the reverse direction."""
    suffix = "_reverse" if direction == "backward" else ""
    weights = {f"rnn.{name}{suffix}": value.detach().clone()
               for name, value in model.rnn.state_dict().items()}
    if direction == "forward":
        weights["embedding.weight"] = model.embedding.weight.detach().clone()
    return weights


def check_shapes(weights: dict[str, torch.Tensor], network: nn.Module, what: str) -> None:
    """That every weight has a parameter of the network's of its name and shape."""
    parameters = dict(network.named_parameters())
    for name, value in weights.items():
        if name not in parameters or parameters[name].shape != value.shape:
            have = tuple(parameters[name].shape) if name in parameters else "no such weight"
            raise ValueError(f"{what} do not fit this network: {name} is {tuple(value.shape)}, "
                             f"the network's {have} (pre-train with the same model.net "
                             f"settings and vocabulary)")


def token_stream(tokenizer: Tokenizer, texts: Sequence[Sequence[str]]) -> torch.Tensor:
    """The texts' word ids in order as one int32 stream, each text followed by `PAD_ID` (its
    end marker): the vocabulary's words, unknown ones as such, no padding or truncation."""
    tokenizer = Tokenizer.from_str(tokenizer.to_str())
    tokenizer.no_padding()
    tokenizer.no_truncation()
    parts = []
    for source in texts:
        for start in range(0, len(source), 4096):
            for encoding in tokenizer.encode_batch(list(source[start : start + 4096])):
                parts.append(torch.tensor([*encoding.ids, PAD_ID], dtype=torch.int32))
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int32)


def _resume(model: LanguageModel, optimizer: torch.optim.Optimizer, folder: Path) -> int:
    """The epoch to start from: after the last one checkpointed in `folder`, else 0."""
    last = folder / "last.pt"
    if not last.is_file():
        return 0
    saved = torch.load(last, map_location="cpu", weights_only=True)
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    log.info("pretrain=lm: resuming after epoch %d from %s", saved["epoch"], last)
    return saved["epoch"]


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    """What the stage starts from, named by its bytes."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
