"""README's "Extending": a new network, a new data source, a new metric and a second stacked
model, each one class (or one line) and one config, trained, checkpointed and predicted
through the project."""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchmetrics.classification import BinaryPrecision, MulticlassPrecision

from gru_lightning.data.base import TextSource, file_signature, import_datasets
from gru_lightning.networks.base import NetworkSettings
from gru_lightning.predict import Predictor
from gru_lightning.preprocessing import PAD_ID
from gru_lightning.settings import positive_int
from gru_lightning.stack import TextScorer, TextScores
from gru_lightning.train import compose_config, train
from tests.conftest import QUIET, synthetic_reviews

# ---- a new network: one class (its settings) and the module it builds --------------------

@dataclasses.dataclass(frozen=True)
class BagOfEmbeddings(NetworkSettings):
    """The mean of the text's word embeddings -> Linear (fastText's shape)."""

    vocab_size: int = 10000
    """Embedding rows: the data's max_features."""
    embedding_dim: int = 32
    """Embedding width."""

    def __post_init__(self) -> None:
        positive_int("model.net.vocab_size", self.vocab_size)
        positive_int("model.net.embedding_dim", self.embedding_dim)

    def build(self, num_classes: int) -> nn.Module:
        return _Bag(self, num_classes)


class _Bag(nn.Module):
    def __init__(self, settings: BagOfEmbeddings, num_classes: int) -> None:
        super().__init__()
        self.embedding = nn.EmbeddingBag(settings.vocab_size, settings.embedding_dim,
                                         mode="mean", padding_idx=PAD_ID)
        self.num_classes = num_classes
        self.head = nn.Linear(settings.embedding_dim, 1 if num_classes == 2 else num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.embedding(ids.long()))
        return logits.squeeze(-1) if self.num_classes == 2 else logits


# ---- a new source: one class, texts and labels in two files, line by line ----------------

class LinesSource(TextSource):
    """A text per line in one file and its label on the same line of another.

    Args:
        train_texts, train_labels: the training files.
        test_texts, test_labels: the test files.
    """

    def __init__(self, train_texts: str | None = None, train_labels: str | None = None,
                 test_texts: str | None = None, test_labels: str | None = None) -> None:
        self.files = {"train": (train_texts, train_labels), "test": (test_texts, test_labels)}

    def setting(self) -> str:
        return f"data.train_texts={self.files['train'][0]!r}"

    def signature(self) -> dict[str, Any]:
        return {split: file_signature([Path(f) for f in pair])
                for split, pair in self.files.items()}

    def read(self) -> dict[str, Any]:
        datasets = import_datasets()
        return {split: datasets.Dataset.from_dict({
            "text": Path(texts).read_text().split("\n")[:-1],
            "label": Path(labels).read_text().split("\n")[:-1]})
            for split, (texts, labels) in self.files.items()}


def _write_conf(tmp_path: Path) -> Path:
    conf = tmp_path / "conf"
    (conf / "model" / "net").mkdir(parents=True)
    (conf / "model" / "net" / "bag.yaml").write_text(
        "_target_: tests.test_extending.BagOfEmbeddings\n"
        "vocab_size: ${data.max_features}\nembedding_dim: 32\n")
    (conf / "data").mkdir()
    (conf / "data" / "lines.yaml").write_text(
        "defaults:\n  - _common\n  - _self_\n\n"
        "_target_: gru_lightning.data.datamodule.TextDataModule.from_settings\n"
        "source: tests.test_extending.LinesSource\n"
        "train_texts: null\ntrain_labels: null\ntest_texts: null\ntest_labels: null\n")
    return conf


def _write_lines(tmp_path: Path) -> list[str]:
    overrides = []
    for split, rows in (("train", synthetic_reviews(600, 0)), ("test", synthetic_reviews(200, 1))):
        (tmp_path / f"{split}_text.txt").write_text("".join(t + "\n" for t, _ in rows))
        (tmp_path / f"{split}_labels.txt").write_text(
            "".join(("positive" if y else "negative") + "\n" for _, y in rows))
        overrides += [f"data.{split}_texts={tmp_path / f'{split}_text.txt'}",
                      f"data.{split}_labels={tmp_path / f'{split}_labels.txt'}"]
    return overrides


def test_a_new_network_and_a_new_source_train_and_predict(tmp_path):
    conf = _write_conf(tmp_path)
    cfg = compose_config([f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path / 'run'}",
                          f"paths.cache_dir={tmp_path / 'cache'}",
                          f"hydra.searchpath=[file://{conf}]", "model/net=bag", "data=lines",
                          *_write_lines(tmp_path), "data.max_features=100", "data.val_size=100",
                          "trainer.max_epochs=3", "model.optimizer.lr=0.05", *QUIET])
    metrics = train(cfg)
    assert metrics["classes"] == ["negative", "positive"]
    assert metrics["params"] == 100 * 32 + 32 + 1
    assert metrics["test/acc"] >= 0.95
    predictor = Predictor.from_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert isinstance(predictor.network, _Bag)
    labels = [p.label for p in predictor.predict(["great superb wonderful loved",
                                                  "awful boring dull worst"])]
    assert labels == ["positive", "negative"]


def test_a_new_metric_is_one_line(compose_train, tmp_path, monkeypatch):
    from gru_lightning import metrics
    from gru_lightning.report import collect

    # The line: a name, the binary metric, the multi-class one.
    monkeypatch.setitem(metrics.METRICS, "precision",
                        (BinaryPrecision, lambda k: MulticlassPrecision(k, average="macro")))
    result = train(compose_train())
    assert 0.9 <= result["test/precision"] <= 1 and "val/precision" in result
    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert on_disk["test/precision"] == result["test/precision"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    assert {"train/precision", "hp/test_precision"} <= set(events.Tags()["scalars"])
    # A sweep's report picks it up as a column.
    job = tmp_path / "sweep" / "0_x=1"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- x=1\n")
    (job / "metrics.json").write_text(json.dumps(on_disk))
    assert collect(tmp_path / "sweep")[0]["test_precision"] == result["test/precision"]


# ---- a second stacked model: one class (a TextScorer) and one config in conf/ngram/ -------

class WordRatioScorer(TextScorer):
    """Each word's smoothed log-count ratio between the classes, summed over the text's
    words: a unigram Naive Bayes scorer (two classes)."""

    def __init__(self, smoothing: float = 1.0) -> None:
        self.smoothing = smoothing
        self.ratios: dict[str, float] = {}

    def settings(self) -> dict[str, Any]:
        return {"smoothing": self.smoothing}

    def fit(self, texts, labels, num_classes):
        counts = [Counter(), Counter()]
        for text, label in zip(texts, labels.tolist(), strict=True):
            counts[int(label)].update(text.split())
        totals = [sum(c.values()) for c in counts]
        self.ratios = {word: math.log((counts[1][word] + self.smoothing) / totals[1])
                       - math.log((counts[0][word] + self.smoothing) / totals[0])
                       for word in counts[0].keys() | counts[1].keys()}
        return self

    def scores(self, texts) -> TextScores:
        words = [text.split() for text in texts]
        logits = torch.tensor([[sum(self.ratios.get(w, 0.0) for w in ws)] for ws in words])
        return TextScores(logits, torch.log1p(torch.tensor([float(len(ws)) for ws in words])))

    def to_dict(self) -> dict[str, Any]:
        return {"smoothing": self.smoothing, "ratios": self.ratios}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> WordRatioScorer:
        model = cls(state["smoothing"])
        model.ratios = dict(state["ratios"])
        return model


def test_a_second_stacked_model_is_one_class_and_one_config(compose_train, tmp_path):
    conf = tmp_path / "conf"
    (conf / "ngram").mkdir(parents=True)
    (conf / "ngram" / "word_ratios.yaml").write_text(
        "_target_: gru_lightning.stack.Stack\nfolds: 2\nstacking_l2: 0.001\n"
        "validation_folds: 0\nmodel:\n  _target_: tests.test_extending.WordRatioScorer\n"
        "  smoothing: 1.0\n")
    cfg = compose_train(f"hydra.searchpath=[file://{conf}]", "ngram=word_ratios",
                        "trainer.max_epochs=2")
    metrics = train(cfg)
    assert metrics["ngram/test_acc"] >= 0.95 and metrics["test/acc"] >= 0.95
    assert "test/net_acc" in metrics  # the network alone, beside the stack's figures
    predictor = Predictor.from_checkpoint(Path(cfg.paths.output_dir) / "checkpoints"
                                          / "last.ckpt")
    scorer = predictor.stack.model
    assert isinstance(scorer, WordRatioScorer) and scorer.ratios["superb"] > 0
    assert predictor.stack.folds == 2  # its training logits came out of fold, by the default
    labels = [p.label for p in predictor.predict(["great superb wonderful loved",
                                                  "awful boring dull worst"])]
    assert labels == ["pos", "neg"]
