"""experiment=gru_nbsvm_vectors (IMDB from its own unlabeled reviews): the word-vector stage
hands its vectors to the GRU, the n-gram model is stacked on it, and the checkpoint predicts;
without the unlabeled file it stops with one message."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hydra.errors import InstantiationException

from gru_lightning.predict import Predictor
from gru_lightning.train import train
from tests.conftest import synthetic_reviews

SMALL = ["vectors.epochs=20", "vectors.workers=1", "vectors.min_count=1",
         "ngram.model.buckets_log2=14", "trainer.max_epochs=2", "model.net.embedding_dim=16",
         "data.max_features=100", "data.maxlen=24", "data.batch_size=32"]


def test_the_experiment_trains_on_unlabeled_reviews_and_its_checkpoint_predicts(
        compose_train, tmp_path):
    unlabeled = tmp_path / "unsupervised.parquet"
    pq.write_table(pa.table({"text": [t for t, _ in synthetic_reviews(300, seed=9)],
                             "label": [-1] * 300}), unlabeled)
    cfg = compose_train("experiment=gru_nbsvm_vectors", f"vectors.unlabeled_file={unlabeled}",
                        *SMALL)
    assert cfg.model.lr_schedule == "cosine" and cfg.model.net.bidirectional
    metrics = train(cfg)
    assert metrics["test/acc"] >= 0.9 and metrics["ngram/test_acc"] >= 0.9
    assert 0.5 <= metrics["test/net_acc"] <= 1.0

    # The trained vectors are what the network's embedding started from: after fine-tuning
    # each word's row still points the way of its own vector more than of other words'.
    table = torch.load(next(Path(cfg.paths.cache_dir).glob("vectors-*.pt")))["table"]
    checkpoint = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    rows = torch.arange(2, table.shape[0])
    vectors = table[rows] - table[rows].mean(0)  # less the direction all words share
    trained = predictor.network.embedding.weight.detach()[rows] - table[rows].mean(0)
    own = torch.nn.functional.cosine_similarity(trained, vectors).mean()
    others = torch.nn.functional.cosine_similarity(trained, vectors.roll(1, 0)).mean()
    assert own > 0.5 > others
    assert predictor.stack is not None
    labels = [p.label for p in predictor.predict(["great superb wonderful film",
                                                  "awful boring terrible film"])]
    assert labels == ["pos", "neg"]


def test_without_the_unlabeled_file_the_experiment_says_which_setting_is_missing(
        compose_train):
    cfg = compose_train("experiment=gru_nbsvm_vectors", *SMALL)  # the copy has none
    with pytest.raises(InstantiationException, match=r"vectors\.unlabeled_file='.*"
                                                r"unsupervised\.parquet' does not exist"):
        train(cfg)


def test_from_the_hub_the_experiment_says_to_name_the_unlabeled_reviews(compose_train):
    cfg = compose_train("experiment=gru_nbsvm_vectors", "data.local_path=null", *SMALL)
    with pytest.raises(InstantiationException, match=r"made from a setting that is null, as "
                                                     r"data\.local_path"):
        train(cfg)
