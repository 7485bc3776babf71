"""Slow checks on the real IMDB copy (`../shared/data/imdb`, or $IMDB_PATH); skipped,
with the reason printed, where it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gru_lightning.train import train
from tests.conftest import REAL_IMDB

IMDB = Path(os.environ.get("IMDB_PATH", REAL_IMDB))
pytestmark = [
    pytest.mark.imdb,
    pytest.mark.skipif(not (IMDB / "train.parquet").is_file(),
                       reason=f"no IMDB parquet copy at {IMDB} (set IMDB_PATH)"),
]


def test_one_epoch_on_imdb_reaches_80_percent(compose_train):
    cfg = compose_train(
        f"data.local_path={IMDB}",
        # The notebook's data and model; one epoch.
        "data.max_features=10000", "data.maxlen=100", "data.batch_size=64",
        "model.embedding_dim=128", "model.hidden_size=64", "trainer.max_epochs=1",
    )
    metrics = train(cfg)
    assert metrics["test/acc"] >= 0.80
