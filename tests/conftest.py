"""What the tests share: small learnable data sets they write themselves (IMDB look-alikes in
each local format), the real Hydra config composed around them, one small trained run for
every test that needs "a model that learned", the real data switch and the kernels.

`REQUIRE_DATA=1` (set by .ci/run) turns a missing real data set into a failure instead of a
skip; `require_kernel` skips, with the reason, where a compiled kernel cannot be built, and
`REQUIRE_KERNELS=1` (also set by .ci/run) makes that a failure.
"""

from __future__ import annotations

import os
import random
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from omegaconf import DictConfig

from gru_lightning.train import compose_config

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

POSITIVE = ["great", "wonderful", "superb", "loved", "brilliant", "moving"]
NEGATIVE = ["awful", "boring", "terrible", "hated", "dull", "worst"]
FILLER = [f"word{i}" for i in range(60)]


def synthetic_reviews(n: int, seed: int) -> list[tuple[str, int]]:
    """Reviews whose sentiment is learnable: a few sentiment words among filler words."""
    rng = random.Random(seed)
    reviews = []
    for i in range(n):
        label = i % 2
        cue = POSITIVE if label else NEGATIVE
        words = rng.choices(FILLER, k=rng.randint(8, 30)) + rng.choices(cue, k=3)
        rng.shuffle(words)
        reviews.append((" ".join(words).capitalize() + ".<br /><br />The end!", label))
    return reviews


def cache_entries(cache_dir: Path) -> list[Path]:
    """The tokenized data's entries (folders, store.py) in a cache directory, finished ones:
    what a test that nothing was cached checks is empty."""
    if not cache_dir.is_dir():
        return []
    return sorted(p for p in cache_dir.iterdir() if p.is_dir() and p.suffix != ".partial")


def write_parquet_copy(root: Path, splits: dict[str, list[tuple[str, int]]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        table = pa.table({"text": [t for t, _ in rows], "label": [y for _, y in rows]})
        pq.write_table(table, root / f"{split}.parquet")
    return root


def write_acl_folder(root: Path, splits: dict[str, list[tuple[str, int]]]) -> Path:
    for split, rows in splits.items():
        for i, (text, label) in enumerate(rows):
            folder = root / "aclImdb" / split / ("pos" if label else "neg")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i}_{8 if label else 2}.txt").write_text(text, encoding="utf-8")
    return root / "aclImdb"


def real_data(path: Path, what: str) -> Path:
    """`path` where it exists; else a skip that says so, or a failure under REQUIRE_DATA=1."""
    if path.exists():
        return path
    message = f"no {what} at {path}"
    if os.environ.get("REQUIRE_DATA") == "1":
        pytest.fail(f"{message}, and REQUIRE_DATA=1 says the real data must be there")
    pytest.skip(f"{message} (REQUIRE_DATA=1 makes this a failure)")


@pytest.fixture(scope="session")
def reviews() -> dict[str, list[tuple[str, int]]]:
    return {"train": synthetic_reviews(600, seed=0), "test": synthetic_reviews(200, seed=1)}


@pytest.fixture(scope="session")
def parquet_copy(tmp_path_factory: pytest.TempPathFactory, reviews) -> Path:
    return write_parquet_copy(tmp_path_factory.mktemp("imdb_parquet"), reviews)


@pytest.fixture(scope="session")
def acl_copy(tmp_path_factory: pytest.TempPathFactory, reviews) -> Path:
    return write_acl_folder(tmp_path_factory.mktemp("imdb_acl"), reviews)


@pytest.fixture(scope="session")
def acl_tarball(tmp_path_factory: pytest.TempPathFactory, acl_copy: Path) -> Path:
    tarball = tmp_path_factory.mktemp("imdb_tar") / "aclImdb_v1.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(acl_copy, arcname="aclImdb")
    return tarball


# A small, fast model on a small local copy, as the tests run it; at lr 0.01 it learns the
# synthetic reviews (test accuracy >= 0.98) in 2 epochs.
SMALL = ["data.max_features=100", "data.maxlen=24", "data.val_size=100", "data.batch_size=32",
         "model.net.embedding_dim=16", "model.net.hidden_size=16", "model.optimizer.lr=0.01"]
QUIET = ["+trainer.enable_progress_bar=false", "callbacks.progress_bar=null",
         "callbacks.model_summary=null"]


def compose_train_config(tmp_path: Path, local_path: Path | None, *overrides: str) -> DictConfig:
    """`conf/train.yaml` composed as `python train.py <overrides>` would, writing into
    tmp_path, on a small local IMDB copy (or, local_path=None, the data the overrides name)
    and a small, fast model."""
    return compose_config([
        f"paths.root_dir={tmp_path}",
        f"paths.output_dir={tmp_path / 'run'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        *([f"data.local_path={local_path}"] if local_path is not None else []),
        *SMALL,
        "trainer.max_epochs=1",
        "trainer.log_every_n_steps=5",
        "trainer.accelerator=cpu",
        *QUIET,
        *overrides,
    ])


@pytest.fixture
def compose_train(tmp_path: Path, parquet_copy: Path) -> Callable[..., DictConfig]:
    def _compose(*overrides: str) -> DictConfig:
        return compose_train_config(tmp_path, parquet_copy, *overrides)

    return _compose


@dataclass
class TrainedRun:
    """The shared run: its config, metrics, folder and checkpoints."""

    cfg: DictConfig
    metrics: dict[str, Any]
    run: Path

    @property
    def last(self) -> Path:
        return self.run / "checkpoints" / "last.ckpt"

    @property
    def best(self) -> Path:
        return next(p for p in (self.run / "checkpoints").glob("epoch*.ckpt"))


TRAINED_EPOCHS = 3


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, parquet_copy: Path) -> TrainedRun:
    """One small model trained once per pytest run on the parquet copy (600 training, 200 test
    reviews): the checkpoint every "a model that learned" test reads. Read-only."""
    from gru_lightning.train import train

    tmp = tmp_path_factory.mktemp("trained")
    cfg = compose_train_config(tmp, parquet_copy, f"trainer.max_epochs={TRAINED_EPOCHS}",
                               "trainer.log_every_n_steps=2")
    return TrainedRun(cfg, train(cfg), tmp / "run")


def require_kernel(load: Callable[[], Any]) -> Any:
    """The compiled kernel `load` returns, or a skip with the reason it cannot be built (a
    failure under REQUIRE_KERNELS=1)."""
    from gru_lightning.runtime.kernels import KernelUnavailable

    try:
        kernel = load()
        reason = None if kernel is not None else "no C++ compiler or ninja"
    except KernelUnavailable as error:
        kernel, reason = None, str(error)
    if reason is not None:
        if os.environ.get("REQUIRE_KERNELS") == "1":
            pytest.fail(f"the kernel cannot be built here ({reason}), and REQUIRE_KERNELS=1 "
                        "says it must")
        pytest.skip(f"the kernel cannot be built here: {reason} (REQUIRE_KERNELS=1 makes "
                    "this a failure)")
    return kernel
