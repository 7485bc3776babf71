"""Slow check on the AG News sample a user would try first (`../shared/data/ag_news_sample`,
or $AG_NEWS_CSV): README's command trains a 4-topic model and predicts topic names. Skipped,
with the reason printed, where the file is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gru_lightning.predict import SentimentClassifier
from gru_lightning.train import compose_config, train

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
AG_NEWS = Path(os.environ.get("AG_NEWS_CSV", SHARED / "ag_news_sample" / "ag_news_test.csv"))
pytestmark = pytest.mark.skipif(not AG_NEWS.is_file(),
                                reason=f"no AG News sample at {AG_NEWS} (set AG_NEWS_CSV)")


def test_readme_ag_news_command_trains_four_topics(tmp_path):
    cfg = compose_config([f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path / 'run'}",
                          f"paths.cache_dir={tmp_path / 'cache'}", "experiment=ag_news",
                          f"data.train_file={AG_NEWS}", "trainer.max_epochs=4",
                          "callbacks.progress_bar=null"])
    metrics = train(cfg)
    assert metrics["classes"] == ["World", "Sports", "Business", "Sci/Tech"]
    assert metrics["test/acc"] >= 0.75  # 4 classes: chance is 0.25
    classifier = SentimentClassifier.from_checkpoint(tmp_path / "run" / "checkpoints" /
                                                     "last.ckpt", device="cpu")
    labels = [p.label for p in classifier.predict(["Yankees beat Red Sox in extra innings",
                                                   "Stocks fall as oil prices climb"])]
    assert labels == ["Sports", "Business"]
